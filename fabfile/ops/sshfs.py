"""The sshfs backend of shared storage: the head's directory mounted over SSH.

NFS needs the kernel's nfsd on the head and nfs on the workers; many rented
machines (containers, minimal images) have neither but do have FUSE. Each
worker then has its own key, which the head accepts for SFTP only, from that
worker's address only, for the SSH user only.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.connection import Session
from ..core.errors import HostError, keeping_changes
from ..core.fanout import FAILED, HostResult
from ..core.files import ManagedFile, outside_managed_block, plan_files, render, replace_block
from ..core.inventory import Inventory, Node
from ..core.remote import Remote, ensure_dir, ensure_packages, last_line
from ..core.steps import Outcome, merge_phases, remote_for, run_step
from . import nfs
from .nfs import FINDMNT, NfsPlan

KEY_DIR = "/etc/gpufab/sshfs"
KEY_FILE = f"{KEY_DIR}/id_ed25519"
KNOWN_HOSTS = f"{KEY_DIR}/known_hosts"
KEY_COMMENT = "gpufab-sshfs@"
KEYS_BEGIN = "# BEGIN gpufab managed block (sshfs keys)"
KEYS_END = "# END gpufab managed block (sshfs keys)"
FSTAB_BEGIN = "# BEGIN gpufab managed block (storage sshfs)"
FSTAB_END = "# END gpufab managed block (storage sshfs)"
SSHFS_OPTIONS = ("_netdev,allow_other,reconnect,ServerAliveInterval=15,ServerAliveCountMax=3,"
                 "x-systemd.mount-timeout=30,StrictHostKeyChecking=yes")
_KEY_RE = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/=]+ " + re.escape(KEY_COMMENT) + r"[A-Za-z0-9._-]+$")


def key_line(node: str, private_ip: str, public_key: str) -> str:
    """The head's authorized_keys line for one worker: SFTP only, from its address only."""
    key = public_key.strip()
    if not _KEY_RE.match(key) or not key.endswith(KEY_COMMENT + node):
        raise ValueError(f"unexpected public key from {node}: {key[:40]!r}")
    return f'restrict,from="{private_ip}",command="internal-sftp" {key}'


def keys_block(lines_by_node: Mapping[str, str]) -> str:
    """All workers' lines, sorted by node; '' when there are none (the block goes away)."""
    if not lines_by_node:
        return ""
    body = "\n".join(lines_by_node[n] for n in sorted(lines_by_node))
    return f"{KEYS_BEGIN}\n# Each worker's sshfs key: SFTP only, from that worker only (gpufab storage).\n{body}\n{KEYS_END}\n"


def keys_in_block(text: str) -> Dict[str, str]:
    """node -> line for the key lines inside gpufab's block of an authorized_keys file."""
    found: Dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith(KEYS_BEGIN):
            inside = True
        elif line.startswith(KEYS_END):
            inside = False
        elif inside and KEY_COMMENT in line:
            found[line.rsplit(KEY_COMMENT, 1)[1].strip()] = line
    return found


def fstab_block(user: str, server: str, export: str, mount: str) -> str:
    return render("storage/sshfs-fstab.j2", user=user, server=server, export=export, mount=mount,
                  options=f"{SSHFS_OPTIONS},IdentityFile={KEY_FILE},UserKnownHostsFile={KNOWN_HOSTS}")


