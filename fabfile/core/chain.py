"""A chain of steps over one Session: the driver `bootstrap` hands its registry to.

It knows no step by name. Each `Step` record says how it reads its settings,
how it runs (every host at once, or head then workers, inside its own `run`),
what it reads during preflight, how it checks a node and the cluster in the
verify phase, and which report cells and lines it owns. A host that fails a
step is dropped from the later ones; workers cannot go on with a step that
needs the head once the head has failed.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type, TypeVar, Union

from .connection import Session
from .errors import InputError
from .fanout import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult, worst_exit_code
from .inventory import Inventory, Node
from .packages import Downloads
from .progress import Progress
from .remote import Remote
from .report import summary_line
from .runfiles import Failure, ssh_command
from .runreport import LEADING, TRAILING, Report
from .steps import Outcome, merge_phases, remote_for, run_step
from .declared import NAMES, Setting, declare

#: Inventory variable listing steps the cluster does without (e.g. [nfs]).
SKIP_VAR = "bootstrap_skip"

#: (config, inventory, the CLI's values by name) -> the step's settings.
SettingsReader = Callable[[Any, Inventory, Mapping[str, Any]], Any]

T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    """One column of the report table that a step fills."""

    key: str  # its name in the JSON report
    title: str
    #: Where it stands among the steps' columns (lower first).
    order: int
    cell: Callable[["Run", Node], str]


@dataclass(frozen=True)
class Step:
    name: str
    settings: SettingsReader
    #: Runs the step on these nodes (all at once, or in its own order): one result per node.
    run: Callable[["Run", Sequence[Node], Any], List[HostResult]]
    #: Workers cannot do it once the head has failed this run.
    needs_head: bool = False
    #: False: nothing is configured for this step, so the chain leaves it out (unless --only names it).
    wanted: Callable[[Any], bool] = lambda settings: True
    optional: bool = True
    #: Older names still accepted by --skip/--only.
    aliases: Tuple[str, ...] = ()
    #: Facts read on each node in the preflight round, for the step's own run.
    gather: Optional[Callable[[Remote], Any]] = None
    #: Verify: read back on each node what the step set up (a HostError fails the node).
    check: Optional[Callable[[Remote, Any], Outcome]] = None
    #: Verify: a check across nodes (a round trip through the share, membership in Ray).
    check_cluster: Optional[Callable[["Run", Sequence[Node], Any], List[HostResult]]] = None
    columns: Tuple[Column, ...] = ()
    #: Report lines: (verification lines, warnings).
    report: Optional[Callable[["Run", Any], Tuple[List[str], List[str]]]] = None
    #: Quick-access lines (how to reach what the step set up).
    access: Optional[Callable[["Run", Any], List[str]]] = None
    #: Its findings for the JSON report, as plain data (numbers a script can read).
    data: Optional[Callable[["Run", Any], Any]] = None
    #: The steps it needs, by name (those not in this run are taken as done);
    #: None: every step before it in the chain (the user's own steps, verify).
    needs: Optional[Tuple[str, ...]] = None
    #: After the whole chain (a server the step started for the others, stopped).
    finish: Optional[Callable[["Run", Any], None]] = None
    #: What the step would download on a node (read before it runs, so the head fetches it once for all).
    downloads: Optional[Callable[[Remote, Any], Downloads]] = None


def listed(value: Union[None, str, Sequence[str]]) -> List[str]:
    """`docker, nfs` (or a YAML list) -> ['docker', 'nfs']: the names as written."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(x).strip() for x in items if str(x).strip()]


def step_list(chain: Sequence[Step], value: Union[None, str, Sequence[str]], what: str) -> List[str]:
    """`docker,nfs` (or a YAML list) -> ['docker', 'storage'], each an optional step of `chain`."""
    aliases = {a: s.name for s in chain for a in s.aliases}
    names = [aliases.get(x, x) for x in listed(value)]
    optional = [s.name for s in chain if s.optional]
    for name in names:
        fixed = next((s for s in chain if s.name == name and not s.optional), None)
        if fixed is not None:
            raise InputError(f"{name} always runs, every step needs its facts: it is not one of the optional steps "
                             f"{what} takes ({', '.join(optional)})", path=what)
        if name not in optional:
            raise InputError(f"unknown step {name!r} (steps: {', '.join(optional)})", path=what)
    return names


