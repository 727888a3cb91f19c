"""Where the cluster's shared directory is, and what lives in it: read by every step that names it.

netenv names the shared cache in the env file, storage makes it, reset
takes it away again when empty. Here so that each of them can read the
same paths without importing the others (nfs needs netenv's NIC facts).
"""

from __future__ import annotations

import shlex
from typing import Any, List, Mapping, Optional, Tuple

from ...core import programs
from ...core.cluster import setting, switch
from ...core.errors import HostError, InputError
from ...core.inventory import Inventory
from ...core.remote import Remote, ensure_dir, ensure_packages, last_line
from ...core.declared import ABSOLUTE_PATH, Kind, Setting, declare

DEFAULT_EXPORT = "/mnt/shared"
#: Hugging Face's cache (models, datasets) under the mount: one download for the whole cluster.
DEFAULT_CACHE = ".cache/huggingface"


#: The system's own trees (and every /lib*): a share may be none of them, nor inside one. The head's export
#: is made and given to the SSH user, a worker mounts over its mount point: `nfs_export: /etc` handed /etc
#: to that user and exported it, `--mount /dev` would hide the devices.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run", "/var", "/root")
#: Directories that hold other people's directories: a share may sit below them, never be one of them.
PARENTS = ("/home", "/mnt", "/media", "/srv", "/opt", "/tmp")


def check_path(path: str, where: str = "--path") -> str:
    """A share's path on the nodes: absolute, normalised, plain characters, and not one of the system's directories."""
    if not path.startswith("/") or any(c.isspace() or c in "\"'\\$`;&|()<>*?:%" for c in path):
        raise InputError(f"invalid NFS path {path!r}: an absolute path without spaces or shell characters", path=where)
    trimmed = path.rstrip("/") or "/"
    if trimmed != "/" and any(part in ("", ".", "..") for part in trimmed.split("/")[1:]):
        raise InputError(f"invalid NFS path {path!r}: write it without '.', '..' or '//'", path=where)
    why = system_directory(trimmed)
    if why:
        raise InputError(f"refusing NFS path {trimmed}: {why}; give the share a directory of its own, such as "
                         f"{DEFAULT_EXPORT}", path=where)
    return trimmed


def system_directory(path: str) -> Optional[str]:
    """Why a normalised absolute path is no place for a share, or None when it is one."""
    if path == "/":
        return "the whole file system"
    parts = path.split("/")[1:]
    top = "/" + parts[0]
    if top in SYSTEM_TREES or parts[0].startswith("lib"):
        return "a system directory" if len(parts) == 1 else f"inside the system directory {top}"
    if len(parts) == 1 and top in PARENTS:
        return f"{top} holds other directories"
    if top == "/home" and len(parts) == 2:
        return "a home directory"
    return None


