"""`gpufab status`: is the cluster still as the last bootstrap left it? Read-only, every node at once.

It knows no step by name. Two things answer it, both from the steps' own code:

- the chain's dry run: each step plans, reading only, what it would change on each node; a step that
  would change something has drifted since the last bootstrap (a managed file edited by hand, a unit
  stopped), named with what the next bootstrap would do about it;
- each step's `status` probe (and `status_cluster`, across nodes): a quick look, reading only, at what it
  set up (Ray membership, the share mounted and answering, limits in force).

Nothing is written on the nodes, and the saved report stays the last bootstrap's.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Sequence

from .chain import Run, Step
from .errors import HostError
from .fanout import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult, classify, fan_out
from .inventory import Node
from .remote import Remote
from .report import host_table
from .results import VERIFY_NAME
from .steps import Seen, remote_for

__all__ = ["ClusterStatus", "NodeStatus", "Seen", "StatusRun", "status_of", "verdict"]


@dataclass
class NodeStatus:
    node: str
    reachable: bool
    #: Per step with a probe, what it saw.
    seen: Dict[str, Seen] = field(default_factory=dict)
    #: Per step that would change something, what the next bootstrap would do.
    drift: Dict[str, List[str]] = field(default_factory=dict)
    #: Every problem, `step: what` (a step that drifted is one too).
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ClusterStatus:
    nodes: List[NodeStatus]
    #: The probes' columns, in chain order.
    columns: List[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        bad = [n.node for n in self.nodes if not n.ok]
        return (f"status: {len(self.nodes)} nodes: {len(self.nodes) - len(bad)} well, {len(bad)} with problems"
                + (f" ({', '.join(bad)})" if bad else "") + f"; {self.seconds:.1f}s; nothing was changed")

    def to_text(self) -> str:
        rows = []
        for n in self.nodes:
            cells = [n.node, "yes" if n.reachable else "NO"]
            for col in self.columns:
                seen = n.seen.get(col)
                cells.append("-" if seen is None else (seen.shown + (" (!)" if seen.problems else "")))
            cells.append(", ".join(n.drift) or ("none" if n.reachable else "-"))
            rows.append(cells)
        lines = [host_table(["Node", "Reachable", *self.columns, "Drift"], rows)]
        lines += [f"  {n.node}: {p}" for n in self.nodes for p in n.problems]
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps({
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "columns": self.columns,
            "nodes": [{"node": n.node, "ok": n.ok, "reachable": n.reachable,
                       "seen": {k: {"shown": v.shown, "problems": list(v.problems)} for k, v in n.seen.items()},
                       "drift": n.drift, "problems": n.problems} for n in self.nodes],
        }, indent=2) + "\n"


def verdict(names: Sequence[str], results: Dict[str, List[HostResult]], node: Node,
            seen: Dict[str, Seen], routine: Collection[str] = ()) -> NodeStatus:
    """One node's answer from the dry run's results (by step) and the probes' looks: facts in, verdict out.
    `routine`: the steps whose dry run says what they do on every run (no drift, whatever they would do)."""
    mine = {s: r for s, found in results.items() for r in found if r.node.name == node.name}
    gone = next((mine[s] for s in names if s in mine and mine[s].status == UNREACHABLE), None)
    if gone is not None:
        return NodeStatus(node.name, False, problems=[f"unreachable: {gone.reason}"])
    out = NodeStatus(node.name, True, dict(seen))
    for name in names:
        result = mine.get(name)
        if result is None or name == VERIFY_NAME:
            continue
        if result.status == FAILED:
            out.problems.append(f"{name}: {result.reason}")
        elif result.status == SKIPPED and not result.blocked_by:
            continue
        elif result.changes and name not in routine:
            out.drift[name] = list(result.changes)
        probe = seen.get(name)
        out.problems += [f"{name}: {p}" for p in (probe.problems if probe else ())]
        if name in out.drift:
            out.problems += [f"{name}: drift, bootstrap would do: {c}" for c in out.drift[name]]
    # A probe of a step the dry run has no result for (it ran no plan there) still counts.
    out.problems += [f"{k}: {p}" for k, v in seen.items() if k not in mine for p in v.problems]
    return out


class StatusRun(Run):
    """The chain's dry run, its steps side by side, each step's probes started as soon as it has ended.

    A probe reads through a Remote of its own, sharing the run's facts: the dry run's Remote shows the
    files the plan would write (its overlay), a probe must see the node's own.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.side_by_side = True
        #: By node, by step: what the probes saw.
        self.looks: Dict[str, Dict[str, Seen]] = {n.name: {} for n in self.targets}
        self._probes: List[threading.Thread] = []
        self._errors: List[BaseException] = []
        self._lock = threading.Lock()
        self._own: Dict[str, Remote] = {}

    def ended(self, step: Step) -> None:
        if step.status is None and step.status_cluster is None:
            return
        looked = [n for n in self.targets if self.status(step.name, n) in (OK, CHANGED)]
        if looked:
            probe = threading.Thread(target=self._probe, args=(step, looked), daemon=True,
                                     name=f"gpufab-status-{step.name}")
            probe.start()
            self._probes.append(probe)

    def _remote(self, node: Node) -> Remote:
        with self._lock:
            if node.name not in self._own:
                own = remote_for(self.session, node, dry_run=True)
                own.facts = self.remotes[node.name].facts
                # A look, not a step's work: bounded like a fact, so a stuck daemon is named in seconds.
                own.timeout = min(own.timeout, self.session.fact_timeout)
                self._own[node.name] = own
            return self._own[node.name]

    def _probe(self, step: Step, nodes: List[Node]) -> None:
        settings = self.settings.get(step.name)
        try:
            if step.status is not None:
                def one(_conn: Any, node: Node) -> HostResult:
                    try:
                        found = step.status(self, self._remote(node), settings)
                    except HostError as exc:
                        found = Seen("failed", (exc.reason,))
                    return HostResult(node, OK, value=found)

                for r in fan_out(self.session, nodes, one, workers=self.workers):
                    self._saw(step.name, r.node.name, r.value if not r.failed else Seen("failed", (r.reason,)))
            if step.status_cluster is not None:
                try:
                    seen = step.status_cluster(self, nodes, settings)
                except Exception as exc:  # noqa: BLE001 - a head that hangs or drops is an answer, not a traceback
                    reason = classify(exc, self.session.connect_timeout, self.session.known_hosts)[2]
                    seen = {n.name: Seen("failed", (reason,)) for n in nodes}
                for name, found in seen.items():
                    self._saw(step.name, name, found)
        except BaseException as exc:  # noqa: BLE001 - raised again in the driving thread
            self._errors.append(exc)

    def _saw(self, step: str, node: str, found: Seen) -> None:
        with self._lock:
            before = self.looks.setdefault(node, {}).get(step)
            self.looks[node][step] = found if before is None else Seen(f"{before.shown}, {found.shown}",
                                                                       before.problems + found.problems)

    def finished_probes(self) -> Dict[str, Dict[str, Seen]]:
        for probe in self._probes:
            probe.join()
        if self._errors:
            raise self._errors[0]
        return self.looks


def status_of(run: StatusRun) -> ClusterStatus:
    """The chain's dry run with every probe beside it: the cluster's answer."""
    began = time.monotonic()
    run.go()
    looks = run.finished_probes()
    columns = [s.name for s in run.steps if s.status is not None or s.status_cluster is not None]
    routine = {s.name for s in run.steps if not s.drifts}
    nodes = [verdict(run.names, run.results, n, looks.get(n.name, {}), routine) for n in run.targets]
    return ClusterStatus(nodes, columns, time.monotonic() - began)
