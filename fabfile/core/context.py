"""What a step's code may use of the run it is part of: the seam between ops and core, typed.

Steps took `run: Any` and reached into 24 attributes of core.chain.Run, the
scheduler, result store, verify phase and report builder in one. This Protocol
names what a step may read or call, with types, and nothing else; core.chain.Run
provides it. A step that needs something new from the run adds it here first,
where the reviewer of the seam sees it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Type, TypeVar

from .connection import Session
from .facts import NodeFacts
from .fanout import HostResult
from .inventory import Inventory, Node
from .progress import Progress
from .remote import Remote
from .steps import Outcome

T = TypeVar("T")


class RunContext(Protocol):
    """The run as a step sees it (core.chain.Run)."""

    session: Session
    inv: Inventory
    #: One Remote per inventory node, shared by the run's steps (a dry run's planned files live there).
    remotes: Dict[str, Remote]
    workers: Optional[int]
    dry_run: bool
    progress: Progress
    #: Every step of this run, in chain order, and each one's settings by step name.
    steps: List[Any]
    settings: Dict[str, Any]
    failures: Mapping[str, Any]
    results: Dict[str, List[HostResult]]
    #: The user's ssh config aliases, for the report's quick-access lines.
    aliases: List[str]

    def live(self, step: str) -> Callable[[HostResult], None]: ...

    def step_kw(self, step: str) -> Dict[str, Any]: ...

    def each(self, step: str, nodes: Sequence[Node], fn: Callable[[Remote], Outcome]) -> List[HostResult]: ...

    def keep(self, key: str, value: Any) -> None: ...

    def kept(self, key: str, kind: Type[T]) -> Optional[T]: ...

    def forget(self, key: str) -> Any: ...

    def result(self, step: str, node: Node) -> Optional[HostResult]: ...

    def value(self, step: str, node: Node) -> Any: ...

    def status(self, step: str, node: Node) -> str: ...

    def verified(self) -> List[Node]: ...

    def gather(self, remote: Remote) -> None:
        """Read every step's `gather` facts on this node (preflight's one pass)."""

    def gathered(self, step: str, node: Node) -> Any: ...

    def facts(self, node: Node) -> NodeFacts:
        """The node's facts of this run, each read once and shared by every step (core.facts)."""

    def checked(self, step: str, node: Node) -> Any: ...

    def cluster_checked(self, step: str, node: Node) -> Optional[HostResult]: ...

    def ssh(self, node: Node, aliases: Sequence[str]) -> str: ...
