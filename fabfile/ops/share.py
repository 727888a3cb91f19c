"""Where the cluster's shared directory is, and what lives in it: read by every step that names it.

netenv names the shared cache in the env file, storage makes it, reset
takes it away again when empty. Here so that each of them can read the
same paths without importing the others (nfs needs netenv's NIC facts).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from ..core.cluster import setting, switch
from ..core.errors import HostError, InputError
from ..core.inventory import Inventory
from ..core.remote import Remote, last_line

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


#: Who owns the share, and who the workers act as in it, when the SSH login is root: an account of
#: its own on the head, with no shell, home or password. Workers never act as root in the share.
SHARE_ACCOUNT = "gpufab-share"

#: Makes the account where it is missing (`useradd --system`); prints `uid gid` of it.
ACCOUNT_SCRIPT = r"""
a=$1
if ! id -u "$a" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$a" || exit 1
  echo created
fi
echo "ids $(id -u "$a") $(id -g "$a")"
"""


def share_owner(login: str) -> str:
    """The account the share belongs to, and that every worker acts as in it: the SSH user, never root."""
    return SHARE_ACCOUNT if login == "root" else login


def share_ids(remote: Remote) -> "tuple[str, int, int, bool]":
    """(owner, uid, gid, created) of the share's owner on the head, made first when it is gpufab's own account."""
    owner = share_owner(remote.user)
    script = ACCOUNT_SCRIPT if owner == SHARE_ACCOUNT else 'echo "ids $(id -u "$1") $(id -g "$1")"'
    out = remote.script(script, owner, sudo=owner == SHARE_ACCOUNT, warn=True, timeout=60)
    ids = next((line.split()[1:] for line in out.stdout.splitlines() if line.startswith("ids ")), [])
    if remote.dry_run and not ids:
        return owner, 0, 0, True
    if out.exited != 0 or len(ids) != 2 or not all(x.isdigit() for x in ids):
        raise HostError(f"cannot make or read the share's owner {owner}: {last_line(out.stderr) or 'no ids'}")
    return owner, int(ids[0]), int(ids[1]), "created" in out.stdout.split()


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