def select_steps(chain: Sequence[Step], skip: Optional[str], only: Optional[str],
                 disabled: Union[None, str, Sequence[str]]) -> List[Step]:
    """The steps of this run, in chain order.

    `--only` names exactly what runs (an explicit choice beats the inventory);
    otherwise every step runs except `--skip` and the inventory's `bootstrap_skip`.
    """
    skipped = step_list(chain, skip, "--skip")
    chosen = step_list(chain, only, "--only")
    off = step_list(chain, disabled, SKIP_VAR)
    if skipped and chosen:
        raise InputError("give --skip or --only, not both", path="--only")
    if chosen:
        return [s for s in chain if not s.optional or s.name in chosen]
    return [s for s in chain if not s.optional or (s.name not in skipped and s.name not in off)]


def columns_of(chain: Sequence[Step]) -> List[Tuple[List[str], Column]]:
    """(steps, column) for every column of the chain, in table order.

    Steps of one kind (the user's own) share a column by its key; it says
    `skipped` only when none of them is in the run.
    """
    owners: Dict[str, List[str]] = {}
    first: Dict[str, Column] = {}
    for s in chain:
        for c in s.columns:
            owners.setdefault(c.key, []).append(s.name)
            first.setdefault(c.key, c)
    return sorted(((owners[k], c) for k, c in first.items()), key=lambda sc: sc[1].order)


