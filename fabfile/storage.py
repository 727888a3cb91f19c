"""`inv storage.setup`, `storage.verify`, `storage.unmount`: one shared directory, NFS or sshfs.

`storage.setup --backend auto` checks every node's kernel and picks NFS where
it can work, else sshfs (FUSE), and says which. The sshfs backend adds
nothing to the head but one authorized_keys line per worker (SFTP only,
from that worker's private address only); each worker gets its own key, the
head's host key, one fstab line and the mount.
"""

from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from invoke import task
from invoke.exceptions import Exit

from .ops import nfs as nfs_plan
from .ops import sshfs as plan
from .core.cluster import open_session, select_nodes, setting
from .core.connection import Session
from .core.errors import HostError, keeping_changes, reported
from .core.fanout import FAILED, HostResult
from .core.files import ManagedFile, plan_files, replace_block
from .core.inventory import Inventory, Node
from .core.remote import Remote, ensure_packages, last_line
from .core.steps import Outcome, merge_phases, remote_for, report_step, run_step
from .nfs import NfsPlan, _ensure_dir, nfs_plan as read_nfs_plan, setup_share

FINDMNT = "findmnt -rn -o SOURCE,FSTYPE {}"


@dataclass(frozen=True)
class Choice:
    backend: Optional[str]  # None: no backend works on these nodes
    why: str


def storage_facts(remote: Remote) -> str:
    """NFS and FUSE support of one node (plan.FACTS_SCRIPT's output)."""
    return remote.script(plan.FACTS_SCRIPT).stdout


def choose(wanted: str, head: Node, facts: Dict[str, str]) -> Choice:
    """The backend that the head and every worker in `facts` support."""
    workers = {name: text for name, text in facts.items() if name != head.name}
    return Choice(*plan.choose_backend(wanted, head.name, facts, workers))


# --------------------------------------------------------------------------- sshfs


def _fstab(remote: Remote, p: NfsPlan, block: str) -> List[str]:
    """Put gpufab's sshfs block in /etc/fstab ('' removes it); refuse a hand-made line for the mount.

    gpufab's own NFS block goes in both cases: one backend at a time.
    """
    state = remote.read_paths([nfs_plan.FSTAB])[nfs_plan.FSTAB]
    old = replace_block(state.content or "", "", nfs_plan.FSTAB, nfs_plan.FSTAB_BEGIN, nfs_plan.FSTAB_END)
    if block:
        clash = nfs_plan.fstab_conflict(plan.fstab_lines_outside(old), p.mount)
        if clash:
            raise HostError(f"{nfs_plan.FSTAB} already mounts {p.mount} outside gpufab's sshfs block ({clash!r})")
    new = replace_block(old, block, nfs_plan.FSTAB, plan.FSTAB_BEGIN, plan.FSTAB_END)
    wanted = ManagedFile(nfs_plan.FSTAB, new, mode=state.mode or 0o644, owner=state.owner or "root", group=state.group or "root")
    return remote.write_files(plan_files([wanted], {nfs_plan.FSTAB: state}))


def prepare_worker(remote: Remote, p: NfsPlan, head_user: str, host_keys: str) -> Outcome:
    """sshfs installed, this worker's own key, the head's host key, the fstab line; not mounted yet."""
    done = ensure_packages(remote, ("sshfs",))
    with keeping_changes(done):
        key = shlex.quote(plan.KEY_FILE)
        if not remote.check(f"test -s {key} && test -s {key}.pub", sudo=True):
            remote.change(f"install -d -m 0700 {plan.KEY_DIR} && rm -f {key} {key}.pub && "
                          f"ssh-keygen -q -t ed25519 -N '' -C {plan.KEY_COMMENT}{remote.node.name} -f {key}")
            done.append(f"generated {plan.KEY_FILE}")
        public = remote.run(f"cat {key}.pub", sudo=True, warn=True).stdout.strip()
        if remote.dry_run and not public:  # the key a real run would generate, for the head's diff
            public = f"ssh-ed25519 GENERATEDONTHEWORKER {plan.KEY_COMMENT}{remote.node.name}"
        known = plan.known_hosts_file(p.server, host_keys)
        done += remote.write_files(plan_files([known], remote.read_state([known])))
        done += _ensure_dir(remote, p.mount)
        done += _fstab(remote, p, plan.fstab_block(head_user, p.server, p.export, p.mount))
    return Outcome(done, [], {"public_key": public})


