"""NFS from the head to the workers: export line, fstab line, kernel support.

Both lines are computed here and written whole (the export as its own file
in /etc/exports.d, the mount as a marked block in /etc/fstab), so a re-run
never adds a second one. The export names the private subnet, never `*`.
Containers and minimal VMs often lack NFS in their kernel; that is found
from /proc/filesystems and reported, not discovered by a hung mount.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ...core import programs
from ...core.cluster import cluster_inventory, setting
from ...core.connection import Session
from ...core.errors import HostError, InputError, keeping_changes
from ...core.fanout import HostResult
from ...core.files import ManagedFile, outside_managed_block, plan_files, render, replace_block
from ...core.inventory import Inventory, Node
from ...core.networks import Reach, check_network, read_reach
from ...core.remote import Remote, ensure_dir, ensure_packages, last_line
from ...core.steps import Outcome, run_step
from ..shared.nic import nic_facts
from ..shared.share import SHARE_ACCOUNT, make_export, share_paths
from ...core.declared import TEXT, Setting, Withdrawal, declare, owns

#: sshfs backend: the port of the head's SFTP-only sshd (var sshfs_port).
DEFAULT_SFTP_PORT = 2222
#: A worker's root is nobody in the share (root_squash): it can neither write as root nor plant a
#: root-owned setuid file; with a root login every worker acts as the share's own account (see
#: export_options). Mounts are nosuid,nodev: nothing in the share runs setuid or opens a device.
DEFAULT_EXPORT_OPTIONS = "rw,sync,no_subtree_check,root_squash"
DEFAULT_MOUNT_OPTIONS = "rw,hard,nosuid,nodev,_netdev,nofail,x-systemd.mount-timeout=30"
EXPORTS_FILE = "/etc/exports.d/gpufab.exports"
FSTAB = "/etc/fstab"
NFS_PORT = 2049
#: Prints `SOURCE FSTYPE` of what is mounted on a path (nothing when nothing is).
FINDMNT = "findmnt -rn -o SOURCE,FSTYPE {}"
FSTAB_BEGIN = "# BEGIN gpufab managed block (nfs.client)"
FSTAB_END = "# END gpufab managed block"

#: /proc/filesystems, then which NFS modules exist for the running kernel.
KERNEL_SCRIPT = programs.text("nfs-kernel.sh")


def private_subnet(cidr: str) -> str:
    """`198.19.0.11/24` -> `198.19.0.0/24`: the network a head address sits in."""
    return str(ipaddress.ip_interface(cidr).network)


def export_options(owner: str, uid: int, gid: int) -> str:
    """root_squash for a share the SSH user owns; every user squashed to the share's account for a root login."""
    if owner == SHARE_ACCOUNT:
        return f"rw,sync,no_subtree_check,all_squash,anonuid={uid},anongid={gid}"
    return DEFAULT_EXPORT_OPTIONS


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


#: Seconds a worker waits for the head's port 2049 before giving up.
SERVER_WAIT = 30


@dataclass(frozen=True)
class NfsPlan:
    """Where the share lives and who may mount it; the same for every node."""

    server: str  # the head's private address
    server_name: str
    export: str
    mount: str
    subnet: Optional[str]  # None: take the head NIC's network
    #: What the export may be opened to: private ranges unless overridden.
    reach: Reach = Reach()
    #: sshfs backend: the port of the head's SFTP-only sshd (on its private address).
    sftp_port: int = DEFAULT_SFTP_PORT


def _kernel(remote: Remote) -> str:
    return remote.script(KERNEL_SCRIPT).stdout


def setup_server(remote: Remote, p: NfsPlan) -> Outcome:
    """Package, export directory, the one export line; then exportfs and the service."""
    done = ensure_packages(remote, ("nfs-kernel-server",))
    with keeping_changes(done):
        owner, uid, gid = make_export(remote, p.export, done)
        subnet = p.subnet
        if not subnet:
            nic, facts = nic_facts(remote, p.server)
            cidr = next((a for a in facts.addresses.get(nic, []) if a.split("/")[0] == p.server), None)
            if not cidr:
                raise HostError(f"{p.server} is not on {nic}: cannot tell the private subnet (set private_subnet)")
            subnet = private_subnet(cidr)
        try:
            subnet, warning = check_network(subnet, f"the NFS export {p.export}", p.reach)
        except InputError as exc:
            raise HostError(str(exc)) from None
        exports = exports_file(p.export, subnet, export_options(owner, uid, gid))
        changes = plan_files([exports], remote.read_state([exports]))
        done += remote.write_files(changes)
        lacking = kernel_lacks(_kernel(remote), "nfsd")
        if lacking:
            raise HostError(lacking)
        if not remote.check("systemctl is-active --quiet nfs-server && systemctl is-enabled --quiet nfs-server"):
            result = remote.change("systemctl enable --now nfs-server", warn=True)
            if result.exited != 0:
                raise HostError(f"nfs-server did not start: {last_line(result.stderr)}")
            done.append("enabled and started nfs-server")
        exported = remote.run("exportfs -s", sudo=True, warn=True).stdout
        if changes or p.export not in exported:
            remote.change("exportfs -ra")
            done.append("exportfs -ra")
    return Outcome(done, [f"exports {p.export} to {subnet}"] + ([f"WARNING: {warning}"] if warning else []))


