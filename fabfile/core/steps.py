"""Running a setup step on many nodes and reporting it the same way every time.

A step is a function `(remote) -> Outcome`: it reads the node's state, plans
the difference in pure code and applies only that. Here it is fanned out,
each host's outcome becomes `ok` (nothing to do), `changed` (what changed) or
`failed` (why), and the run ends with one table and the worst exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from invoke.exceptions import Exit

from .cluster import open_session, select_nodes
from .connection import Session
from .errors import number_option
from .fanout import CHANGED, OK, HostResult, fan_out, worst_exit_code
from .inventory import Node
from .remote import Remote
from .report import host_table, summary_line


@dataclass
class Outcome:
    """What a step did on one host."""

    changes: List[str] = field(default_factory=list)
    #: Facts worth a line in the report that are not changes ("nofile 65536").
    notes: List[str] = field(default_factory=list)
    #: The step's typed record of this host (what the report shows), if any.
    value: Any = None


@dataclass(frozen=True)
class Seen:
    """A step's read-only look at one node for `gpufab status` (core.status): its cell, and what is wrong
    there (nothing: all is well)."""

    shown: str
    problems: Tuple[str, ...] = ()


StepFn = Callable[[Remote], Outcome]


def remote_for(session: Session, node: Node, dry_run: bool = False) -> Remote:
    return Remote(session.connection(node), node, password=lambda: session.sudo_password(node),
                  timeout=session.step_timeout,
                  session=session, dry_run=dry_run)


def run_step(
    session: Session,
    nodes: Sequence[Node],
    step: StepFn,
    *,
    workers: Optional[int] = None,
    on_result: Optional[Callable[[HostResult], None]] = None,
    remotes: Optional[Dict[str, Remote]] = None,
) -> List[HostResult]:
    """Run `step` on every node in parallel; one HostResult each, in order.

    `remotes` hands each node the same Remote across steps (a dry run keeps
    what earlier steps would have written there).
    """

    def one(_conn: Any, node: Node) -> HostResult:
        remote = remotes[node.name] if remotes is not None else remote_for(session, node)
        outcome = step(remote)
        status = CHANGED if outcome.changes else OK
        return HostResult(node, status, changes=list(outcome.changes), notes=list(outcome.notes), value=outcome.value)

    return fan_out(session, nodes, one, workers=workers, on_result=on_result)


def needed(result: HostResult, title: str) -> Any:
    """The value a task cannot go on without (the head's answer); that host's failure ends the run in one line.

    Called outside fan_out, an unreachable head was paramiko's own exception and a traceback;
    here it is the reason a host table would give (`connection refused`), with that host's exit code.
    """
    if result.failed:
        raise Exit(f"{title}: cannot go on without {result.node.name}: {result.reason}", code=result.exit_code or 1)
    return result.value


def on_node(session: Session, node: Node, fn: Callable[[Remote], Any], title: str) -> Any:
    """`fn(remote)` on one node the task cannot do without, as `needed` reports it."""
    (result,) = run_step(session, [node], lambda remote: Outcome(value=fn(remote)))
    return needed(result, title)


def details(result: HostResult) -> str:
    """The report cell of one host: its changes, notes, and failure reason."""
    lines = [*result.changes, *result.notes]
    if result.failed:
        lines.append(f"FAILED: {result.reason}")
    return "\n".join(lines) or "-"


def step_table(results: Sequence[HostResult]) -> str:
    rows = [(r.node.name, r.status, f"{r.seconds:.1f}s", details(r)) for r in results]
    return host_table(["Node", "Status", "Time", "Details"], rows)


def report_step(
    title: str,
    results: Sequence[HostResult],
    table: Callable[[Sequence[HostResult]], str] = step_table,
) -> None:
    """Print the step's table and summary; exit non-zero when a host failed."""
    print(title)
    print(table(results))
    print(summary_line(title, results, changed=True))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)


def run_task(
    config: Any,
    title: str,
    make_step: Callable[[Session], StepFn],
    *,
    nodes: Optional[str] = None,
    workers: Optional[str] = None,
    table: Callable[[Sequence[HostResult]], str] = step_table,
) -> List[HostResult]:
    """The body of a one-step task: session, `--nodes`, fan-out, report, exit code.

    `make_step` reads settings once (they may come from the inventory) and
    returns the per-host function.
    """
    with open_session(config) as session:
        step = make_step(session)
        targets = select_nodes(session.inventory, nodes)
        results = run_step(session, targets, step, workers=number_option(workers, "--workers"))
    report_step(title, results, table)
    return results


def merge_phases(nodes: Sequence[Node], phases: Sequence[Sequence[HostResult]]) -> List[HostResult]:
    """One result per node from several phases of a task (install, start, wait...).

    A node failed if any phase failed it (the first failure is its reason),
    changed if any phase changed it; changes and notes are kept in order, and
    the last phase that found a value gives it.
    """
    merged: List[HostResult] = []
    for node in nodes:
        mine = [r for phase in phases for r in phase if r.node.name == node.name]
        failure = next((r for r in mine if r.failed), None)
        status = failure.status if failure else (CHANGED if any(r.status == CHANGED for r in mine) else OK)
        result = HostResult(
            node,
            status,
            failure.exit_code if failure else 0,
            reason=failure.reason if failure else "",
            seconds=sum(r.seconds for r in mine),
        )
        values = [r.value for r in mine if r.value is not None]
        result.value = values[-1] if values else None
        result.changes = [x for r in mine for x in r.changes]
        result.notes = [x for r in mine for x in r.notes]
        merged.append(result)
    return merged