def authorize_workers(remote: Remote, keys: Dict[str, str], export: str) -> Outcome:
    """The head: the share directory, and one restricted authorized_keys line per worker."""
    done = _ensure_dir(remote, export, remote.user)
    home = remote.run(f"getent passwd {shlex.quote(remote.user)} | cut -d: -f6").stdout.strip()
    path = f"{home}/.ssh/authorized_keys"
    state = remote.read_paths([path])[path]
    old = state.content or ""
    lines = {**plan.keys_in_block(old), **keys}
    new = replace_block(old, plan.keys_block(lines), path, plan.KEYS_BEGIN, plan.KEYS_END)
    wanted = ManagedFile(path, new, mode=0o600, owner=remote.user, group=state.group or remote.user)
    done += remote.write_files(plan_files([wanted], {path: state}))
    return Outcome(done, [f"{len(lines)} worker keys (SFTP only) in {path}"])


def mount_worker(remote: Remote, p: NfsPlan, head_user: str) -> Outcome:
    q = shlex.quote(p.mount)
    found = nfs_plan.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout)
    if plan.mounted_sshfs(found, head_user, p.server, p.export):
        return Outcome([], [f"{p.server_name}:{p.export} mounted on {p.mount} (sshfs)"])
    result = remote.change(f"mount {q}", warn=True, timeout=60)
    if remote.dry_run:
        return Outcome([f"mounted {p.server_name}:{p.export} on {p.mount} (sshfs)"], [])
    found = nfs_plan.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout)
    if result.exited != 0 or not plan.mounted_sshfs(found, head_user, p.server, p.export):
        raise HostError(f"sshfs mount of {p.mount} failed: {last_line(result.stderr) or 'not mounted afterwards'}")
    return Outcome([f"mounted {p.server_name}:{p.export} on {p.mount} (sshfs)"], [])


def setup_sshfs(session: Session, inv: Inventory, nodes: Sequence[Node], p: NfsPlan,
                workers: Optional[int] = None, **step_kw: Any) -> List[HostResult]:
    """Workers prepare (keys, fstab) in parallel, the head authorizes them, then they mount."""
    head = inv.head
    head_remote = (step_kw.get("remotes") or {}).get(head.name) or remote_for(session, head)
    host_keys = head_remote.run("cat /etc/ssh/ssh_host_*_key.pub", warn=True).stdout
    head_user = head_remote.user
    targets = [n for n in nodes if not n.is_head]
    prepared = run_step(session, targets, lambda r: prepare_worker(r, p, head_user, host_keys), workers=workers, **step_kw)
    keys = {}
    for r in prepared:
        if not r.failed:
            try:
                keys[r.node.name] = plan.key_line(r.node.name, r.node.private or "", r.data.get("public_key", ""))
            except ValueError as exc:
                r.status, r.exit_code, r.reason = FAILED, 1, str(exc)
    authorized = run_step(session, [head], lambda r: authorize_workers(r, keys, p.export), **step_kw)
    if authorized[0].failed:
        mounted = [HostResult(n, FAILED, 1, reason=f"the head could not authorize the key ({authorized[0].reason})")
                   for n in targets if n.name in keys]
    else:
        ready = [n for n in targets if n.name in keys]
        mounted = run_step(session, ready, lambda r: mount_worker(r, p, head_user), workers=workers, **step_kw)
    with_head = [head, *targets] if any(n.is_head for n in nodes) else list(targets)
    return merge_phases(with_head, [prepared, authorized if any(n.is_head for n in nodes) else [], mounted])


# --------------------------------------------------------------------------- verify


def _mount_problem(remote: Remote, p: NfsPlan, backend: str, head_user: str) -> Optional[str]:
    """Why the worker's mount point is not the share, or None."""
    found = nfs_plan.parse_findmnt(remote.run(FINDMNT.format(shlex.quote(p.mount)), warn=True).stdout)
    if backend == "sshfs":
        ok, source = plan.mounted_sshfs(found, head_user, p.server, p.export), f"sshfs mount of {head_user}@"
    else:
        ok, source = nfs_plan.mounted_from(found, p.server, p.export), "NFS mount of "
    return None if ok else f"{p.mount} is not an {source}{p.server}:{p.export}"


