"""NFS from the head to the workers: export line, fstab line, kernel support.

Both lines are computed here and written whole (the export as its own file
in /etc/exports.d, the mount as a marked block in /etc/fstab), so a re-run
never adds a second one. The export names the private subnet, never `*`.
Containers and minimal VMs often lack NFS in their kernel; that is found
from /proc/filesystems and reported, not discovered by a hung mount.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, List, Optional, Set, Tuple

from ..core.errors import InputError
from ..core.files import ManagedFile, outside_managed_block, render

DEFAULT_EXPORT = "/mnt/shared"
DEFAULT_EXPORT_OPTIONS = "rw,sync,no_subtree_check,no_root_squash"
DEFAULT_MOUNT_OPTIONS = "rw,hard,_netdev,nofail,x-systemd.mount-timeout=30"
EXPORTS_FILE = "/etc/exports.d/gpufab.exports"
FSTAB = "/etc/fstab"
NFS_PORT = 2049
FSTAB_BEGIN = "# BEGIN gpufab managed block (nfs.client)"
FSTAB_END = "# END gpufab managed block"

#: /proc/filesystems, then which NFS modules exist for the running kernel.
KERNEL_SCRIPT = r"""
cat /proc/filesystems
for m in nfs nfsd; do
  if find "/lib/modules/$(uname -r)" -name "$m.ko*" 2>/dev/null | grep -q .; then echo "module $m"; fi
done
echo "kernel $(uname -r)"
"""


def check_path(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() or c in "\"'\\$`;&|()<>*?" for c in path) or path.rstrip("/") == "":
        raise InputError(f"invalid NFS path {path!r}: an absolute path without spaces or shell characters", path="--path")
    return path.rstrip("/")


def private_subnet(cidr: str) -> str:
    """`198.19.0.11/24` -> `198.19.0.0/24`: the network a head address sits in."""
    return str(ipaddress.ip_interface(cidr).network)


def exports_file(path: str, subnet: str, options: str = DEFAULT_EXPORT_OPTIONS) -> ManagedFile:
    net = ipaddress.ip_network(subnet, strict=False)
    if net.prefixlen == 0:
        raise InputError(f"refusing to export {path} to {net}: that is every address", path="private_subnet")
    return ManagedFile(EXPORTS_FILE, render("nfs/gpufab.exports.j2", path=path, subnet=str(net), options=options))


def fstab_block(server: str, export: str, mount: str, options: str = DEFAULT_MOUNT_OPTIONS) -> str:
    return render("nfs/fstab.j2", server=server, export=export, mount=mount, options=options)


def fstab_conflict(unmanaged_lines: Iterable[str], mount: str) -> Optional[str]:
    """An fstab line gpufab does not manage that mounts on `mount` already."""
    for line in unmanaged_lines:
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 and fields[1].rstrip("/") == mount:
            return line.strip()
    return None


def parse_kernel(text: str) -> Tuple[Set[str], Set[str], str]:
    """(filesystems the kernel has now, NFS modules it could load, release)."""
    filesystems: Set[str] = set()
    modules: Set[str] = set()
    release = "?"
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "module" and len(fields) == 2:
            modules.add(fields[1])
        elif fields[0] == "kernel" and len(fields) == 2:
            release = fields[1]
        else:
            filesystems.add(fields[-1])
    return filesystems, modules, release


def kernel_lacks(text: str, fs: str) -> Optional[str]:
    """Why this kernel cannot do `fs` (nfs or nfsd), or None when it can."""
    filesystems, modules, release = parse_kernel(text)
    if fs in filesystems or fs in modules:
        return None
    role = "server (nfsd)" if fs == "nfsd" else "client (nfs)"
    return f"this kernel ({release}) has no NFS {role}: {fs} is not in /proc/filesystems and no module can be loaded"


def parse_findmnt(text: str) -> Optional[Tuple[str, str]]:
    """`findmnt -rn -o SOURCE,FSTYPE MOUNT` -> (source, fstype), None if not mounted."""
    fields = text.split()
    return (fields[0], fields[1]) if len(fields) >= 2 else None


def mounted_from(found: Optional[Tuple[str, str]], server: str, export: str) -> bool:
    return found is not None and found[1].startswith("nfs") and found[0] == f"{server}:{export}"


def fstab_lines_outside(text: str) -> List[str]:
    return outside_managed_block(text, FSTAB_BEGIN, FSTAB_END)
