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
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from . import verify as verify_phase
from .connection import Session
from .errors import InputError
from .facts import NodeFacts
from .fanout import FAILED, SKIPPED, UNREACHABLE, HostResult
from .inventory import Inventory, Node
from .packages import Downloads
from .progress import Progress
from .remote import Remote
from .results import VERIFY_NAME, RunResults
from .runfiles import ssh_command
from .steps import Outcome, Seen, remote_for, run_step
from .declared import NAMES, Setting, declare

#: Inventory variable listing steps the cluster does without (e.g. [nfs]).
SKIP_VAR = "bootstrap_skip"

#: (config, inventory, the CLI's values by name) -> the step's settings.
SettingsReader = Callable[[Any, Inventory, Mapping[str, Any]], Any]



@dataclass(frozen=True)
class Column:
    """One column of the report table that a step fills.

    It stands where its step stands in the chain, after the step's earlier columns: no number
    to keep unique across modules, so a new step's column needs no other file to make room.
    """

    key: str  # its name in the JSON report
    title: str
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
    #: `gpufab status` on one node, after the chain's dry run: a quick look at what the step set up,
    #: reading only (never a write, nothing slow; core.status).
    status: Optional[Callable[["Run", Remote, Any], Seen]] = None
    #: `gpufab status` across nodes, reading only (membership in Ray): by node name.
    status_cluster: Optional[Callable[["Run", Sequence[Node], Any], Dict[str, Seen]]] = None
    #: False: what its dry run says it would do, it does on every run by design (a user step with no
    #: `creates`/`unless`), so `gpufab status` does not call that drift.
    drifts: bool = True


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
    """(steps, column) for every column of the chain, in table order: chain order, and within a
    step the order it declares them in.

    Steps of one kind (the user's own) share a column by its key, where the first of them
    stands; it says `skipped` only when none of them is in the run.
    """
    owners: Dict[str, List[str]] = {}
    first: Dict[str, Column] = {}
    for s in chain:
        for c in s.columns:
            owners.setdefault(c.key, []).append(s.name)
            first.setdefault(c.key, c)
    return [(owners[k], c) for k, c in first.items()]


class Run(RunResults):
    """One run of a chain: the scheduler that starts each step as soon as what it needs has ended,
    over the results it records (core.results); the verify phase is core.verify, the report core.reporting."""

    def __init__(self, session: Session, inv: Inventory, targets: Sequence[Node], steps: Sequence[Step],
                 settings: Mapping[str, Any], progress: Progress, dry_run: bool, workers: Optional[int]):
        super().__init__(progress)
        self.session = session
        self.inv = inv
        self.targets = list(targets)
        self.steps = list(steps)
        self.settings = dict(settings)
        self.dry_run = dry_run
        self.workers = workers
        self.remotes: Dict[str, Remote] = {n.name: remote_for(session, n, dry_run) for n in inv.nodes}
        #: Dry run: per step and node, which of the Remote's planned files it added.
        self.marks: Dict[Tuple[str, str], Tuple[int, int]] = {}
        #: Host aliases of the user's ssh config, for the report's quick-access lines.
        self.aliases: List[str] = []
        #: The steps running now (what a Ctrl-C interrupts).
        self.running: Set[str] = set()
        #: Per step, what it needs in this run (the steps are fixed once the run starts).
        self._needs: Dict[str, List[str]] = {}
        #: A dry run prints its plan step by step, so runs one step at a time; one that prints none
        #: (`gpufab status`) may run them side by side, as a real run does.
        self.side_by_side = not dry_run

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
                    if not self.side_by_side and (self.running or step is not pending[0]):
                        break
                    if not set(self.needs(step)) <= ended:
                        continue
                    pending.remove(step)
                    nodes = self._start(step)
                    if not nodes:
                        ended.add(step.name)
                        self.ended(step)
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
                self.record(step.name, results or [])
                ended.add(step.name)
                self.ended(step)
        except KeyboardInterrupt:
            # Ctrl-C reaches this thread only: end the steps' commands on the nodes now.
            self.session.interrupt()
            raise
        for step in self.steps:
            if step.finish is not None and not self.dry_run:
                step.finish(self, self.settings.get(step.name))

    def ended(self, step: Step) -> None:
        """`step` has ended on every node of the run (`gpufab status` starts its probes here)."""

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
                self.record(step.name, [HostResult(n, SKIPPED, reason=reason, blocked_by=why)])
        if step.needs_head:
            nodes = self._without_orphans(step, nodes)
        return nodes

    def _one(self, step: Step, nodes: List[Node]) -> List[HostResult]:
        before = {n.name: len(self.remotes[n.name].planned) for n in nodes}
        self.began(step.name)
        with self.progress.step(step.name, nodes):
            results = step.run(self, nodes, self.settings.get(step.name))
        for n in nodes:
            self.marks[(step.name, n.name)] = (before[n.name], len(self.remotes[n.name].planned))
        return results

    def interrupted(self) -> None:
        """Ctrl-C: the hosts in the steps still running fail there, so the report and
        the failed-hosts file name them and `--retry-failed` takes them up. A host cut off in two
        steps at once (the head's wheel download beside Docker's install) fails in both: which one
        the progress shows must not depend on which step the signal found first."""
        failed_before = set(self.failures)
        for step in sorted(self.running, key=self.names.index):
            self.record(step, [HostResult(n, FAILED, 130, reason="interrupted (Ctrl-C)")
                                for n in self.targets if self.result(step, n) is None and n.name not in failed_before])

    def live(self, step: str) -> Callable[[HostResult], None]:
        """Progress callback for steps whose per-host results are final as they come."""

        return lambda result: self.shown(step, result)

    def step_kw(self, step: str) -> Dict[str, Any]:
        """What a step's own phases pass to run_step: the run's remotes, bound and live progress."""
        return dict(workers=self.workers, remotes=self.remotes, on_result=self.live(step))

    def each(self, step: str, nodes: Sequence[Node], fn: Callable[[Remote], Outcome]) -> List[HostResult]:
        return run_step(self.session, nodes, fn, **self.step_kw(step))

    def _without_orphans(self, step: Step, nodes: Sequence[Node]) -> List[Node]:
        """Workers cannot do a step that needs the head once the head cannot."""
        head = self.inv.head
        why = self.blocked(step, head)
        if why is None:
            return list(nodes)
        failure = self.failures.get(head.name)
        at = failure.step if failure else why
        orphans = [n for n in nodes if not n.is_head]
        self.record(step.name, [HostResult(n, FAILED, 1, reason=f"the head {head.name} failed at {at}")
                                 for n in orphans])
        return [n for n in nodes if n.is_head]

    # ------------------------------------------------------------------ what steps may call (RunContext)

    def ssh(self, node: Node, aliases: Sequence[str]) -> str:
        return ssh_command(node, aliases, self.inv.known_hosts)

    def gather(self, remote: Remote) -> None:
        """Every step's preflight facts for one node (called inside preflight's round)."""
        verify_phase.gather(self, remote)

    def facts(self, node: Node) -> NodeFacts:
        """The node's facts of this run: its Remote's, so a step handed only the Remote shares them."""
        return self.remotes[node.name].facts

    def verify(self, nodes: Sequence[Node]) -> List[HostResult]:
        return verify_phase.verify(self, nodes)


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
