"""Reset: what gpufab added to a node taken away again, so that the next bootstrap starts from scratch.

Like `ray down` or `sky ssh down`, but for everything gpufab's steps leave:
Ray stopped and its units and venv gone, the share unmounted and its keys
and service gone (storage.unmount's own code), the SSH mesh taken out
(mesh.remove's own code), the daemon.json keys merged
out, and every whole file gpufab wrote removed, or put back as the node had
it before gpufab's first write (core/remote.py keeps that copy). Packages
installed from apt (Docker, sshfs, NFS) stay: other software may use them.

Whole files go facts-in, commands-out: `read_facts` reads which of them,
their backups and gpufab's directories are on the node, in one command, and
`plan` turns that into the commands, so its tests are data.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.files import ABSENT_SUFFIX, BACKUP_DIR, BEFORE_DIR, ManagedFile, plan_files
from ..core.connection import Session
from ..core.errors import HostError, keeping_changes
from ..core.fanout import HostResult
from ..core.declared import owned
from ..core.inventory import USER_RE, Inventory, Node
from ..core import packages as apt
from ..core.remote import Remote, last_line
from ..core.steps import Outcome, merge_phases, run_step
from . import containers, docker, images, mesh, ray
from .docker import nvidia_toolkit
from .storage import nfs, sshfs
from .shared.share import cache_on_head, dirs_below, read_cache


MARKER = "Managed by gpufab"

#: Root reads, never follows a link it finds (`-f` and `! -L` on each).
#: $1 BEFORE_DIR, $2 BACKUP_DIR, $3 marker, then unit:NAME, own:DIR, parent:DIR or a whole file's path.
FACTS_SCRIPT = programs.text("reset-facts.sh")


@dataclass(frozen=True)
class ResetFacts:
    #: gpufab's whole files on the node (an operator's file at a shared path such as /etc/nccl.conf is not).
    files: FrozenSet[str] = frozenset()
    #: Files with the node's own version from before gpufab kept in BEFORE_DIR.
    before: FrozenSet[str] = frozenset()
    #: Files written by an older gpufab: no BEFORE_DIR record, but a backup without gpufab's marker (the node's own).
    before_in_backup: FrozenSet[str] = frozenset()
    active_units: FrozenSet[str] = frozenset()
    own_dirs: FrozenSet[str] = frozenset()
    #: Parent directory -> what is in it now.
    parents: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)
    systemd: bool = False
    exportfs: bool = False


def parse_facts(text: str) -> ResetFacts:
    sets: Dict[str, set] = {k: set() for k in ("file", "before", "before-backup", "active", "own")}
    parents: Dict[str, Tuple[str, ...]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in sets and rest:
            sets[kind].add(rest)
        elif kind == "parent":
            path, _, entries = rest.partition(" ")
            parents[path] = tuple(entries.split())
    flags = set(text.split())
    return ResetFacts(frozenset(sets["file"]), frozenset(sets["before"]), frozenset(sets["before-backup"]),
                      frozenset(sets["active"]), frozenset(sets["own"]), parents, "systemd" in flags,
                      "exportfs" in flags)


def read_facts(remote: Remote) -> ResetFacts:
    o = owned()
    args = [BEFORE_DIR, BACKUP_DIR, MARKER, *(f"unit:{u}" for u in (*o.units, *o.transient)), *o.files,
            *(f"own:{d}" for d in o.trees), *(f"parent:{d}" for d in o.parents)]
    return parse_facts(remote.script(FACTS_SCRIPT, *args, sudo=True).stdout)


def plan(facts: ResetFacts) -> List[Tuple[str, str]]:
    """(what is done, the command doing it), in order: units stopped before their files go, files before their directories."""
    steps: List[Tuple[str, str]] = []
    o = owned()
    units = [u for u in o.units if u in facts.active_units or f"{ray.UNIT_DIR}/{u}" in facts.files]
    if facts.systemd:
        for unit in units:
            steps.append((f"stopped and disabled {unit}", f"systemctl disable --now {shlex.quote(unit)} 2>/dev/null; true"))
        for unit in o.transient:
            if unit in facts.active_units:
                steps.append((f"stopped {unit}", f"systemctl stop {shlex.quote(unit)} 2>/dev/null; true"))
    removed: List[str] = []
    for path in o.files:
        q = shlex.quote(path)
        if path in facts.before or path in facts.before_in_backup:
            src = (BEFORE_DIR if path in facts.before else BACKUP_DIR) + path
            # --remove-destination: a link at the path is replaced, never written through.
            steps.append((f"put back {path} as it was before gpufab",
                          f"cp -p --remove-destination -- {shlex.quote(src)} {q}"))
        elif path in facts.files:
            steps.append((f"removed {path}", f"rm -f -- {q}"))
            removed.append(path)
    if nfs.EXPORTS_FILE in facts.files and facts.exportfs:
        steps.append(("withdrew the NFS export", "exportfs -ra"))
    if ray.FIREWALL_FILE in facts.files:
        steps.append(("removed Ray's firewall rules", f"nft delete table {ray.FIREWALL_TABLE} 2>/dev/null; true"))
    for path in o.trees:
        if path in facts.own_dirs:
            steps.append((f"removed {path}", f"rm -rf -- {shlex.quote(path)}"))
    for path, entries in facts.parents.items():
        if all(f"{path}/{e}" in removed for e in entries):
            steps.append((f"removed the empty {path}", f"rmdir -- {shlex.quote(path)}"))
    if facts.systemd and (units or any(p.startswith("/etc/systemd/") for p in removed)):
        steps.append(("reloaded systemd", "systemctl daemon-reload"))
    return steps


def unmerge_daemon_json(current: Mapping[str, object], managed: Mapping[str, object], before: Mapping[str, object],
                        nvidia_runtime: Mapping[str, object]) -> Dict[str, object]:
    """gpufab's keys out of daemon.json again; a key the node had before gpufab gets that value back.

    `before` is the node's file from before gpufab first wrote it ({} when
    there was none). The NVIDIA runtime goes only where gpufab added it.
    """
    out = dict(current)
    for key, value in managed.items():
        if key in before and before[key] != value:
            out[key] = before[key]
        elif key not in before:
            out.pop(key, None)
    runtimes = out.get("runtimes")
    had = before.get("runtimes")
    if isinstance(runtimes, dict) and runtimes.get("nvidia") == nvidia_runtime and not (
            isinstance(had, dict) and "nvidia" in had):
        rest = {k: v for k, v in runtimes.items() if k != "nvidia"}
        if rest:
            out["runtimes"] = rest
        else:
            out.pop("runtimes")
    return out


def reset_daemon_json(remote: Remote, extra: Mapping[str, object]) -> Outcome:
    """gpufab's keys merged out; the file removed when gpufab made it and nothing else is left in it."""
    path = docker.DAEMON_JSON
    before_copy, absent = BEFORE_DIR + path, BEFORE_DIR + path + ABSENT_SUFFIX
    states = remote.read_paths([path, before_copy, absent])
    if not states[path].exists:
        return Outcome([], [])
    try:
        current = docker.parse_daemon_json(states[path].content)
        before = docker.parse_daemon_json(states[before_copy].content) if states[before_copy].exists else {}
    except docker.DaemonJsonError as exc:
        return Outcome([], [f"{path} left as it is: not valid JSON ({exc})"])
    left = unmerge_daemon_json(current, docker.managed_settings(extra), before, docker.nvidia_runtime())
    if left == current:
        return Outcome([], [])
    if left or states[before_copy].exists:
        remote.write_files(plan_files([ManagedFile(path, docker.dump_daemon_json(left))], {path: states[path]}))
        done = [f"took gpufab's keys out of {path}"]
    else:
        remote.change(f"rm -f -- {shlex.quote(path)}")
        done = [f"removed {path} (gpufab's keys only)"]
    if remote.check("systemctl is-active --quiet docker"):
        error = docker.restart_docker(remote)
        if error is not None:
            raise HostError(f"docker did not come back without gpufab's daemon.json keys: {error}", changes=done)
        done.append("restarted docker")
    return Outcome(done, [])


