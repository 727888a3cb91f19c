"""The sshfs backend of shared storage: the head's directory mounted over SSH.

NFS needs the kernel's nfsd on the head and nfs on the workers; many rented
machines (containers, minimal images) have neither but do have FUSE. Each
worker then has its own key. The head's own sshd never accepts those keys: a
second sshd (`gpufab-sftp`, on the private address only) does, for SFTP only,
from that worker's address only, chrooted to a directory that holds the share
and nothing else. A worker's key can read and write the share, and no other
file on the head.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...core import programs
from ...core.connection import Session
from ...core.errors import HostError, InputError, keeping_changes
from ...core.declared import PORT, Kind, Setting, declare, owns
from ...core.fanout import FAILED, HostResult
from ...core.files import ManagedFile, outside_managed_block, plan_files, render, replace_block
from ...core.inventory import Inventory, Node
from ...core.networks import check_bind_address, strict_ip
from ...core.remote import Remote, ensure_dir, ensure_packages, last_line
from ...core.steps import Outcome, merge_phases, remote_for, run_step
from . import nfs
from .nfs import FINDMNT, NfsPlan
from ..shared.share import make_export, share_owner

#: The head's SFTP-only sshd: its config, the workers' keys, its chroot (root's, holding only the share).
SFTP_DIR = "/etc/gpufab/sftp"
SFTP_CONFIG = f"{SFTP_DIR}/sshd_config"
SFTP_KEYS = f"{SFTP_DIR}/authorized_keys"
SFTP_CHROOT = "/var/lib/gpufab/sftp"
SHARE_IN_CHROOT = "/share"
SFTP_UNIT = "gpufab-sftp.service"
SFTP_UNIT_FILE = f"/etc/systemd/system/{SFTP_UNIT}"
HOST_KEYS_CMD = "ls /etc/ssh/ssh_host_*_key 2>/dev/null; true"
KEY_DIR = "/etc/gpufab/sshfs"
KEY_FILE = f"{KEY_DIR}/id_ed25519"
KNOWN_HOSTS = f"{KEY_DIR}/known_hosts"
KEY_COMMENT = "gpufab-sshfs@"
KEYS_BEGIN = "# BEGIN gpufab managed block (sshfs keys)"
KEYS_END = "# END gpufab managed block (sshfs keys)"
FSTAB_BEGIN = "# BEGIN gpufab managed block (storage sshfs)"
FSTAB_END = "# END gpufab managed block (storage sshfs)"
#: allow_other (the worker's jobs, not only root, see the share) with default_permissions (the kernel
#: checks each local user against the modes, as on a disk); nosuid,nodev: nothing in it runs setuid.
SSHFS_OPTIONS = ("_netdev,allow_other,default_permissions,nosuid,nodev,reconnect,ServerAliveInterval=15,"
                 "ServerAliveCountMax=3,x-systemd.mount-timeout=30,StrictHostKeyChecking=yes")
_KEY_RE = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/=]+ " + re.escape(KEY_COMMENT) + r"[A-Za-z0-9._-]+$")


def key_line(node: str, private_ip: str, public_key: str) -> str:
    """The SFTP service's line for one worker: SFTP only, from its address only."""
    key = public_key.strip()
    if not _KEY_RE.match(key) or not key.endswith(KEY_COMMENT + node):
        raise ValueError(f"unexpected public key from {node}: {key[:40]!r}")
    return f'restrict,from="{strict_ip(private_ip)}",command="internal-sftp" {key}'


def keys_block(lines_by_node: Mapping[str, str]) -> str:
    """All workers' lines, sorted by node; '' when there are none (the block goes away)."""
    if not lines_by_node:
        return ""
    body = "\n".join(lines_by_node[n] for n in sorted(lines_by_node))
    return (f"{KEYS_BEGIN}\n# Each worker's sshfs key: SFTP into the share only, from that worker only "
            f"(gpufab storage).\n{body}\n{KEYS_END}\n")


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


