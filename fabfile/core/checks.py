"""Checks of their own that a step carries through its rounds: the GPU doctor and the fleet's comparison
ride on preflight, declared in their own modules and placed on it by the chain (ops/chain.py).

A check is not a step: it has no name in --skip, no status of its own in the report, no column of
results. It reads nodes in its carrier's round (a first look, in preflight's pass over the hosts) and
in the verify phase, fails nodes across the cluster, and owns report cells, lines and data, all of
which reach the report through the carrying step, exactly as if that step had them itself. So the
carrier knows no check by name and a check knows no step: each reads what it found through `Carried`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

from .context import RunContext
from .fanout import HostResult
from .inventory import Node
from .remote import Remote
from .steps import Seen


class Carried:
    """What one check found, through the step that carries it: the carrier's value on a node holds the
    checks' first looks (`looks`, by check name), its verify-phase value their checks (a mapping by name)."""

    def __init__(self, run: RunContext, carrier: str, name: str):
        self.run = run
        self.carrier = carrier
        self.name = name

    def looked(self, node: Node) -> Any:
        """The check's first look at `node` in its carrier's round (None: it did not look)."""
        found = self.run.value(self.carrier, node)
        return getattr(found, "looks", {}).get(self.name) if found is not None else None

    def checked(self, node: Node) -> Any:
        """What the check read on `node` in the verify phase (None: not checked)."""
        found = self.run.checked(self.carrier, node)
        return found.get(self.name) if found is not None else None

    def was_checked(self, node: Node) -> bool:
        """The verify phase read `node` (its carrier's check ran there)."""
        return self.run.checked(self.carrier, node) is not None

    def carrier_value(self, node: Node) -> Any:
        """The carrying step's own value on `node` (preflight's: OS, GPU count, NIC...)."""
        return self.run.value(self.carrier, node)


@dataclass(frozen=True)
class CheckColumn:
    """A report column a check fills (core.chain.Column, its cell read through `Carried`): it stands after
    its carrier's own columns, in the order the chain carries the checks."""

    key: str
    title: str
    cell: Callable[[Carried, Node], str]


@dataclass(frozen=True)
class Check:
    name: str
    #: (config, inventory, the CLI's values by name) -> the check's settings.
    settings: Callable[[Any, Any, Mapping[str, Any]], Any]
    #: In the carrier's round, on each node fit to go on: a first look (kept with the carrier's value).
    look: Optional[Callable[[Remote, Any], Any]] = None
    #: What a first look says in the carrier's notes: (its words on the node's one line, lines of their own).
    said: Optional[Callable[[Any], Tuple[str, List[str]]]] = None
    #: Verify: read on each node (kept with the carrier's verify-phase value).
    check: Optional[Callable[[Remote, Any], Any]] = None
    #: Verify: across the nodes; a node it fails fails verify.
    check_cluster: Optional[Callable[[Carried, Sequence[Node], Any], List[HostResult]]] = None
    columns: Tuple[CheckColumn, ...] = ()
    #: Report lines: (verification lines, warnings).
    report: Optional[Callable[[Carried, Any], Tuple[List[str], List[str]]]] = None
    #: Its findings for the JSON report, under the carrier's name and then its own.
    data: Optional[Callable[[Carried, Any], Any]] = None
    #: `gpufab status`: what its first look (None: it did not look) says, read-only and quick.
    status: Optional[Callable[[Any], Seen]] = None
