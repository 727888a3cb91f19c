"""The node's env file (NCCL's NIC, MASTER_PORT, HF_HOME...): netenv writes it; Ray's units, the all-reduce,
the fleet's facts and launches read it. Also which steps the inventory turns off, which decides what it says."""

from __future__ import annotations

import shlex
from typing import Any, Dict

from ...core.chain import SKIP_VAR, listed
from ...core.cluster import setting, switch
from ...core.inventory import Inventory


ENV_FILE = "/etc/gpufab/netenv.env"


def env_lines(text: str) -> Dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blanks skipped), in order."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            value = value.strip()
            if value.startswith("'"):  # written through the template's `sh` filter
                try:
                    value = "".join(shlex.split(value))
                except ValueError:
                    pass
            values[key.strip()] = value
    return values


def skipped_by_inventory(inv: Inventory) -> set:
    """The steps the inventory turns off for the cluster (`bootstrap_skip`), by any of their names."""
    return set(listed(inv.vars.get(SKIP_VAR)))


#: What mesh.setup writes (ops/mesh.py), named in the env file (netenv writes it).
MESH_HOSTFILE = "/etc/gpufab/hostfile"


MESH_HOSTS = "/etc/gpufab/hosts"


def mesh_on(config: Any, inv: Inventory) -> bool:
    """Inventory var `mesh` (default on): read for the env file (netenv) and by the mesh step itself."""
    return switch(setting(config, inv, "mesh", None, True))