def write_token(remote: Remote, export: str, token: str) -> Outcome:
    """The head's side of the check: a fresh token, and a 64 MiB file for workers to read."""
    q = shlex.quote(export)
    remote.run(f"printf %s {shlex.quote(token)} > {q}/.gpufab-verify && "
               f"dd if=/dev/zero of={q}/.gpufab-bench-head bs=1M count={plan.BENCH_MIB} 2>/dev/null", sudo=True, timeout=600)
    return Outcome([], [f"wrote the token into {export}"], {"user": remote.user})


def remove_bench_file(remote: Remote, export: str) -> Outcome:
    remote.run(f"rm -f {shlex.quote(export)}/.gpufab-bench-head", sudo=True)
    return Outcome()


def verify_worker(remote: Remote, p: NfsPlan, backend: str, head_user: str, token: str) -> Outcome:
    """Read the head's token through the mount, then time a 64 MiB write and read."""
    problem = _mount_problem(remote, p, backend, head_user)
    if problem:
        raise HostError(problem)
    seen = remote.run(f"cat {shlex.quote(p.mount + '/.gpufab-verify')}", warn=True).stdout
    if seen != token:
        raise HostError(f"{p.mount}/.gpufab-verify does not hold the head's token: the mount does not show the share")
    mine = shlex.quote(f"{p.mount}/.gpufab-bench-{remote.node.name}")
    theirs = shlex.quote(f"{p.mount}/.gpufab-bench-head")
    write = remote.run(f"dd if=/dev/zero of={mine} bs=1M count={plan.BENCH_MIB} conv=fsync 2>&1 >/dev/null; rm -f {mine}",
                       sudo=True, warn=True, timeout=600)
    read = remote.run(f"dd if={theirs} of=/dev/null bs=1M 2>&1", sudo=True, warn=True, timeout=600)
    w, r = plan.dd_rate(write.stdout), plan.dd_rate(read.stdout)
    return Outcome([], [f"read the head's token through {p.mount}; {plan.rates_text(w, r)}"],
                   {"write_mib_s": w, "read_mib_s": r})


def round_trip(session: Session, inv: Inventory, nodes: Sequence[Node], p: NfsPlan, backend: str,
               workers: Optional[int] = None, **step_kw: Any) -> List[HostResult]:
    """Head writes a token and a 64 MiB file into the share; every worker reads both through its mount."""
    token = secrets.token_hex(16)
    head = inv.head
    head_step = run_step(session, [head], lambda r: write_token(r, p.export, token), **step_kw)
    targets = [n for n in nodes if not n.is_head]
    if head_step[0].failed:
        return head_step + [HostResult(n, FAILED, 1, reason=f"the head could not write the token ({head_step[0].reason})")
                            for n in targets]
    head_user = head_step[0].data["user"]
    results = run_step(session, targets, lambda r: verify_worker(r, p, backend, head_user, token),
                       workers=workers, **step_kw)
    run_step(session, [head], lambda r: remove_bench_file(r, p.export), **step_kw)
    return head_step + results


# --------------------------------------------------------------------------- unmount


def unmount_worker(remote: Remote, p: NfsPlan) -> Outcome:
    """Unmount, drop gpufab's fstab blocks (sshfs and NFS) and the worker's sshfs key."""
    done: List[str] = []
    q = shlex.quote(p.mount)
    if nfs_plan.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout):
        result = remote.change(f"umount {q} || umount -l {q}", warn=True, timeout=60)
        if result.exited != 0:
            raise HostError(f"cannot unmount {p.mount}: {last_line(result.stderr)}")
        done.append(f"unmounted {p.mount}")
    with keeping_changes(done):
        done += _fstab(remote, p, "")
        if remote.check(f"test -e {plan.KEY_DIR}", sudo=True):
            # Its parent too when nothing else of gpufab's is left in it.
            remote.change(f"rm -rf {plan.KEY_DIR}; rmdir {os.path.dirname(plan.KEY_DIR)} 2>/dev/null; true")
            done.append(f"removed {plan.KEY_DIR} (this worker's sshfs key)")
        if remote.check(f"test -d {q} && rmdir {q} 2>/dev/null", sudo=True):
            done.append(f"removed the empty mount point {p.mount}")
    return Outcome(done, [])


