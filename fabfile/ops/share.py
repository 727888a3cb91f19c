"""Where the cluster's shared directory is, and what lives in it: read by every step that names it.

netenv names the shared cache in the env file, storage makes it, reset
takes it away again when empty. Here so that each of them can read the
same paths without importing the others (nfs needs netenv's NIC facts).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from ..core.cluster import setting, switch
from ..core.errors import InputError
from ..core.inventory import Inventory

DEFAULT_EXPORT = "/mnt/shared"
#: Hugging Face's cache (models, datasets) under the mount: one download for the whole cluster.
DEFAULT_CACHE = ".cache/huggingface"


def check_path(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() or c in "\"'\\$`;&|()<>*?:%" for c in path) or path.rstrip("/") == "":
        raise InputError(f"invalid NFS path {path!r}: an absolute path without spaces or shell characters", path="--path")
    return path.rstrip("/")


def share_paths(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> Tuple[str, str]:
    """(the head's export, the workers' mount): CLI `--path`/`--mount` > vars `nfs_export`/`nfs_mount` > /mnt/shared."""
    export = check_path(setting(config, inv, "nfs_export", cli.get("path"), DEFAULT_EXPORT))
    return export, check_path(setting(config, inv, "nfs_mount", cli.get("mount"), export))


def read_cache(config: Any, inv: Inventory, mount: str) -> Optional[str]:
    """Inventory var `shared_cache`: a directory inside the mount (default <mount>/.cache/huggingface), `none`: off."""
    value = setting(config, inv, "shared_cache", None, True)
    if value is True:
        return f"{mount}/{DEFAULT_CACHE}"
    if not switch(value):
        return None
    try:
        path = check_path(str(value))
    except InputError:
        raise InputError(f"invalid shared_cache {value!r}: an absolute path without spaces or shell characters",
                         path="shared_cache") from None
    if not path.startswith(mount + "/") or "/../" in path + "/" or "/./" in path + "/":
        raise InputError(f"shared_cache {path} is not inside the shared mount {mount}", path="shared_cache")
    return path


def cache_on_head(export: str, mount: str, cache: str) -> str:
    """The cache directory as the head has it (under the export), for its path on the mount."""
    return export + cache[len(mount):]


def dirs_below(path: str, top: str) -> List[str]:
    """`path` and its parents below `top`, deepest first (`/s/.cache/hf`, `/s/.cache` for top `/s`)."""
    out = []
    while path.startswith(top + "/"):
        out.append(path)
        path = path.rsplit("/", 1)[0]
    return out
