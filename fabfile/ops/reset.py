"""Reset: what gpufab added to a node taken away again, so that the next bootstrap starts from scratch.

Like `ray down` or `sky ssh down`, but for everything gpufab's steps leave:
every whole file gpufab wrote removed, or put back as the node had it before
gpufab's first write (core/remote.py keeps that copy), and what each step
undoes itself (Ray stopped, the share unmounted and its keys and service gone,
the SSH mesh taken out, the daemon.json keys merged out): each module declares
its files (core.declared.owns) and registers its undo (core.declared.undoes),
so reset names no step. Packages installed from apt (Docker, sshfs, NFS) stay:
other software may use them, unless `--packages`.

Whole files go facts-in, commands-out: `read_facts` reads which of them,
their backups and gpufab's directories are on the node, in one command, and
`plan` turns that into the commands, so its tests are data.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.files import BACKUP_DIR, BEFORE_DIR
from ..core.connection import Session
from ..core.errors import HostError, keeping_changes
from ..core.fanout import HostResult
from ..core.declared import Undo, owned, undoes, undos
from ..core.inventory import Inventory, Node
from ..core import packages as apt
from ..core.remote import Remote, last_line
from ..core.steps import Outcome, merge_phases, run_step


MARKER = "Managed by gpufab"
#: Where a unit file among the declared files lives (its unit is stopped even when systemd lost it).
UNIT_DIR = "/etc/systemd/system"

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

    @property
    def commands(self) -> FrozenSet[str]:
        """The commands a Withdrawal may need that the node has (the facts script asks for exportfs)."""
        return frozenset({"exportfs"} if self.exportfs else ())


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
    units = [u for u in o.units if u in facts.active_units or f"{UNIT_DIR}/{u}" in facts.files]
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
    for w in o.withdrawn:
        if w.file in facts.files and (not w.needs or w.needs in facts.commands):
            steps.append((w.what, w.command))
    for path in o.trees:
        if path in facts.own_dirs:
            steps.append((f"removed {path}", f"rm -rf -- {shlex.quote(path)}"))
    for path, entries in facts.parents.items():
        if all(f"{path}/{e}" in removed for e in entries):
            steps.append((f"removed the empty {path}", f"rmdir -- {shlex.quote(path)}"))
    if facts.systemd and (units or any(p.startswith("/etc/systemd/") for p in removed)):
        steps.append(("reloaded systemd", "systemctl daemon-reload"))
    return steps


def recorded_packages(text: str, installed: FrozenSet[str]) -> List[str]:
    """What `reset --packages` purges: recorded by gpufab's installs, still installed, not the way in."""
    names = sorted({line.strip() for line in text.splitlines() if line.strip()})
    return [n for n in names if n in installed and n not in apt.NEVER_PURGE]


def purge_packages(remote: Remote) -> Outcome:
    """The packages gpufab installed, purged with what only they needed (and the apt sources steps added for them)."""
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
    for source in owned().sources:
        if source.package in todo:
            remote.change(f"rm -f -- {' '.join(source.files)}")
            done.append(f"removed {source.whose} apt source ({', '.join(source.files)})")
    return Outcome(done, [])


def _remove_all(remote: Remote, paths: str, sudo: bool) -> bool:
    """`rm -rf` of the (shell-quoted) paths when any of them is there; whether it was."""
    if not remote.check(f"for d in {paths}; do [ -e \"$d\" ] && exit 0; done; exit 1", sudo=sudo):
        return False
    remote.change(f"rm -rf -- {paths}", sudo=sudo)
    return True


def remove_files(remote: Remote) -> Outcome:
    """Every whole file, unit and tree the modules declare, then the home directories they name."""
    done: List[str] = []
    with keeping_changes(done):
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
    return Outcome(done, [])


#: reset's own work among the steps' undos (phase 2): the packages after the steps' services are gone and
#: before the head's share goes; the whole files after every step's undo (mesh reads gpufab's backups).
OWN = undoes(
    "ops.reset",
    Undo(2, 40, lambda remote, packages: purge_packages(remote) if packages else Outcome(),
         settings=lambda config, inv, cli: bool(cli.get("packages"))),
    Undo(2, 80, lambda remote, s: remove_files(remote)),
)


def run_phase(remote: Remote, phase: Sequence[Tuple[Undo, Any]]) -> Outcome:
    """One phase's undos on one node, in order; a HostError keeps what was done before it."""
    done: List[str] = []
    notes: List[str] = []
    with keeping_changes(done):
        for undo, settings in phase:
            if undo.head is None or undo.head == remote.node.is_head:
                found = undo.run(remote, settings)
                done += found.changes
                notes += found.notes
    return Outcome(done, notes)


@dataclass(frozen=True)
class ResetSettings:
    #: Each undo with what it read (the share, Ray's venv, daemon.json's keys, `--packages`), in order.
    undos: Tuple[Tuple[Undo, Any], ...]

    def phase(self, n: int) -> List[Tuple[Undo, Any]]:
        return [(u, s) for u, s in self.undos if u.phase == n]


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ResetSettings:
    """What each undo needs, read as the step that set it up reads it; `--packages` from the CLI."""
    return ResetSettings(tuple((u, u.settings(config, inv, cli)) for u in undos()))


def reset_nodes(session: Session, nodes: Sequence[Node], s: ResetSettings,
                workers: Optional[int] = None) -> List[HostResult]:
    """Both phases, each on every node at once; a node that fails the first keeps everything for the next run."""
    first = run_step(session, nodes, lambda r: run_phase(r, s.phase(1)), workers=workers)
    going = [r.node for r in first if not r.failed]
    second = run_step(session, going, lambda r: run_phase(r, s.phase(2)), workers=workers)
    return merge_phases(nodes, [first, second])
