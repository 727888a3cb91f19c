"""The verify phase: every step's checks read back from the nodes, per node in one pass, then across them.

Also preflight's one pass of every step's `gather`: both walk the run's steps
on one node at a time and leave what they read in the run's results.
"""

from __future__ import annotations

import time
from typing import Any, List, Sequence

from .fanout import FAILED, HostResult
from .inventory import Node
from .remote import Remote
from .results import VERIFY_NAME
from .steps import Outcome, merge_phases, run_step


def gather(run: Any, remote: Remote) -> None:
    """Every step's preflight facts for one node (called inside preflight's round)."""
    for step in run.steps:
        if step.gather is not None:
            run.note_gathered(step.name, remote.node, step.gather(remote))


def verify(run: Any, nodes: Sequence[Node]) -> List[HostResult]:
    """Every step's checks: per node in one pass, then the cluster-wide ones (none in a dry run)."""
    if run.dry_run:
        return []

    def per_node(remote: Remote) -> Outcome:
        notes: List[str] = []
        for step in run.steps:
            if step.check is not None:
                found = step.check(remote, run.settings.get(step.name))
                run.note_checked(step.name, remote.node, found.value)
                notes += found.notes
        return Outcome([], notes)

    phases = [run_step(run.session, nodes, per_node, workers=run.workers, remotes=run.remotes)]
    head_ok = any(n.is_head for n in nodes)
    for step in run.steps:
        if step.check_cluster is None:
            continue
        if not head_ok:
            found = [HostResult(n, FAILED, 1, reason=f"{step.name}: the head failed") for n in nodes]
        else:
            began = time.monotonic()
            found = step.check_cluster(run, nodes, run.settings.get(step.name))
            run.progress.line(f"{'...':<{run.progress.width}} {VERIFY_NAME:<9} {'checked':<11} "
                              f"{time.monotonic() - began:5.1f}s  {step.name} across the cluster")
        run.note_cluster_checked(step.name, found)
        phases.append(found)
    return merge_phases(nodes, phases)
