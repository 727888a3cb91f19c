"""What a run's steps found: per step and node, the results, and what each kept, gathered and checked.

The store the scheduler (core.chain.Run) fills and everything else reads: the
steps (through core.context.RunContext), the verify phase (core.verify) and the
report (core.reporting). It decides nothing.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Type, TypeVar

from .fanout import HostResult
from .inventory import Node
from .progress import Progress
from .runfiles import Failure

T = TypeVar("T")

VERIFY_NAME = "verify"


class RunResults:
    """Every step's results on every node, the first failure per node, and what steps kept for the cluster."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.results: Dict[str, List[HostResult]] = {}
        self.failures: Dict[str, Failure] = {}
        #: What a step's run found for the whole cluster and keeps for its report (the backend chosen...):
        #: read back typed (`kept`), so a reader never branches on what someone else stored.
        self._kept: Dict[str, Any] = {}
        self._gathered: Dict[Tuple[str, str], Any] = {}
        self._checked: Dict[Tuple[str, str], Any] = {}
        self._cluster_checked: Dict[str, List[HostResult]] = {}
        #: (step, node) whose result the progress display has shown already (live as it came).
        self._printed: Set[Tuple[str, str]] = set()
        #: Per node, per step it ran: (start, end) in seconds on the progress clock, for the report's
        #: timeline: from the step's start on its hosts to the host's result.
        self.timings: Dict[str, Dict[str, Tuple[float, float]]] = {}
        self._step_began: Dict[str, float] = {}

    def began(self, step: str) -> None:
        """`step` starts on its hosts now (a host skipped before this gets no span on the timeline)."""
        self._step_began[step] = time.monotonic()

    def _timed(self, step: str, result: HostResult) -> None:
        began = self._step_began.get(step)
        if began is None or step in self.timings.get(result.node.name, {}):
            return
        self.timings.setdefault(result.node.name, {})[step] = (round(began - self.progress.start, 3), round(time.monotonic() - self.progress.start, 3))

    def record(self, step: str, results: Sequence[HostResult]) -> None:
        self.results.setdefault(step, []).extend(results)
        for r in results:
            self._timed(step, r)
            if (step, r.node.name) not in self._printed:
                self.progress.done(step, r)
            if r.failed and r.node.name not in self.failures:
                self.failures[r.node.name] = Failure(r.node.name, r.node.public, step, r.reason)

    def shown(self, step: str, result: HostResult) -> None:
        """`result` was shown as it came (a step's live progress): recording it shows it no more."""
        self._printed.add((step, result.node.name))
        self._timed(step, result)
        self.progress.done(step, result)

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

    def note_gathered(self, step: str, node: Node, facts: Any) -> None:
        self._gathered[(step, node.name)] = facts

    def gathered(self, step: str, node: Node) -> Any:
        return self._gathered.get((step, node.name))

    def note_checked(self, step: str, node: Node, value: Any) -> None:
        self._checked[(step, node.name)] = value

    def checked(self, step: str, node: Node) -> Any:
        """What the step's `check` read on the node in the verify phase (None: not checked)."""
        return self._checked.get((step, node.name))

    def note_cluster_checked(self, step: str, found: List[HostResult]) -> None:
        self._cluster_checked[step] = found

    def cluster_checked(self, step: str, node: Node) -> Optional[HostResult]:
        return next((r for r in self._cluster_checked.get(step, []) if r.node.name == node.name), None)
