"""Ray's token authentication: whether the cluster wants it and whether the pinned Ray has it.

Both netenv (RAY_AUTH_MODE in the env file every login sees) and the ray step (its token, its units)
decide by these, so they cannot disagree."""

from __future__ import annotations

import re
from typing import Any

from ...core.cluster import setting, switch
from ...core.inventory import Inventory
from .nodeenv import skipped_by_inventory


#: The Ray gpufab pins unless var `ray_version` says otherwise (ops/ray.py's default, named here).
RAY_DEFAULT_VERSION = "2.60.0"


def ray_auth_on(config: Any, inv: Inventory) -> bool:
    """Inventory var `ray_auth` (default on) where the cluster keeps Ray: its clients need RAY_AUTH_MODE=token.

    Read here for the env file (every login, launch and step sees it) and by the ray step itself,
    which also checks that the pinned Ray has token authentication."""
    return switch(setting(config, inv, "ray_auth", None, True)) and "ray" not in skipped_by_inventory(inv)


def ray_has_auth(version: str) -> bool:
    """Ray's token authentication (RAY_AUTH_MODE=token) exists in this version: 2.52 and later."""
    parts = re.findall(r"\d+", version)[:2]
    return len(parts) == 2 and (int(parts[0]), int(parts[1])) >= (2, 52)


def ray_auth_supported(config: Any, inv: Inventory) -> bool:
    """The pinned Ray (var `ray_version`) has token authentication."""
    return ray_has_auth(str(setting(config, inv, "ray_version", None, RAY_DEFAULT_VERSION)))