def source(user: str, server: str) -> str:
    """What a worker mounts: the share as the SFTP service's chroot shows it."""
    return f"{user}@{strict_ip(server)}:{SHARE_IN_CHROOT}"


def fstab_block(user: str, server: str, mount: str, port: int, ids: "tuple[int, int]" = (0, 0)) -> str:
    """`user` is who the head's SFTP service logs the worker in as (the share's owner); `ids` the worker's
    SSH user, shown as the owner of the share's files (so that its jobs, and root, may write them)."""
    return render("storage/sshfs-fstab.j2", source=source(user, server), mount=mount, port=port,
                  options=f"{SSHFS_OPTIONS},uid={ids[0]},gid={ids[1]},Port={port},IdentityFile={KEY_FILE},"
                          f"UserKnownHostsFile={KNOWN_HOSTS}")


def known_hosts_file(server: str, host_keys: str, port: int) -> ManagedFile:
    """The head's host keys under its private address and the service's port: checked, never accept-new."""
    lines = [f"[{server}]:{port} {' '.join(line.split()[:2])}" for line in host_keys.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the head has no SSH host keys in /etc/ssh")
    return ManagedFile(KNOWN_HOSTS, "\n".join(lines) + "\n")


#: Exits 0 once an SSH server answers with its banner at argv[1]:argv[2] (15 s at most): a unit of
#: Type=simple is "active" as soon as sshd is forked, before it listens.
SSH_READY = programs.text("ssh-ready.py")


def listen_address(server: str, port: int) -> str:
    ip = strict_ip(server)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def sftp_files(p: NfsPlan, user: str, host_key_files: Sequence[str], keys_text: str) -> List[ManagedFile]:
    """The SFTP service's config, unit and key file, all root's: the keys reach only what these allow."""
    if not host_key_files:
        raise HostError("the head has no SSH host keys in /etc/ssh")
    config = render("storage/sftp-sshd_config.j2", listen=listen_address(p.server, p.sftp_port),
                    host_keys=list(host_key_files), user=user, keys_file=SFTP_KEYS, chroot=SFTP_CHROOT)
    unit = render("storage/gpufab-sftp.service.j2", export=p.export, chroot=SFTP_CHROOT, config=SFTP_CONFIG)
    return [ManagedFile(SFTP_CONFIG, config), ManagedFile(SFTP_UNIT_FILE, unit), ManagedFile(SFTP_KEYS, keys_text)]


def fstab_lines_outside(text: str) -> List[str]:
    return outside_managed_block(text, FSTAB_BEGIN, FSTAB_END)


def mounted_sshfs(found: Optional[Tuple[str, str]], user: str, server: str) -> bool:
    return found is not None and found[1] == "fuse.sshfs" and found[0] == source(user, server)


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
        known = known_hosts_file(p.server, host_keys, p.sftp_port)
        done += remote.write_files(plan_files([known], remote.read_state([known])))
        done += ensure_dir(remote, p.mount)
        ids = [int(x) for x in remote.run("id -u; id -g").stdout.split() if x.isdigit()][:2]
        done += _fstab(remote, p, fstab_block(head_user, p.server, p.mount, p.sftp_port,
                                              (ids[0], ids[1]) if len(ids) == 2 else (0, 0)))
    return Outcome(done, [], public)


def serve_share(remote: Remote, keys: Dict[str, str], p: NfsPlan) -> Outcome:
    """The head: the share directory, and the SFTP-only sshd that serves it to the workers' keys."""
    try:  # the SFTP service is a listener like any other: on a private address only
        check_bind_address(p.server, "the share's SFTP service", p.reach, "private_ranges")
    except InputError as exc:
        raise HostError(str(exc).removeprefix("private_ranges: ")) from None
    if not remote.check("test -d /run/systemd/system"):
        raise HostError("the sshfs backend needs systemd on the head (its SFTP service is a unit)")
    done = ensure_packages(remote, ("openssh-server",))
    with keeping_changes(done):
        owner, _, _ = make_export(remote, p.export, done)
        # The chroot and everything above it must be root's and writable by no one else (sshd checks).
        remote.change(f"install -d -m 0755 -o root -g root {SFTP_DIR} {SFTP_CHROOT} {SFTP_CHROOT}{SHARE_IN_CHROOT}")
        state = remote.read_paths([SFTP_KEYS])[SFTP_KEYS]
        lines = {**keys_in_block(state.content or ""), **keys}
        host_key_files = remote.run(HOST_KEYS_CMD).stdout.split()
        files = sftp_files(p, owner, host_key_files, keys_block(lines))
        changed = remote.write_files(plan_files(files, remote.read_state(files)))
        done += changed
        unit_changed = any(SFTP_UNIT_FILE in c for c in changed)
        config_changed = any(SFTP_CONFIG in c for c in changed)
        if unit_changed:
            remote.change("systemctl daemon-reload")
        if not remote.check(f"systemctl is-enabled --quiet {SFTP_UNIT}"):
            remote.change(f"systemctl enable {SFTP_UNIT}")
            done.append(f"enabled {SFTP_UNIT}")
        active = remote.check(f"systemctl is-active --quiet {SFTP_UNIT}")
        if not active or unit_changed or config_changed:
            result = remote.change(f"systemctl restart {SFTP_UNIT}", warn=True, timeout=60)
            if not remote.dry_run and (result.exited != 0 or not remote.check(f"systemctl is-active --quiet {SFTP_UNIT}")):
                why = remote.run(f"journalctl -u {SFTP_UNIT} -n 5 --no-pager -o cat 2>/dev/null | tail -n 1",
                                 warn=True).stdout.strip()
                raise HostError(f"{SFTP_UNIT} does not run: {why or last_line(result.stderr) or 'see journalctl'}")
            done.append(f"{'restarted' if active else 'started'} {SFTP_UNIT}")
            # The workers mount right after this: only once it answers (a busy head is slow to start sshd).
            ready = remote.run(f"python3 -c {shlex.quote(SSH_READY)} {shlex.quote(p.server)} {p.sftp_port}",
                               warn=True, timeout=30)
            if not remote.dry_run and ready.exited != 0:
                raise HostError(f"{SFTP_UNIT} is active but does not answer on {listen_address(p.server, p.sftp_port)}")
        done += _drop_login_keys(remote)
    return Outcome(done, [f"{len(lines)} worker keys, SFTP into {p.export} only "
                          f"({SFTP_UNIT} on {listen_address(p.server, p.sftp_port)})"])


def _drop_login_keys(remote: Remote) -> List[str]:
    """gpufab's old block of worker keys in the SSH user's own authorized_keys: those keys reached every file."""
    home = remote.run(f"getent passwd {shlex.quote(remote.user)} | cut -d: -f6").stdout.strip()
    path = f"{home}/.ssh/authorized_keys"
    state = remote.read_paths([path])[path]
    old = state.content or ""
    new = replace_block(old, "", path, KEYS_BEGIN, KEYS_END)
    if new == old:
        return []
    wanted = ManagedFile(path, new, mode=state.mode or 0o600, owner=state.owner or remote.user,
                         group=state.group or remote.user)
    return [f"removed the workers' sshfs keys from {path}"] if remote.write_files(plan_files([wanted], {path: state})) else []


def mount_worker(remote: Remote, p: NfsPlan, head_user: str) -> Outcome:
    q = shlex.quote(p.mount)
    found = nfs.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout)
    if mounted_sshfs(found, head_user, p.server):
        return Outcome([], [f"{p.server_name}:{p.export} mounted on {p.mount} (sshfs)"])
    done = []
    if found is not None and found[1] == "fuse.sshfs":  # an older or other sshfs mount of the same point
        gone = remote.change(f"umount {q} || umount -l {q}", warn=True, timeout=60)
        if gone.exited != 0:
            raise HostError(f"cannot unmount the old sshfs mount {found[0]} on {p.mount}: {last_line(gone.stderr)}")
        done.append(f"unmounted {found[0]} from {p.mount}")
    result = remote.change(f"mount {q}", warn=True, timeout=60)
    if remote.dry_run:
        return Outcome(done + [f"mounted {p.server_name}:{p.export} on {p.mount} (sshfs)"], [])
    found = nfs.parse_findmnt(remote.run(FINDMNT.format(q), warn=True).stdout)
    if result.exited != 0 or not mounted_sshfs(found, head_user, p.server):
        raise HostError(f"sshfs mount of {p.mount} failed: {last_line(result.stderr) or 'not mounted afterwards'}")
    return Outcome(done + [f"mounted {p.server_name}:{p.export} on {p.mount} (sshfs)"], [])