def known_hosts_file(server: str, host_keys: str) -> ManagedFile:
    """The head's host keys under its private address: workers check it, never accept-new."""
    lines = [f"{server} {' '.join(line.split()[:2])}" for line in host_keys.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the head has no SSH host keys in /etc/ssh")
    return ManagedFile(KNOWN_HOSTS, "\n".join(lines) + "\n")


def fstab_lines_outside(text: str) -> List[str]:
    return outside_managed_block(text, FSTAB_BEGIN, FSTAB_END)


def mounted_sshfs(found: Optional[Tuple[str, str]], user: str, server: str, export: str) -> bool:
    return found is not None and found[1] == "fuse.sshfs" and found[0] == f"{user}@{server}:{export}"


# --------------------------------------------------------------------------- on the nodes


def _fstab(remote: Remote, p: NfsPlan, block: str) -> List[str]:
    """Put gpufab's sshfs block in /etc/fstab ('' removes it); refuse a hand-made line for the mount.

    gpufab's own NFS block goes in both cases: one backend at a time.
    """
    state = remote.read_paths([nfs.FSTAB])[nfs.FSTAB]
    old = replace_block(state.content or "", "", nfs.FSTAB, nfs.FSTAB_BEGIN, nfs.FSTAB_END)
    if block:
        clash = nfs.fstab_conflict(fstab_lines_outside(old), p.mount)
        if clash:
            raise HostError(f"{nfs.FSTAB} already mounts {p.mount} outside gpufab's sshfs block ({clash!r})")
    new = replace_block(old, block, nfs.FSTAB, FSTAB_BEGIN, FSTAB_END)
    wanted = ManagedFile(nfs.FSTAB, new, mode=state.mode or 0o644, owner=state.owner or "root", group=state.group or "root")
    return remote.write_files(plan_files([wanted], {nfs.FSTAB: state}))


def prepare_worker(remote: Remote, p: NfsPlan, head_user: str, host_keys: str) -> Outcome:
    """sshfs installed, this worker's own key, the head's host key, the fstab line; not mounted yet."""
    done = ensure_packages(remote, ("sshfs",))
    with keeping_changes(done):
        key = shlex.quote(KEY_FILE)
        if not remote.check(f"test -s {key} && test -s {key}.pub", sudo=True):
            remote.change(f"install -d -m 0700 {KEY_DIR} && rm -f {key} {key}.pub && "
                          f"ssh-keygen -q -t ed25519 -N '' -C {KEY_COMMENT}{remote.node.name} -f {key}")
            done.append(f"generated {KEY_FILE}")
        public = remote.run(f"cat {key}.pub", sudo=True, warn=True).stdout.strip()
        if remote.dry_run and not public:  # the key a real run would generate, for the head's diff
            public = f"ssh-ed25519 GENERATEDONTHEWORKER {KEY_COMMENT}{remote.node.name}"
        known = known_hosts_file(p.server, host_keys)
        done += remote.write_files(plan_files([known], remote.read_state([known])))
        done += ensure_dir(remote, p.mount)
        done += _fstab(remote, p, fstab_block(head_user, p.server, p.export, p.mount))
    return Outcome(done, [], public)


def authorize_workers(remote: Remote, keys: Dict[str, str], export: str) -> Outcome:
    """The head: the share directory, and one restricted authorized_keys line per worker."""
    done = ensure_dir(remote, export, remote.user)
    home = remote.run(f"getent passwd {shlex.quote(remote.user)} | cut -d: -f6").stdout.strip()
    path = f"{home}/.ssh/authorized_keys"
    state = remote.read_paths([path])[path]
    old = state.content or ""
    lines = {**keys_in_block(old), **keys}
    new = replace_block(old, keys_block(lines), path, KEYS_BEGIN, KEYS_END)
    wanted = ManagedFile(path, new, mode=0o600, owner=remote.user, group=state.group or remote.user)
    done += remote.write_files(plan_files([wanted], {path: state}))
    return Outcome(done, [f"{len(lines)} worker keys (SFTP only) in {path}"])


def mount_worker(remote: Remote, p: NfsPlan, head_user: str) -> Outcome:
    q = shlex.quote(p.mount)
    found = nfs.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout)
    if mounted_sshfs(found, head_user, p.server, p.export):
        return Outcome([], [f"{p.server_name}:{p.export} mounted on {p.mount} (sshfs)"])
    result = remote.change(f"mount {q}", warn=True, timeout=60)
    if remote.dry_run:
        return Outcome([f"mounted {p.server_name}:{p.export} on {p.mount} (sshfs)"], [])
    found = nfs.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout)
    if result.exited != 0 or not mounted_sshfs(found, head_user, p.server, p.export):
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
                keys[r.node.name] = key_line(r.node.name, r.node.private or "", r.value or "")
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


# --------------------------------------------------------------------------- unmount


def unmount_worker(remote: Remote, p: NfsPlan) -> Outcome:
    """Unmount, drop gpufab's fstab blocks (sshfs and NFS) and the worker's sshfs key."""
    done: List[str] = []
    q = shlex.quote(p.mount)
    if nfs.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout):
        result = remote.change(f"umount {q} || umount -l {q}", warn=True, timeout=60)
        if result.exited != 0:
            raise HostError(f"cannot unmount {p.mount}: {last_line(result.stderr)}")
        done.append(f"unmounted {p.mount}")
    with keeping_changes(done):
        done += _fstab(remote, p, "")
        if remote.check(f"test -e {KEY_DIR}", sudo=True):
            # Its parent too when nothing else of gpufab's is left in it.
            remote.change(f"rm -rf {KEY_DIR}; rmdir {os.path.dirname(KEY_DIR)} 2>/dev/null; true")
            done.append(f"removed {KEY_DIR} (this worker's sshfs key)")
        if remote.check(f"test -d {q} && rmdir {q} 2>/dev/null", sudo=True):
            done.append(f"removed the empty mount point {p.mount}")
    return Outcome(done, [])


def revoke_workers(remote: Remote) -> Outcome:
    home = remote.run(f"getent passwd {shlex.quote(remote.user)} | cut -d: -f6").stdout.strip()
    path = f"{home}/.ssh/authorized_keys"
    state = remote.read_paths([path])[path]
    old = state.content or ""
    new = replace_block(old, "", path, KEYS_BEGIN, KEYS_END)
    if new == old:
        return Outcome([], [])
    wanted = ManagedFile(path, new, mode=state.mode or 0o600, owner=state.owner or remote.user, group=state.group or remote.user)
    done = remote.write_files(plan_files([wanted], {path: state}))
    return Outcome([f"removed the workers' sshfs keys from {path}"] if done else [], [])