def share_paths(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> Tuple[str, str]:
    """(the head's export, the workers' mount): CLI `--path`/`--mount` > vars `nfs_export`/`nfs_mount` > /mnt/shared."""
    export = check_path(setting(config, inv, "nfs_export", cli.get("path"), DEFAULT_EXPORT),
                        "--path" if cli.get("path") is not None else "nfs_export")
    return export, check_path(setting(config, inv, "nfs_mount", cli.get("mount"), export),
                              "--mount" if cli.get("mount") is not None else "nfs_mount")


def read_cache(config: Any, inv: Inventory, mount: str) -> Optional[str]:
    """Inventory var `shared_cache`: a directory inside the mount (default <mount>/.cache/huggingface), `none`: off."""
    value = setting(config, inv, "shared_cache", None, True)
    if value is True:
        return f"{mount}/{DEFAULT_CACHE}"
    if not switch(value):
        return None
    path = str(value).rstrip("/")
    if not path.startswith(mount + "/") or "/../" in path + "/" or "/./" in path + "/":
        raise InputError(f"shared_cache {path} is not inside the shared mount {mount}", path="shared_cache")
    try:
        return check_path(path)
    except InputError:
        raise InputError(f"invalid shared_cache {value!r}: an absolute path without spaces or shell characters",
                         path="shared_cache") from None


#: Who owns the share, and who the workers act as in it, when the SSH login is root: an account of
#: its own on the head, with no shell, home or password. Workers never act as root in the share.
SHARE_ACCOUNT = "gpufab-share"

#: Makes the account where it is missing (`useradd --system`); prints `uid gid` of it.
ACCOUNT_SCRIPT = programs.text("share-account.sh")


def share_owner(login: str) -> str:
    """The account the share belongs to, and that every worker acts as in it: the SSH user, never root."""
    return SHARE_ACCOUNT if login == "root" else login


def share_ids(remote: Remote) -> "tuple[str, int, int, bool]":
    """(owner, uid, gid, created) of the share's owner on the head, made first when it is gpufab's own account."""
    owner = share_owner(remote.user)
    script = ACCOUNT_SCRIPT if owner == SHARE_ACCOUNT else 'echo "ids $(id -u "$1") $(id -g "$1")"'
    out = remote.script(script, owner, "plan" if remote.dry_run else "make", sudo=owner == SHARE_ACCOUNT, warn=True,
                        timeout=60)
    ids = next((line.split()[1:] for line in out.stdout.splitlines() if line.startswith("ids ")), [])
    if remote.dry_run and not ids:
        return owner, 0, 0, True
    if out.exited != 0 or len(ids) != 2 or not all(x.isdigit() for x in ids):
        raise HostError(f"cannot make or read the share's owner {owner}: {last_line(out.stderr) or 'no ids'}")
    return owner, int(ids[0]), int(ids[1]), "created" in out.stdout.split()


def make_export(remote: Remote, path: str, done: List[str]) -> Tuple[str, int, int]:
    """(owner, uid, gid): the export directory on the head, the share owner's, whatever the backend. What it
    changed goes into `done` as it goes, so a failure half-way still names what was made."""
    owner, uid, gid, created = share_ids(remote)
    if created:
        done.append(f"created the account {owner} (the share's owner: workers never act as root in it)")
    done += ensure_dir(remote, path, owner)
    done += grant_owner(remote, path, owner)
    return owner, uid, gid


#: Prints the share directory's ACL entries for its owner (`user:gpufab-share:rwx`, `default:user:...`).
ACL_FACTS = "getfacl -cp -- \"$1\" 2>/dev/null | grep -E '^(default:)?user:'\"$2\"':' || true"


def owner_acl(path: str, owner: str) -> str:
    """setfacl's argument: the owner may do everything in `path` and in whatever is made in it, by anyone."""
    return f"u:{owner}:rwx,d:u:{owner}:rwx,d:u::rwx,d:g::rx,d:o::rx,d:m::rwx"


def grant_owner(remote: Remote, path: str, owner: str) -> List[str]:
    """With a root login, the head's root writes the share directly (its own steps, `exec`), so what it makes
    is root's, and the workers, who act as the share's owner, could not write in it. A default ACL gives the
    owner every new file and directory, as a group-writable setgid directory would if umasks allowed it."""
    if owner != SHARE_ACCOUNT:
        return revoke_share_account(remote, path)  # the SSH user owns the share and writes it, on the head too
    seen = remote.script(ACL_FACTS, path, owner, sudo=True, warn=True, timeout=30).stdout.split()
    if f"user:{owner}:rwx" in seen and f"default:user:{owner}:rwx" in seen:
        return []
    done = ensure_packages(remote, ("acl",))
    result = remote.change(f"setfacl -m {owner_acl(path, owner)} -- {shlex.quote(path)}", warn=True, timeout=60)
    if result.exited != 0:
        raise HostError(f"cannot give {owner} the share's new files (setfacl on {path}: {last_line(result.stderr)}); "
                        "the filesystem needs POSIX ACLs", changes=done)
    return done + [f"{path}: {owner} may write whatever the head's root makes in it (default ACL)"]


def revoke_share_account(remote: Remote, path: str) -> List[str]:
    """A share once served to a root login keeps gpufab-share's ACL after the login changes: an account nothing
    logs in as any more would still write every new file. Its entries go, and the default ACL gpufab made for
    it with them when nothing else is named there, so new files follow the umask again."""
    seen = remote.script(ACL_FACTS, path, SHARE_ACCOUNT, sudo=True, warn=True, timeout=30).stdout.split()
    if not seen:
        return []
    quoted = shlex.quote(path)
    result = remote.change(f"setfacl -x u:{SHARE_ACCOUNT},d:u:{SHARE_ACCOUNT} -- {quoted} && "
                           f"{{ getfacl -cp -- {quoted} | grep -qE '^default:(user|group):[^:]+:' || "
                           f"setfacl -k -- {quoted}; }}", warn=True, timeout=60)
    if result.exited != 0:
        raise HostError(f"cannot take {SHARE_ACCOUNT}'s ACL off {path} ({last_line(result.stderr)}); "
                        f"fix: setfacl -x u:{SHARE_ACCOUNT},d:u:{SHARE_ACCOUNT} {path}")
    return [f"{path}: {SHARE_ACCOUNT} no longer writes it (its ACL removed; the login owns the share)"]


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


DECLARED = declare(
    "ops.shared.share",
    Setting("nfs_export", "the head's shared directory", DEFAULT_EXPORT,
            kind=ABSOLUTE_PATH),
    Setting("nfs_mount", "where every node mounts it", "nfs_export",
            kind=ABSOLUTE_PATH),
    Setting("shared_cache", "HF_HOME in the share (none: every node keeps its own)", "<mount>/" + DEFAULT_CACHE,
            kind=Kind("directory or none", {"anyOf": [{"type": "boolean"}, ABSOLUTE_PATH.schema, {"enum": ["none", "false", "off", "no"]}]})),
)
