"""`inv nfs.setup` (`nfs.server`, `nfs.client`) and `inv nfs.verify`.

The head exports a directory to the private subnet; workers mount it, only
once the server answers. Everything up to the kernel is done and checked
even where the kernel has no NFS, so a second run on such a host changes
nothing and fails with the same clear reason.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from invoke import task

from .ops import nfs as plan
from .core.cluster import ensure_private, open_session, select_nodes, setting
from .core.connection import Session
from .core.errors import HostError, InputError, keeping_changes, reported
from .core.fanout import HostResult
from .core.inventory import Node
from .core.files import ManagedFile, plan_files, replace_block
from .core.remote import Remote, ensure_packages, last_line
from .core.steps import Outcome, report_step, run_step
from .netenv import nic_facts

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


def _ensure_dir(remote: Remote, path: str, owner: Optional[str] = None) -> List[str]:
    """Create `path` (owned by `owner` and their group) unless it is there so."""
    q = shlex.quote(path)
    seen = remote.run(f"stat -c %U {q} 2>/dev/null || true").stdout.strip()
    if seen and (owner is None or seen == owner):
        return []
    remote.change(f"mkdir -p {q}" + (f" && chown {shlex.quote(owner)}: {q}" if owner else ""))
    if not seen:
        return [f"created {path}" + (f" (owner {owner})" if owner else "")]
    return [f"changed owner of {path} to {owner}"]


def _kernel(remote: Remote) -> str:
    return remote.script(plan.KERNEL_SCRIPT).stdout


def setup_server(remote: Remote, p: NfsPlan) -> Outcome:
    """Package, export directory, the one export line; then exportfs and the service."""
    done = ensure_packages(remote, ("nfs-kernel-server",))
    with keeping_changes(done):
        done += _ensure_dir(remote, p.export, remote.user)
        subnet = p.subnet
        if not subnet:
            nic, facts = nic_facts(remote, p.server)
            cidr = next((a for a in facts.addresses.get(nic, []) if a.split("/")[0] == p.server), None)
            if not cidr:
                raise HostError(f"{p.server} is not on {nic}: cannot tell the private subnet (set private_subnet)")
            subnet = plan.private_subnet(cidr)
        exports = plan.exports_file(p.export, subnet)
        changes = plan_files([exports], remote.read_state([exports]))
        done += remote.write_files(changes)
        lacking = plan.kernel_lacks(_kernel(remote), "nfsd")
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
    return Outcome(done, [f"exports {p.export} to {subnet}"])


def setup_client(remote: Remote, p: NfsPlan, server_error: Optional[str]) -> Outcome:
    """Package, mount point, the one fstab line; mount once the server answers."""
    done = ensure_packages(remote, ("nfs-common",))
    with keeping_changes(done):
        done += _ensure_dir(remote, p.mount)
        fstab = remote.read_paths([plan.FSTAB])[plan.FSTAB]
        old = fstab.content or ""
        clash = plan.fstab_conflict(plan.fstab_lines_outside(old), p.mount)
        if clash:
            raise HostError(f"{plan.FSTAB} already mounts {p.mount} outside gpufab's block ({clash!r}); remove that line or choose --mount")
        new = replace_block(old, plan.fstab_block(p.server, p.export, p.mount), plan.FSTAB, plan.FSTAB_BEGIN, plan.FSTAB_END)
        wanted = ManagedFile(plan.FSTAB, new, mode=fstab.mode or 0o644, owner=fstab.owner or "root", group=fstab.group or "root")
        done += remote.write_files(plan_files([wanted], {plan.FSTAB: fstab}))
        lacking = plan.kernel_lacks(_kernel(remote), "nfs")
        if lacking:
            raise HostError(lacking)
        mount_q = shlex.quote(p.mount)
        found = plan.parse_findmnt(remote.run(f"findmnt -rn -o SOURCE,FSTYPE {mount_q}", warn=True).stdout)
        if plan.mounted_from(found, p.server, p.export):
            return Outcome(done, [f"{p.server}:{p.export} mounted on {p.mount}"])
        if server_error:
            raise HostError(f"NFS server {p.server_name} is not ready ({server_error})")
        if remote.dry_run:
            return Outcome(done + [f"mounted {p.server}:{p.export} on {p.mount}"], [])
        _wait_for_server(remote, p)
        result = remote.change(f"mount {mount_q}", warn=True, timeout=60)
        found = plan.parse_findmnt(remote.run(f"findmnt -rn -o SOURCE,FSTYPE {mount_q}", warn=True).stdout)
        if result.exited != 0 or not plan.mounted_from(found, p.server, p.export):
            raise HostError(f"mount {p.mount} failed: {last_line(result.stderr) or 'not mounted afterwards'}")
        done.append(f"mounted {p.server}:{p.export} on {p.mount}")
    return Outcome(done, [])


def _wait_for_server(remote: Remote, p: NfsPlan) -> None:
    probe = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{p.server}/{plan.NFS_PORT}' 2>/dev/null"
    deadline = time.monotonic() + SERVER_WAIT
    while not remote.check(probe):
        if time.monotonic() > deadline:
            raise HostError(f"NFS server {p.server_name} ({p.server}) does not answer on port {plan.NFS_PORT} after {SERVER_WAIT}s")
        time.sleep(1)


def nfs_plan(c, session: Session, path: Optional[str], mount: Optional[str]) -> NfsPlan:
    inv = ensure_private(session)
    head = inv.head
    if not head.private:
        raise InputError(f"the head {head.name} has no private address (give one in the inventory)")
    export = plan.check_path(setting(c.config, inv, "nfs_export", path, plan.DEFAULT_EXPORT))
    return NfsPlan(
        server=head.private,
        server_name=head.name,
        export=export,
        mount=plan.check_path(setting(c.config, inv, "nfs_mount", mount, export)),
        subnet=setting(c.config, inv, "private_subnet"),
    )


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


def run_nfs(c, title: str, server: bool, clients: bool, path, mount, nodes, workers) -> None:
    with open_session(c.config) as session:
        p = nfs_plan(c, session, path, mount)
        chosen = select_nodes(session.inventory, nodes)
        results = setup_share(session, chosen, p, server=server, clients=clients, workers=int(workers) if workers else None)
    report_step(title, results)


_HELP = {
    "path": f"directory exported by the head (default {plan.DEFAULT_EXPORT}; inventory var nfs_export)",
    "mount": "where workers mount it (default: the same path; inventory var nfs_mount)",
    "nodes": "only these nodes (comma-separated names)",
    "workers": "hosts worked on at once (default 32)",
}


@task(help=_HELP)
@reported
def setup(c, path=None, mount=None, nodes=None, workers=None):
    """NFS server on the head, then the mount on every worker."""
    run_nfs(c, "nfs.setup", True, True, path, mount, nodes, workers)


@task(help=_HELP)
@reported
def server(c, path=None, mount=None, nodes=None, workers=None):
    """Export the shared directory from the head to the private subnet."""
    run_nfs(c, "nfs.server", True, False, path, mount, nodes, workers)


@task(help=_HELP)
@reported
def client(c, path=None, mount=None, nodes=None, workers=None):
    """Mount the head's export on every worker (one managed fstab line)."""
    run_nfs(c, "nfs.client", False, True, path, mount, nodes, workers)


@task(help=_HELP)
@reported
def verify(c, path=None, mount=None, nodes=None, workers=None):
    """Write a token on the head's export and read it back on every worker."""
    from .storage import round_trip  # the round trip of storage.verify; storage imports this module

    with open_session(c.config) as session:
        p = nfs_plan(c, session, path, mount)
        chosen = select_nodes(session.inventory, nodes)
        results = round_trip(session, session.inventory, chosen, p, "nfs", int(workers) if workers else None)
    report_step("nfs.verify", results)