def stop_and_unmount(remote: Remote, share: nfs.NfsPlan, is_head: bool, venv: str) -> Outcome:
    """Phase one on every node at once: Ray stopped, and each worker's share unmounted while the head still serves it."""
    done = list(ray.stop_ray(remote, venv, force=False).changes)
    if not is_head:
        done += sshfs.unmount_worker(remote, share).changes
    return Outcome(done, [])


def recorded_packages(text: str, installed: FrozenSet[str]) -> List[str]:
    """What `reset --packages` purges: recorded by gpufab's installs, still installed, not the way in."""
    names = sorted({line.strip() for line in text.splitlines() if line.strip()})
    return [n for n in names if n in installed and n not in apt.NEVER_PURGE]


def purge_packages(remote: Remote) -> Outcome:
    """The packages gpufab installed, purged with what only they needed (and Docker's or NVIDIA's apt source with theirs)."""
    record = remote.read_paths([apt.INSTALLED_RECORD])[apt.INSTALLED_RECORD]
    if not record.exists or not record.content:
        return Outcome([], ["--packages: gpufab installed no package here (or a reset without --packages forgot them)"])
    installed = frozenset(apt.parse_installed(remote.run(apt.query_command(record.content.split())).stdout))
    todo = recorded_packages(record.content, installed)
    if not todo:
        return Outcome([], [])
    result = remote.change(apt.purge_command(todo), warn=True, timeout=max(remote.timeout or 0, 900))
    if result.exited != 0:
        raise HostError(f"apt-get purge {' '.join(todo)} failed: {last_line(result.stderr or result.stdout)}")
    done = [f"purged {' '.join(todo)}"]
    if "docker-ce" in todo:
        remote.change(f"rm -f -- {docker.SOURCE_LIST} {docker.KEYRING}")
        done.append(f"removed Docker's apt source ({docker.SOURCE_LIST}, {docker.KEYRING})")
    if nvidia_toolkit.PACKAGE in todo:
        remote.change(f"rm -f -- {nvidia_toolkit.SOURCE_LIST} {nvidia_toolkit.KEYRING}")
        done.append(f"removed NVIDIA's apt source ({nvidia_toolkit.SOURCE_LIST}, {nvidia_toolkit.KEYRING})")
    return Outcome(done, [])