class Run:
    """One run of a chain: the hosts still going, every step's results, the dry-run plan."""

    def __init__(self, session: Session, inv: Inventory, targets: Sequence[Node], steps: Sequence[Step],
                 settings: Mapping[str, Any], progress: Progress, dry_run: bool, workers: Optional[int]):
        self.session = session
        self.inv = inv
        self.targets = list(targets)
        self.steps = list(steps)
        self.settings = dict(settings)
        self.progress = progress
        self.dry_run = dry_run
        self.workers = workers
        self.remotes: Dict[str, Remote] = {n.name: remote_for(session, n, dry_run) for n in inv.nodes}
        self.results: Dict[str, List[HostResult]] = {}
        self.failures: Dict[str, Failure] = {}
        #: What a step's run found for the whole cluster and keeps for its report (the backend chosen...):
        #: read back typed (`kept`), so a reader never branches on what someone else stored.
        self._kept: Dict[str, Any] = {}
        self._gathered: Dict[Tuple[str, str], Any] = {}
        self._checked: Dict[Tuple[str, str], Any] = {}
        self._cluster_checked: Dict[str, List[HostResult]] = {}
        #: Dry run: per step and node, which of the Remote's planned files it added.
        self.marks: Dict[Tuple[str, str], Tuple[int, int]] = {}
        self._printed: Set[Tuple[str, str]] = set()
        #: Host aliases of the user's ssh config, for the report's quick-access lines.
        self.aliases: List[str] = []
        #: The steps running now (what a Ctrl-C interrupts).
        self.running: Set[str] = set()
        #: Per step, what it needs in this run (the steps are fixed once the run starts).
        self._needs: Dict[str, List[str]] = {}

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.steps]

    # ------------------------------------------------------------------ driving

    def needs(self, step: Step) -> List[str]:
        """The steps of this run that `step` needs, directly or through others, in chain order."""
        if step.name not in self._needs:
            self._needs[step.name] = self._find_needs(step)
        return self._needs[step.name]

    def _find_needs(self, step: Step) -> List[str]:
        names = self.names
        at = names.index(step.name)
        found: Set[str] = set()
        todo = [step]
        while todo:
            s = todo.pop()
            direct = names[:names.index(s.name)] if s.needs is None else [n for n in s.needs if n in names]
            for name in direct:
                if name not in found:
                    found.add(name)
                    todo.append(self.steps[names.index(name)])
        return [n for n in names[:at] if n in found]

    def blocked(self, step: Step, node: Node) -> Optional[str]:
        """The first step `step` needs that failed on `node` (or was skipped because of a failure);
        or any step that found the host unreachable: nothing more can run there."""
        gone = self.failures.get(node.name)
        if gone is not None and self.status(gone.step, node) == UNREACHABLE:
            return gone.step
        for name in self.needs(step):
            found = self.result(name, node)
            if found is not None and (found.failed or found.blocked_by):
                return found.blocked_by or name
        return None

    def go(self) -> None:
        """Every step, each as soon as the steps it needs have ended (one at a time in a dry run)."""
        pending = list(self.steps)
        ended: Set[str] = set()
        finished: "queue.Queue[Tuple[Step, Optional[List[HostResult]], Optional[BaseException]]]" = queue.Queue()

        def work(step: Step, nodes: List[Node]) -> None:
            try:
                finished.put((step, self._one(step, nodes), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the driving thread
                finished.put((step, None, exc))

        try:
            while pending or self.running:
                for step in list(pending):
                    if self.dry_run and (self.running or step is not pending[0]):
                        break
                    if not set(self.needs(step)) <= ended:
                        continue
                    pending.remove(step)
                    nodes = self._start(step)
                    if not nodes:
                        ended.add(step.name)
                        continue
                    self.running.add(step.name)
                    # Daemon threads: after Ctrl-C the process ends, whatever a step is still waiting on.
                    threading.Thread(target=work, args=(step, nodes), daemon=True,
                                     name=f"gpufab-step-{step.name}").start()
                if not self.running:
                    continue
                step, results, exc = finished.get()
                self.running.discard(step.name)
                if exc is not None:
                    raise exc
                self._record(step.name, results or [])
                ended.add(step.name)
        except KeyboardInterrupt:
            # Ctrl-C reaches this thread only: end the steps' commands on the nodes now.
            self.session.interrupt()
            raise
        for step in self.steps:
            if step.finish is not None and not self.dry_run:
                step.finish(self, self.settings.get(step.name))

    def _start(self, step: Step) -> List[Node]:
        """The nodes `step` runs on; those a failure keeps out are recorded as skipped or failed."""
        base = self.targets
        if step.name == VERIFY_NAME:
            base = [n for n in self.inv.nodes if n.name not in self.failures or n in self.targets]
        nodes: List[Node] = []
        for n in base:
            why = self.blocked(step, n)
            if why is None:
                nodes.append(n)
            elif n in self.targets:
                reason = (f"needs {why}, which failed on this host" if why in self.needs(step)
                          else f"unreachable since {why}")
                self._record(step.name, [HostResult(n, SKIPPED, reason=reason, blocked_by=why)])
        if step.needs_head:
            nodes = self._without_orphans(step, nodes)
        return nodes

    def _one(self, step: Step, nodes: List[Node]) -> List[HostResult]:
        before = {n.name: len(self.remotes[n.name].planned) for n in nodes}
        with self.progress.step(step.name, nodes):
            results = step.run(self, nodes, self.settings.get(step.name))
        for n in nodes:
            self.marks[(step.name, n.name)] = (before[n.name], len(self.remotes[n.name].planned))
        return results

    def interrupted(self) -> None:
        """Ctrl-C: the hosts in the steps still running fail there, so the report and
        the failed-hosts file name them and `--retry-failed` takes them up."""
        for step in sorted(self.running, key=self.names.index):
            self._record(step, [HostResult(n, FAILED, 130, reason="interrupted (Ctrl-C)")
                                for n in self.targets if self.result(step, n) is None and n.name not in self.failures])

    def live(self, step: str) -> Callable[[HostResult], None]:
        """Progress callback for steps whose per-host results are final as they come."""

        def done(result: HostResult) -> None:
            self._printed.add((step, result.node.name))
            self.progress.done(step, result)

        return done

    def step_kw(self, step: str) -> Dict[str, Any]:
        """What a step's own phases pass to run_step: the run's remotes, bound and live progress."""
        return dict(workers=self.workers, remotes=self.remotes, on_result=self.live(step))

    def each(self, step: str, nodes: Sequence[Node], fn: Callable[[Remote], Outcome]) -> List[HostResult]:
        return run_step(self.session, nodes, fn, **self.step_kw(step))

    def keep(self, key: str, value: Any) -> None:
        """Keep a step's cluster-wide finding for its report and the steps that need it (key: its step's name)."""
        self._kept[key] = value

    def kept(self, key: str, kind: Type[T]) -> Optional[T]:
        """What `keep` kept under `key`, if it is a `kind`; else None."""
        value = self._kept.get(key)
        return value if isinstance(value, kind) else None

    def forget(self, key: str) -> Any:
        """Take a kept finding out (what it was, or None)."""
        return self._kept.pop(key, None)

    def _record(self, step: str, results: Sequence[HostResult]) -> None:
        self.results.setdefault(step, []).extend(results)
        for r in results:
            if (step, r.node.name) not in self._printed:
                self.progress.done(step, r)
            if r.failed and r.node.name not in self.failures:
                self.failures[r.node.name] = Failure(r.node.name, r.node.public, step, r.reason)

    def _without_orphans(self, step: Step, nodes: Sequence[Node]) -> List[Node]:
        """Workers cannot do a step that needs the head once the head cannot."""
        head = self.inv.head
        why = self.blocked(step, head)
        if why is None:
            return list(nodes)
        failure = self.failures.get(head.name)
        at = failure.step if failure else why
        orphans = [n for n in nodes if not n.is_head]
        self._record(step.name, [HostResult(n, FAILED, 1, reason=f"the head {head.name} failed at {at}")
                                 for n in orphans])
        return [n for n in nodes if n.is_head]

    # ------------------------------------------------------------------ what steps found

    def result(self, step: str, node: Node) -> Optional[HostResult]:
        return next((r for r in self.results.get(step, []) if r.node.name == node.name), None)

    def value(self, step: str, node: Node) -> Any:
        found = self.result(step, node)
        return found.value if found else None

    def status(self, step: str, node: Node) -> str:
        found = self.result(step, node)
        return found.status if found else "not run"

    def verified(self) -> List[Node]:
        """The nodes that came through the verify phase."""
        return [r.node for r in self.results.get(VERIFY_NAME, []) if not r.failed]

    def gathered(self, step: str, node: Node) -> Any:
        return self._gathered.get((step, node.name))

    def checked(self, step: str, node: Node) -> Any:
        """What the step's `check` read on the node in the verify phase (None: not checked)."""
        return self._checked.get((step, node.name))

    def cluster_checked(self, step: str, node: Node) -> Optional[HostResult]:
        return next((r for r in self._cluster_checked.get(step, []) if r.node.name == node.name), None)

    def gather(self, remote: Remote) -> None:
        """Every step's preflight facts for one node (called inside preflight's round)."""
        for step in self.steps:
            if step.gather is not None:
                self._gathered[(step.name, remote.node.name)] = step.gather(remote)

    # ------------------------------------------------------------------ verify

    def verify(self, nodes: Sequence[Node]) -> List[HostResult]:
        """Every step's checks: per node in one pass, then the cluster-wide ones."""
        if self.dry_run:
            return []

        def per_node(remote: Remote) -> Outcome:
            notes: List[str] = []
            for step in self.steps:
                if step.check is not None:
                    found = step.check(remote, self.settings.get(step.name))
                    self._checked[(step.name, remote.node.name)] = found.value
                    notes += found.notes
            return Outcome([], notes)

        phases = [run_step(self.session, nodes, per_node, workers=self.workers, remotes=self.remotes)]
        head_ok = any(n.is_head for n in nodes)
        for step in self.steps:
            if step.check_cluster is None:
                continue
            if not head_ok:
                found = [HostResult(n, FAILED, 1, reason=f"{step.name}: the head failed") for n in nodes]
            else:
                began = time.monotonic()
                found = step.check_cluster(self, nodes, self.settings.get(step.name))
                self.progress.line(f"{'...':<{self.progress.width}} {VERIFY_NAME:<9} {'checked':<11} "
                                   f"{time.monotonic() - began:5.1f}s  {step.name} across the cluster")
            self._cluster_checked[step.name] = found
            phases.append(found)
        return merge_phases(nodes, phases)

    # ------------------------------------------------------------------ the report

    def result_cell(self, node: Node) -> str:
        failure = self.failures.get(node.name)
        if failure:
            blocked = self.blocked_steps(node)
            after = f"; skipped because of it: {', '.join(blocked)}" if blocked else ""
            return f"failed at {failure.step}: {failure.reason}{after}"
        if node.name not in {n.name for n in self.targets}:
            return "ok (verified only)" if self.status(VERIFY_NAME, node) == OK else "not in this run"
        statuses = [self.status(s, node) for s in self.names]
        result = CHANGED if CHANGED in statuses else OK
        skipped = [s for s in self.names if self.status(s, node) == SKIPPED]
        return f"{result}; skipped: {', '.join(skipped)}" if skipped else result

    def blocked_steps(self, node: Node) -> List[str]:
        """The steps skipped on `node` because a step they need failed there."""
        return [s for s in self.names if (self.result(s, node) or HostResult(node, OK)).blocked_by]

    def report(self, chain: Sequence[Step], inventory_label: str, aliases: Sequence[str],
               failed_file: Optional[str]) -> Report:
        self.aliases = list(aliases)
        cols = columns_of(chain)
        rows = []
        for n in self.inv.nodes:
            row: Dict[str, Any] = {"node": n.name, "public": n.public, "private": n.private or "-", "nid": n.nid,
                                   "role": n.role}
            for owners, col in cols:
                row[col.key] = col.cell(self, n) if set(owners) & set(self.names) else "skipped"
            row["result"] = self.result_cell(n)
            rows.append(row)
        checks: List[str] = []
        warnings: List[str] = []
        results: Dict[str, Any] = {}
        access = self.access_lines()
        for step in self.steps:
            if step.report is not None:
                c, w = step.report(self, self.settings.get(step.name))
                checks += c
                warnings += w
            if step.access is not None:
                access += step.access(self, self.settings.get(step.name))
            if step.data is not None:
                results[step.name] = step.data(self, self.settings.get(step.name))
        warnings += [f"{name} failed at {f.step}: {f.reason}" for name, f in self.failures.items()]
        access.append("inv report")
        if failed_file:
            access.append("inv bootstrap --retry-failed")
        everything = [r for results in self.results.values() for r in results]
        ran = [n for n in self.inv.nodes if any(r.node.name == n.name for r in everything)]
        return Report(
            created=time.strftime("%Y-%m-%d %H:%M:%S %z"),
            inventory=inventory_label,
            steps=self.names,
            nodes=rows,
            columns=[*LEADING, *[(c.key, c.title) for _, c in cols], *TRAILING],
            checks=checks,
            warnings=warnings,
            access=access,
            summary=summary_line("bootstrap", merge_phases(ran, list(self.results.values())), changed=True),
            exit_code=worst_exit_code(everything),
            step_status={n.name: {s: self.status(s, n) for s in self.names} for n in self.inv.nodes},
            results=results,
        )

    def ssh(self, node: Node, aliases: Sequence[str]) -> str:
        return ssh_command(node, aliases, self.inv.known_hosts)

    def access_lines(self) -> List[str]:
        nodes = self.inv.nodes
        shown = nodes if len(nodes) <= 4 else nodes[:2]
        lines = [self.ssh(n, self.aliases) for n in shown]
        if len(shown) < len(nodes):
            lines.append(f"... and {len(nodes) - len(shown)} more nodes the same way")
        return lines

    def print_plan(self) -> int:
        """The dry run's answer: per host and step, what would change, with diffs."""
        would = 0
        for node in self.targets:
            remote = self.remotes[node.name]
            print(f"== {node.name} ({node.public})")
            for step in self.names[1:]:
                result = self.result(step, node)
                if result is None:
                    continue
                if result.failed:
                    print(f"  {step}: would fail: {result.reason}")
                    continue
                if result.status == SKIPPED:
                    print(f"  {step}: would be skipped: {result.reason}")
                    continue
                changes = result.changes
                if not changes:
                    notes = "; ".join(result.notes)
                    print(f"  {step}: ok, nothing to change" + (f" ({notes})" if notes else ""))
                    continue
                would += 1
                print(f"  {step}: would change:")
                for line in changes:
                    print(f"    - {line}")
                start, stop = self.marks.get((step, node.name), (0, 0))
                for change in remote.planned[start:stop]:
                    print("".join(f"      {line}\n" for line in change.diff().splitlines()), end="")
        everything = [r for results in self.results.values() for r in results]
        failed = sorted({r.node.name for r in everything if r.failed})
        print(f"bootstrap --dry-run: {len(self.targets)} hosts, {would} host-steps would change, "
              f"{len(failed)} hosts failed{' (' + ', '.join(failed) + ')' if failed else ''}; nothing was changed")
        return worst_exit_code(everything)


VERIFY_NAME = "verify"

#: The last step of every chain: each step's checks, read back from the nodes.
VERIFY = Step(VERIFY_NAME, settings=lambda config, inv, cli: None,
              run=lambda run, nodes, settings: run.verify(nodes))


def every_node(name: str, apply: Callable[[Remote, Any], Outcome]) -> Callable[[Run, Sequence[Node], Any], List[HostResult]]:
    """A step that runs on all its hosts at once: `apply(remote, settings)` each."""

    def run_all(run: Run, nodes: Sequence[Node], settings: Any) -> List[HostResult]:
        return run.each(name, nodes, lambda remote: apply(remote, settings))

    return run_all


DECLARED = declare(
    "core.chain",
    Setting("bootstrap_skip", "steps this cluster always does without (`[nfs, tools]`)", "none",
            kind=NAMES),
)