def setup_sshfs(session: Session, inv: Inventory, nodes: Sequence[Node], p: NfsPlan,
                workers: Optional[int] = None, **step_kw: Any) -> List[HostResult]:
    """Workers prepare (keys, fstab) in parallel, the head authorizes them, then they mount."""
    head = inv.head
    head_remote = (step_kw.get("remotes") or {}).get(head.name) or remote_for(session, head)
    host_keys = head_remote.run("cat /etc/ssh/ssh_host_*_key.pub", warn=True).stdout
    head_user = share_owner(head_remote.user)  # whom the workers' SFTP logins act as: never root
    targets = [n for n in nodes if not n.is_head]
    prepared = run_step(session, targets, lambda r: prepare_worker(r, p, head_user, host_keys), workers=workers, **step_kw)
    keys = {}
    for r in prepared:
        if not r.failed:
            try:
                keys[r.node.name] = key_line(r.node.name, r.node.private or "", r.value or "")
            except ValueError as exc:
                r.status, r.exit_code, r.reason = FAILED, 1, str(exc)
    authorized = run_step(session, [head], lambda r: serve_share(r, keys, p), **step_kw)
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
    """The head: the SFTP service, its keys and chroot gone (and any old key block in authorized_keys)."""
    done: List[str] = []
    if remote.check(f"test -e {SFTP_UNIT_FILE}"):
        remote.change(f"systemctl disable --now {SFTP_UNIT} 2>/dev/null; rm -f {SFTP_UNIT_FILE} && systemctl daemon-reload",
                      timeout=60)
        done.append(f"stopped and removed {SFTP_UNIT}")
    if remote.check(f"test -e {SFTP_DIR} || test -e {SFTP_CHROOT}", sudo=True):
        # rmdir only: the share itself is never in the chroot once the service is stopped.
        remote.change(f"rm -rf {SFTP_DIR} && rmdir {SFTP_CHROOT}{SHARE_IN_CHROOT} {SFTP_CHROOT} 2>/dev/null; "
                      f"rmdir {os.path.dirname(SFTP_CHROOT)} {os.path.dirname(SFTP_DIR)} 2>/dev/null; true")
        done.append(f"removed {SFTP_DIR} and {SFTP_CHROOT} (the workers' sshfs keys)")
    return Outcome(done + _drop_login_keys(remote), [])


def forget_worker(remote: Remote, name: str) -> Outcome:
    """The head: one worker's key out of the SFTP service's keys (sshd reads them at each login: no restart)."""
    state = remote.read_paths([SFTP_KEYS])[SFTP_KEYS]
    lines = keys_in_block(state.content or "")
    if name not in lines:
        return Outcome([], [])
    del lines[name]
    wanted = ManagedFile(SFTP_KEYS, keys_block(lines))
    remote.write_files(plan_files([wanted], {SFTP_KEYS: state}))
    return Outcome([f"removed {name}'s sshfs key from {SFTP_KEYS}"], [])


DECLARED = declare(
    "ops.storage.sshfs",
    Setting("sshfs_port", "the head's SFTP-only sshd that serves the share to sshfs", str(nfs.DEFAULT_SFTP_PORT),
            kind=Kind("port, not 22", {"allOf": [PORT.schema, {"not": {"enum": [22, "22"]}}]}), check=nfs.check_sftp_port),
)


OWNED = owns("ops.sshfs", undone_by_step=(SFTP_CONFIG, SFTP_KEYS, SFTP_UNIT_FILE, KNOWN_HOSTS))