def group_leavers(record: str, group_line: str) -> List[str]:
    """Users gpufab added (the record) that `getent group docker` still lists, in record order."""
    members = set(group_line.strip().split(":")[3].split(",")) if group_line.count(":") >= 3 else set()
    seen: List[str] = []
    for name in record.split():
        # Only what the inventory takes as a user name reaches gpasswd (never an option such as -r).
        if USER_RE.match(name) and name in members and name not in seen:
            seen.append(name)
    return seen


def leave_docker_group(remote: Remote) -> Outcome:
    """docker.install put the SSH user in group docker (root access to the node): take out whom it added."""
    record = remote.read_paths([docker.GROUP_RECORD])[docker.GROUP_RECORD]
    if not record.exists or not record.content:
        return Outcome([], [])
    group = remote.run("getent group docker", warn=True).stdout
    done = []
    for name in group_leavers(record.content, group):
        remote.change(f"gpasswd -d {shlex.quote(name)} docker >/dev/null")
        done.append(f"took {name} out of group docker")
    return Outcome(done, [])


def _remove_all(remote: Remote, paths: str, sudo: bool) -> bool:
    """`rm -rf` of the (shell-quoted) paths when any of them is there; whether it was."""
    if not remote.check(f"for d in {paths}; do [ -e \"$d\" ] && exit 0; done; exit 1", sudo=sudo):
        return False
    remote.change(f"rm -rf -- {paths}", sudo=sudo)
    return True


#: rmdir each directory given, deepest first, until one is not empty (run as the SSH user: it made them).
RMDIR_SCRIPT = 'n=0; for d in "$@"; do rmdir -- "$d" 2>/dev/null || break; n=$((n+1)); done; echo "$n"'


