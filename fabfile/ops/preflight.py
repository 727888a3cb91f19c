"""`preflight`: can gpufab work on this node at all, and what is it?

Reachable, authenticated, sudo, OS, GPUs, the route to the head's private
address and free disk, in one round trip; every later step relies on these
facts, so it is the one step that cannot be skipped. It also runs the other
steps' fact gathering in the same pass over the hosts.

It carries checks of their own (core/checks.py), which the chain places on it
(ops/chain.py): the GPU doctor takes its first look in this round and its
verdict fills the report's GPU column; in the verify phase the doctor runs
again, with the training python's view of CUDA, and the fleet's facts are
compared across nodes. Their cells, lines and data reach the report through
this step, which names neither.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from invoke.exceptions import AuthFailure
from paramiko.ssh_exception import AuthenticationException

from ..core import programs
from ..core.chain import Column, Step
from ..core.checks import Carried, Check
from ..core.cluster import reach_of
from ..core.networks import Reach
from ..core.connection import NodeConnection, Session
from ..core.facts import parse_facts
from ..core.fanout import FAILED, OK, HostResult, fan_out
from ..core.inventory import Node
from ..core.remote import Remote, run_parsed
from ..core.steps import Outcome, Seen, merge_phases
from ..core.context import RunContext
from .shared import gpu

#: Prints one key=value per line. `$1` is the head's private address (may be empty).
PREFLIGHT_SCRIPT = programs.text("preflight.sh", smi_timeout=gpu.SMI_TIMEOUT)


def preflight_command(head_private: Optional[str]) -> str:
    return f"sh -c {shlex.quote(PREFLIGHT_SCRIPT)} preflight {shlex.quote(head_private or '')}"


@dataclass
class Preflight:
    """What preflight found on one node (`-` where it could not look)."""

    reachable: str = "yes"
    auth: str = "-"
    sudo: str = "-"
    os: str = "-"
    gpus: str = "-"
    nic: str = ""
    disk_free_kb: str = ""
    #: The carried checks' first looks, by check name (the GPU doctor's: no training python yet).
    looks: Dict[str, Any] = field(default_factory=dict)


def probe(session: Session, conn: NodeConnection, node: Node, head_private: Optional[str]) -> HostResult:
    """Reachable, auth, sudo, OS, GPUs, route to the head, free disk: one round trip (plus sudo)."""
    try:
        conn.open()
    except AuthenticationException as exc:
        return HostResult(node, FAILED, 255, reason=f"SSH authentication failed ({exc})", value=Preflight(auth="no"))
    facts = parse_facts(run_parsed(conn, preflight_command(head_private), timeout=session.fact_timeout).stdout)
    found = Preflight(auth="ok", sudo=facts.get("sudo", "-"), os=facts.get("os", "-"), gpus=facts.get("gpus", "-"),
                      nic=facts.get("nic", ""), disk_free_kb=facts.get("disk_free_kb", ""))
    problems = []
    if found.sudo == "password":
        password = session.sudo_password(node)
        if password is None:
            found.sudo = "needs password"
            problems.append("sudo needs a password (use --prompt-for-sudo-password)")
        else:
            try:
                conn.sudo("true", password=password, hide=True, in_stream=False, timeout=session.fact_timeout)
                found.sudo = "ok (password)"
            except AuthFailure:
                found.sudo = "wrong password"
                problems.append("wrong sudo password")
    elif found.sudo == "missing":
        problems.append("sudo is not installed and the SSH user is not root")
    if head_private and not found.nic:
        problems.append(f"no route to the head's private address {head_private}")
    if problems:
        return HostResult(node, FAILED, 1, reason="; ".join(problems), value=found)
    return HostResult(node, OK, value=found)


@dataclass(frozen=True)
class PreflightSettings:
    #: The cluster's idea of private: its warnings (a public range declared private) are said every run.
    reach: Reach = Reach()
    #: Each carried check's settings, by check name.
    checks: Mapping[str, Any] = field(default_factory=dict)


#: netenv's step name: the NIC cell shows the NIC it wrote for the node.
NETENV = "netenv"


def _nic_cell(run: RunContext, node: Node) -> str:
    """The NIC netenv wrote for the node, else the one preflight found toward the head."""
    for found in (run.value(NETENV, node), run.checked(NETENV, node)):
        if found is not None and found.nic:
            return found.nic
    pre = run.value(NAME, node)
    return pre.nic if pre is not None and pre.nic else "-"


NAME = "preflight"


def carrying(*checks: Check) -> Step:
    """Preflight with `checks` riding on its round and its verify phase (the chain says which)."""

    def read(config: Any, inv: Any, cli: Any) -> PreflightSettings:
        return PreflightSettings(reach_of(config, inv), {c.name: c.settings(config, inv, cli) for c in checks})

    def run_on(run: RunContext, nodes: Sequence[Node], settings: PreflightSettings) -> List[HostResult]:
        """Every node probed at once; a node fit to go on also answers every step's fact gathering."""
        head_private = run.inv.head.private

        def one(conn: NodeConnection, node: Node) -> HostResult:
            result = probe(run.session, conn, node, head_private)
            if result.failed:
                return result
            if node.private is None:
                return HostResult(node, FAILED, 1, reason="no private address (give one in the inventory)", value=result.value)
            remote = run.remotes[node.name]
            if result.value.gpus != "-":  # read in the one round trip above: no step reads it again
                run.facts(node).note(gpu.GPUS, result.value.gpus)
            run.gather(remote)
            d = result.value
            words, lines = [d.os], []
            for c in checks:
                if c.look is None:
                    continue
                d.looks[c.name] = c.look(remote, settings.checks[c.name])
                if c.said is not None:
                    said, more = c.said(d.looks[c.name])
                    words.append(said)
                    lines += more
            notes = ["; ".join([*words, f"private NIC {d.nic or '-'}"]), *lines]
            return HostResult(node, OK, notes=notes, value=d)

        return fan_out(run.session, nodes, one, workers=run.workers, on_result=run.live(NAME))

    def check(remote: Remote, settings: PreflightSettings) -> Outcome:
        """The verify phase: each carried check's read of the node, by check name."""
        return Outcome(value={c.name: c.check(remote, settings.checks[c.name]) for c in checks if c.check is not None})

    def check_cluster(run: RunContext, nodes: Sequence[Node], settings: PreflightSettings) -> List[HostResult]:
        found = [c.check_cluster(Carried(run, NAME, c.name), nodes, settings.checks[c.name])
                 for c in checks if c.check_cluster is not None]
        return found[0] if len(found) == 1 else merge_phases(nodes, found)

    def report(run: RunContext, settings: PreflightSettings) -> Tuple[List[str], List[str]]:
        lines: List[str] = []
        warnings: List[str] = []
        for c in checks:
            if c.report is not None:
                more, warned = c.report(Carried(run, NAME, c.name), settings.checks[c.name])
                lines += more
                warnings += warned
        return lines, warnings + settings.reach.warnings()

    def status(run: RunContext, remote: Remote, settings: PreflightSettings) -> Seen:
        """`gpufab status`: what each carried check's first look in this round says is wrong."""
        pre = run.value(NAME, remote.node)
        seen = [c.status(pre.looks.get(c.name) if pre is not None else None) for c in checks if c.status is not None]
        return Seen("; ".join(s.shown for s in seen) or "-", tuple(p for s in seen for p in s.problems))

    def data(run: RunContext, settings: PreflightSettings) -> Any:
        return {c.name: c.data(Carried(run, NAME, c.name), settings.checks[c.name]) for c in checks if c.data is not None}

    def column(c: Check, key: str, title: str, cell: Any) -> Column:
        return Column(key, title, lambda run, node: cell(Carried(run, NAME, c.name), node))

    # Preflight's own first, then each check's in the order the chain carries them.
    columns = [Column("nic", "NIC", _nic_cell), *(column(c, col.key, col.title, col.cell) for c in checks for col in c.columns)]
    return Step(NAME, settings=read, run=run_on, optional=False, needs=(),
                check=check if any(c.check is not None for c in checks) else None,
                check_cluster=check_cluster if any(c.check_cluster is not None for c in checks) else None,
                columns=tuple(columns), report=report, data=data,
                status=status if any(c.status is not None for c in checks) else None)


#: Preflight alone, carrying no check (the chain's carries the doctor and the fleet: ops/chain.py).
STEP = carrying()
#: Its own settings (the cluster's idea of private), no check's.
read = STEP.settings