def setup_client(remote: Remote, p: NfsPlan, server_error: Optional[str]) -> Outcome:
    """Package, mount point, the one fstab line; mount once the server answers."""
    done = ensure_packages(remote, ("nfs-common",))
    with keeping_changes(done):
        done += ensure_dir(remote, p.mount)
        fstab = remote.read_paths([FSTAB])[FSTAB]
        old = fstab.content or ""
        clash = fstab_conflict(fstab_lines_outside(old), p.mount)
        if clash:
            raise HostError(f"{FSTAB} already mounts {p.mount} outside gpufab's block ({clash!r}); remove that line or choose --mount")
        new = replace_block(old, fstab_block(p.server, p.export, p.mount), FSTAB, FSTAB_BEGIN, FSTAB_END)
        wanted = ManagedFile(FSTAB, new, mode=fstab.mode or 0o644, owner=fstab.owner or "root", group=fstab.group or "root")
        done += remote.write_files(plan_files([wanted], {FSTAB: fstab}))
        lacking = kernel_lacks(_kernel(remote), "nfs")
        if lacking:
            raise HostError(lacking)
        mount_q = shlex.quote(p.mount)
        found = parse_findmnt(remote.run(f"findmnt -rn -o SOURCE,FSTYPE {mount_q}", warn=True).stdout)
        if mounted_from(found, p.server, p.export):
            return Outcome(done, [f"{p.server}:{p.export} mounted on {p.mount}"])
        if server_error:
            raise HostError(f"NFS server {p.server_name} is not ready ({server_error})")
        if remote.dry_run:
            return Outcome(done + [f"mounted {p.server}:{p.export} on {p.mount}"], [])
        _wait_for_server(remote, p)
        result = remote.change(f"mount {mount_q}", warn=True, timeout=60)
        found = parse_findmnt(remote.run(f"findmnt -rn -o SOURCE,FSTYPE {mount_q}", warn=True).stdout)
        if result.exited != 0 or not mounted_from(found, p.server, p.export):
            raise HostError(f"mount {p.mount} failed: {last_line(result.stderr) or 'not mounted afterwards'}")
        done.append(f"mounted {p.server}:{p.export} on {p.mount}")
    return Outcome(done, [])


def _wait_for_server(remote: Remote, p: NfsPlan) -> None:
    probe = f"timeout 3 bash -c 'exec 3<>/dev/tcp/\"$1\"/{NFS_PORT}' sh {shlex.quote(p.server)} 2>/dev/null"
    deadline = time.monotonic() + SERVER_WAIT
    while not remote.check(probe):
        if time.monotonic() > deadline:
            raise HostError(f"NFS server {p.server_name} ({p.server}) does not answer on port {NFS_PORT} after {SERVER_WAIT}s")
        time.sleep(1)


def read_share(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> NfsPlan:
    """Where the share lives: CLI `--path`/`--mount` > vars `nfs_export`/`nfs_mount` > config > /mnt/shared."""
    export, mount = share_paths(config, inv, cli)
    reach = read_reach(setting(config, inv, "private_ranges"), setting(config, inv, "allow_public_networks"))
    subnet = setting(config, inv, "private_subnet")
    if subnet is not None:  # given: refused here, before any node is touched
        subnet = check_network(subnet, f"the NFS export {export}", reach)[0]
    return NfsPlan(
        server=inv.head.private or "",
        server_name=inv.head.name,
        export=export,
        mount=mount,
        subnet=subnet,
        reach=reach,
        sftp_port=check_sftp_port(setting(config, inv, "sshfs_port", None, DEFAULT_SFTP_PORT)),
    )



def check_sftp_port(value: Any) -> int:
    """Inventory var `sshfs_port`: a port of its own, not the node's sshd (22)."""
    port = value if isinstance(value, int) and not isinstance(value, bool) else None
    if port is None and isinstance(value, str) and value.isascii() and value.isdigit():
        port = int(value)
    if port is None or not 0 < port < 65536 or port == 22:
        raise InputError(f"invalid sshfs_port {value!r}: a port from 1 to 65535 other than 22", path="sshfs_port")
    return port


def share_of(config: Any, session: Session, cli: Mapping[str, Any]) -> NfsPlan:
    """The share of a storage or nfs task: private addresses known, the head's required."""
    return read_share(config, cluster_inventory(session), cli)


def setup_share(session: Session, nodes: Sequence[Node], p: NfsPlan, *, server: bool = True, clients: bool = True,
                workers: Optional[int] = None, **step_kw: Any) -> List[HostResult]:
    """Server on the head first (if among `nodes`), then every worker's client in parallel."""
    results: List[HostResult] = []
    server_error = None
    if server and any(n.is_head for n in nodes):
        results += run_step(session, [n for n in nodes if n.is_head], lambda r: setup_server(r, p), **step_kw)
        server_error = results[-1].reason if results[-1].failed else None
    if clients:
        targets = [n for n in nodes if not n.is_head]
        results += run_step(session, targets, lambda r: setup_client(r, p, server_error), workers=workers, **step_kw)
    return results


DECLARED = declare(
    "ops.storage.nfs",
    Setting("private_subnet", "the subnet the share is exported to", "the head's private network",
            kind=TEXT),
)


OWNED = owns("ops.nfs", files=(EXPORTS_FILE,), parents=("/etc/exports.d",), undone_by_step=(FSTAB,),
             withdrawn=(Withdrawal(EXPORTS_FILE, "withdrew the NFS export", "exportfs -ra", needs="exportfs"),))