def remove_empty_cache(remote: Remote, share: nfs.NfsPlan, cache: str) -> Outcome:
    """The shared cache directory storage made, if nothing was ever downloaded into it (else it is data)."""
    path = cache_on_head(share.export, share.mount, cache)
    removed = remote.script(RMDIR_SCRIPT, *dirs_below(path, share.export), warn=True).stdout.split()
    if removed[-1:] in (["0"], []):
        return Outcome([], [])
    return Outcome([f"removed the empty shared cache {path}"], [])


def remove_the_rest(remote: Remote, share: nfs.NfsPlan, is_head: bool, docker_extra: Mapping[str, object],
                    packages: bool = False, cache: Optional[str] = None) -> Outcome:
    """Phase two: the head's share service and check files, daemon.json, every whole file, gpufab's directories."""
    done: List[str] = []
    notes: List[str] = []
    with keeping_changes(done):
        done += leave_docker_group(remote).changes
        done += containers.remove_all(remote).changes
        done += images.log_out(remote).changes
        if packages:
            purged = purge_packages(remote)
            done += purged.changes
            notes += purged.notes
        if is_head:
            done += sshfs.revoke_workers(remote).changes
            # -P (find's default) never follows a link, the export itself included; -delete removes links, not targets.
            found = remote.run(f"find -P {shlex.quote(share.export)} -maxdepth 1 -name '.gpufab-*' ! -type d -print -delete",
                               sudo=True, warn=True).stdout.split()
            if found:
                done.append(f"removed gpufab's check files from {share.export}")
            if cache is not None:
                done += remove_empty_cache(remote, share, cache).changes
            if remote.check(f"test -d {shlex.quote(share.export)}"):
                notes.append(f"kept {share.export}: the shared data is the operator's")
        done += reset_daemon_json(remote, docker_extra).changes
        # Before gpufab's backups go: they say which of the user's files gpufab created.
        done += mesh.remove_node(remote, also_root=True).changes
        for what, command in plan(read_facts(remote)):
            remote.change(command)
            done.append(what)
        home = owned().home
        users = " ".join(f'"$HOME"/{shlex.quote(d)}' for d in home)
        if _remove_all(remote, users, sudo=False):
            done.append("removed ~/" + " and ~/".join(home))
        # A run as root before this login (the inventory's user changed) left them in root's home: only root writes there.
        roots = " ".join(f"/root/{shlex.quote(d)}" for d in home)
        if remote.user != "root" and _remove_all(remote, roots, sudo=True):
            done.append("removed /root/" + " and /root/".join(home))
    return Outcome(done, notes)


@dataclass(frozen=True)
class ResetSettings:
    share: nfs.NfsPlan
    #: Where Ray's binary is, for `ray stop` on a node that ran Ray without systemd.
    venv: str
    #: The daemon.json keys gpufab merged (the template's and the inventory's).
    daemon: Mapping[str, object]
    packages: bool = False
    #: The shared cache storage made in the share (removed only when empty).
    cache: Optional[str] = None


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ResetSettings:
    """The share, venv and daemon.json keys as the steps that set them up read them; `--packages` from the CLI."""
    share = nfs.read_share(config, inv, {})
    return ResetSettings(share, ray.read(config, inv, {}).venv, docker.read(config, inv, {}).daemon,
                         bool(cli.get("packages")), read_cache(config, inv, share.mount))


def reset_nodes(session: Session, nodes: Sequence[Node], s: ResetSettings,
                workers: Optional[int] = None) -> List[HostResult]:
    """Both phases, each on every node at once; a node that fails the first keeps everything for the next run."""
    first = run_step(session, nodes, lambda r: stop_and_unmount(r, s.share, r.node.is_head, s.venv), workers=workers)
    going = [r.node for r in first if not r.failed]
    second = run_step(session, going, lambda r: remove_the_rest(r, s.share, r.node.is_head, s.daemon, s.packages,
                                                                s.cache), workers=workers)
    return merge_phases(nodes, [first, second])
