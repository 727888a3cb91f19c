"""A finished run as the user reads it: the report (table, checks, access lines) and a dry run's plan.

Built from the run's results (core.results) and the steps' own columns and
lines; the scheduler (core.chain.Run) knows nothing of either.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

from .chain import Run, Step, columns_of
from .fanout import CHANGED, OK, SKIPPED, HostResult, worst_exit_code
from .inventory import Node
from .report import summary_line
from .results import VERIFY_NAME
from .runreport import LEADING, TRAILING, Report
from .steps import merge_phases


def blocked_steps(run: Run, node: Node) -> List[str]:
    """The steps skipped on `node` because a step they need failed there."""
    return [s for s in run.names if (run.result(s, node) or HostResult(node, OK)).blocked_by]


def result_cell(run: Run, node: Node) -> str:
    failure = run.failures.get(node.name)
    if failure:
        blocked = blocked_steps(run, node)
        after = f"; skipped because of it: {', '.join(blocked)}" if blocked else ""
        return f"failed at {failure.step}: {failure.reason}{after}"
    if node.name not in {n.name for n in run.targets}:
        return "ok (verified only)" if run.status(VERIFY_NAME, node) == OK else "not in this run"
    statuses = [run.status(s, node) for s in run.names]
    result = CHANGED if CHANGED in statuses else OK
    skipped = [s for s in run.names if run.status(s, node) == SKIPPED]
    return f"{result}; skipped: {', '.join(skipped)}" if skipped else result


def access_lines(run: Run) -> List[str]:
    nodes = run.inv.nodes
    shown = nodes if len(nodes) <= 4 else nodes[:2]
    lines = [run.ssh(n, run.aliases) for n in shown]
    if len(shown) < len(nodes):
        lines.append(f"... and {len(nodes) - len(shown)} more nodes the same way")
    return lines


def build_report(run: Run, chain: Sequence[Step], inventory_label: str, aliases: Sequence[str],
                 failed_file: Optional[str]) -> Report:
    run.aliases = list(aliases)
    cols = columns_of(chain)
    rows = []
    for n in run.inv.nodes:
        row: Dict[str, Any] = {"node": n.name, "public": n.public, "private": n.private or "-", "nid": n.nid,
                               "role": n.role}
        for owners, col in cols:
            row[col.key] = col.cell(run, n) if set(owners) & set(run.names) else "skipped"
        row["result"] = result_cell(run, n)
        rows.append(row)
    checks: List[str] = []
    warnings: List[str] = []
    results: Dict[str, Any] = {}
    access = access_lines(run)
    for step in run.steps:
        if step.report is not None:
            c, w = step.report(run, run.settings.get(step.name))
            checks += c
            warnings += w
        if step.access is not None:
            access += step.access(run, run.settings.get(step.name))
        if step.data is not None:
            results[step.name] = step.data(run, run.settings.get(step.name))
    warnings += [f"{name} failed at {f.step}: {f.reason}" for name, f in run.failures.items()]
    access.append("inv report")
    if failed_file:
        access.append("inv bootstrap --retry-failed")
    everything = [r for results in run.results.values() for r in results]
    ran = [n for n in run.inv.nodes if any(r.node.name == n.name for r in everything)]
    return Report(
        created=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        inventory=inventory_label,
        steps=run.names,
        nodes=rows,
        columns=[*LEADING, *[(c.key, c.title) for _, c in cols], *TRAILING],
        checks=checks,
        warnings=warnings,
        access=access,
        summary=summary_line("bootstrap", merge_phases(ran, list(run.results.values())), changed=True),
        exit_code=worst_exit_code(everything),
        step_status={n.name: {s: run.status(s, n) for s in run.names} for n in run.inv.nodes},
        results=results,
        timings={n.name: {s: list(span) for s, span in run.timings[n.name].items()}
                 for n in run.inv.nodes if n.name in run.timings},
    )


def print_plan(run: Run) -> int:
    """The dry run's answer: per host and step, what would change, with diffs."""
    would = 0
    for node in run.targets:
        remote = run.remotes[node.name]
        print(f"== {node.name} ({node.public})")
        for step in run.names[1:]:
            result = run.result(step, node)
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
            start, stop = run.marks.get((step, node.name), (0, 0))
            for change in remote.planned[start:stop]:
                print("".join(f"      {line}\n" for line in change.diff().splitlines()), end="")
    everything = [r for results in run.results.values() for r in results]
    failed = sorted({r.node.name for r in everything if r.failed})
    print(f"bootstrap --dry-run: {len(run.targets)} hosts, {would} host-steps would change, "
          f"{len(failed)} hosts failed{' (' + ', '.join(failed) + ')' if failed else ''}; nothing was changed")
    return worst_exit_code(everything)