def revoke_workers(remote: Remote) -> Outcome:
    home = remote.run(f"getent passwd {shlex.quote(remote.user)} | cut -d: -f6").stdout.strip()
    path = f"{home}/.ssh/authorized_keys"
    state = remote.read_paths([path])[path]
    old = state.content or ""
    new = replace_block(old, "", path, plan.KEYS_BEGIN, plan.KEYS_END)
    if new == old:
        return Outcome([], [])
    wanted = ManagedFile(path, new, mode=state.mode or 0o600, owner=state.owner or remote.user, group=state.group or remote.user)
    done = remote.write_files(plan_files([wanted], {path: state}))
    return Outcome([f"removed the workers' sshfs keys from {path}"] if done else [], [])


# --------------------------------------------------------------------------- tasks


def share_plan(c, session: Session, path=None, mount=None) -> NfsPlan:
    return read_nfs_plan(c, session, path, mount)


def backend_setting(c, inv: Inventory, cli: Optional[str]) -> str:
    return plan.check_backend(setting(c.config, inv, "storage", cli, plan.DEFAULT_BACKEND))


_HELP = {
    "backend": "auto, nfs (default) or sshfs (inventory var storage)",
    "path": f"the head's shared directory (default {nfs_plan.DEFAULT_EXPORT}; var nfs_export)",
    "mount": "where workers mount it (default: the same path; var nfs_mount)",
    "nodes": "only these nodes (comma-separated names)",
    "workers": "hosts worked on at once (default 32)",
}


def _chosen(c, session: Session, title: str, backend, path, mount, nodes) -> Tuple[NfsPlan, Inventory, Sequence[Node], str]:
    """The share, the nodes, and the backend they all support (or the run ends saying why not)."""
    p = share_plan(c, session, path, mount)
    inv = session.inventory
    chosen = select_nodes(inv, nodes)
    facts = {n.name: storage_facts(remote_for(session, n)) for n in [inv.head, *[x for x in chosen if not x.is_head]]}
    choice = choose(backend_setting(c, inv, backend), inv.head, facts)
    if choice.backend is None:
        raise Exit(f"{title}: {choice.why}", code=1)
    print(f"storage: {choice.backend}" + (f" ({choice.why})" if choice.why else ""))
    return p, inv, chosen, choice.backend


@task(help=_HELP)
@reported
def setup(c, backend=None, path=None, mount=None, nodes=None, workers=None):
    """One shared directory from the head on every worker: NFS, sshfs, or auto (the one every node supports)."""
    n = int(workers) if workers else None
    with open_session(c.config) as session:
        p, inv, chosen, used = _chosen(c, session, "storage.setup", backend, path, mount, nodes)
        if used == "nfs":
            results = setup_share(session, chosen, p, workers=n)
        else:
            results = setup_sshfs(session, inv, chosen, p, n)
    report_step(f"storage.setup ({used})", results)


@task(help=_HELP)
@reported
def verify(c, backend=None, path=None, mount=None, nodes=None, workers=None):
    """Token written on the head, read on every worker; 64 MiB write and read timed per worker."""
    with open_session(c.config) as session:
        p, inv, chosen, used = _chosen(c, session, "storage.verify", backend, path, mount, nodes)
        results = round_trip(session, inv, chosen, p, used, int(workers) if workers else None)
    rates = plan.summarize((r.data.get("write_mib_s"), r.data.get("read_mib_s")) for r in results if "write_mib_s" in r.data)
    if rates:
        print(rates)
    report_step(f"storage.verify ({used})", results)


@task(help={k: v for k, v in _HELP.items() if k != "backend"})
@reported
def unmount(c, path=None, mount=None, nodes=None, workers=None):
    """Undo storage.setup: unmount, remove gpufab's fstab lines and workers' keys, and the head's key lines."""
    n = int(workers) if workers else None
    with open_session(c.config) as session:
        p = share_plan(c, session, path, mount)
        inv = session.inventory
        chosen = select_nodes(inv, nodes)
        results = run_step(session, [x for x in chosen if not x.is_head], lambda r: unmount_worker(r, p), workers=n)
        if any(x.is_head for x in chosen):
            results = run_step(session, [inv.head], revoke_workers) + results
    report_step("storage.unmount", results)
