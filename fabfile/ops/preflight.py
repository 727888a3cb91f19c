"""`preflight`: can gpufab work on this node at all, and what is it?

Reachable, authenticated, sudo, OS, GPUs, the route to the head's private
address and free disk, in one round trip; every later step relies on these
facts, so it is the one step that cannot be skipped. It also runs the other
steps' fact gathering in the same pass over the hosts, and the GPU doctor
(ops/doctor.py), whose verdict fills the report's GPU column. In the verify
phase the doctor runs again, with the training python's view of CUDA, and
the fleet's facts are compared across nodes (ops/fleet.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from invoke.exceptions import AuthFailure
from paramiko.ssh_exception import AuthenticationException

from ..core import programs
from ..core.chain import Column, Step
from ..core.cluster import reach_of
from ..core.networks import Reach
from ..core.connection import NodeConnection, Session
from ..core.facts import parse_facts
from ..core.fanout import FAILED, OK, HostResult, fan_out
from ..core.inventory import Node
from ..core.remote import Remote, run_parsed
from ..core.steps import Outcome, Seen
from ..core.context import RunContext
from . import allreduce, doctor, fleet, gpu, netenv, ray

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
    #: The GPU doctor's first look (no training python yet).
    doctor: Optional[doctor.Doctor] = None


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


def run_on(run: RunContext, nodes: Sequence[Node], settings: Any) -> List[HostResult]:
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
        d.doctor = doctor.examine(remote, settings.doctor, with_python=False)
        notes = [f"{d.os}; GPUs {d.doctor.verdict()}; private NIC {d.nic or '-'}"]
        notes += [f"GPU {f.level}: {f.line()}" for f in d.doctor.findings]
        return HostResult(node, OK, notes=list(notes), value=d)

    return fan_out(run.session, nodes, one, workers=run.workers, on_result=run.live(NAME))


@dataclass(frozen=True)
class PreflightSettings:
    doctor: doctor.DoctorSettings
    head: str  # the head's private address (the fleet's NIC is the one toward it)
    #: The cluster's idea of private: its warnings (a public range declared private) are said every run.
    reach: Reach = Reach()


def read(config: Any, inv: Any, cli: Any) -> PreflightSettings:
    return PreflightSettings(doctor.read(config, inv, cli), inv.head.private or "", reach_of(config, inv))


@dataclass(frozen=True)
class Checked:
    """The verify phase on one node: the doctor's verdict and the fleet's raw facts."""

    doctor: doctor.Doctor
    facts: str


def check(remote: Remote, settings: PreflightSettings) -> Outcome:
    """The verify phase: the GPU doctor again (now with the training python), and the fleet's facts."""
    found = doctor.examine(remote, settings.doctor)
    ray_version: Optional[str] = None  # None: the fleet's script reads it, as it did
    try:  # the run's one read of Ray's venv (ray's own check takes it too), not the fleet script's
        ray_version = (ray.installed_versions(remote, settings.doctor.python.venv, ["ray"]) or {}).get("ray") or ""
    except (ValueError, IndexError):  # a venv python that answers no JSON
        pass
    return Outcome(value=Checked(found, fleet.read_facts(remote, settings.head, settings.doctor, ray_version)))


def _doctor(run: RunContext, node: Node) -> Optional[doctor.Doctor]:
    checked = run.checked(NAME, node)
    if checked is not None:
        return checked.doctor
    pre = run.value(NAME, node)
    return pre.doctor if pre is not None else None


def check_doctor(run: RunContext, nodes: Sequence[Node], settings: PreflightSettings) -> List[HostResult]:
    """A node whose GPU stack has a problem is not ready to train: it fails verify, with what to do."""
    out = []
    for n in nodes:
        found = _doctor(run, n) if run.checked(NAME, n) is not None else None
        if found is not None and found.problems:
            out.append(HostResult(n, FAILED, 1, reason=f"GPU: {found.problems[0].line()}"))
        else:
            out.append(HostResult(n, OK))
    return out


def _gpus_cell(run: RunContext, node: Node) -> str:
    found = _doctor(run, node)
    if found is None:
        pre = run.value(NAME, node)
        return "none" if pre is not None and pre.gpus == "0" else (pre.gpus if pre is not None else "-")
    text = found.verdict()
    member = ray.member(run, node)
    if member is not None and found.has_gpus:
        text += f" (Ray {member.gpus:g})"
    return text


def fleet_facts(run: RunContext) -> dict:
    """Per verified node, the fleet's facts (the training python as the all-reduce step found it)."""
    out = {}
    for n in run.verified():
        checked = run.checked(NAME, n)
        if checked is None:
            continue
        ready = run.value(allreduce.NAME, n)
        python = fleet.python_view(getattr(ready, "python", None))
        out[n.name] = fleet.parse(checked.facts, python, checked.doctor.ib)
    return out


def _report(run: RunContext, settings: PreflightSettings) -> Tuple[List[str], List[str]]:
    verified = run.verified()
    docs = {n.name: _doctor(run, n) for n in run.inv.nodes if run.checked(NAME, n) is not None}
    with_gpus = [name for name, d in docs.items() if d is not None and d.has_gpus]
    bad = {name: d for name, d in docs.items() if d is not None and d.problems}
    if not docs:
        return [], settings.reach.warnings()
    if not with_gpus and not bad:
        lines = [f"GPU doctor: no GPUs on {len(docs)}/{len(run.inv.nodes)} nodes"]
    else:
        fine = len(with_gpus) - len([n for n in with_gpus if n in bad])
        lines = [f"GPU doctor: {fine}/{len(with_gpus)} GPU nodes ok" + (f"; problems on {', '.join(bad)}" if bad else "")]
    warnings = [f"GPU {f.level} on {name}: {f.line()}" for name, d in docs.items() if d is not None for f in d.findings]
    facts = fleet_facts(run)
    if facts:
        _, mismatched = fleet.fold(facts)
        if mismatched:
            lines.append("Fleet: " + "; ".join(f"{k} differs on {', '.join(v)}" for k, v in mismatched.items())
                         + " (inv fleet)")
            warnings += [f"fleet: {k} differs on {', '.join(v)}" for k, v in mismatched.items()]
        else:
            lines.append(f"Fleet: {', '.join(fleet.MUST_MATCH)} match on {len(facts)}/{len(verified)} nodes")
    return lines, warnings + settings.reach.warnings()


def _data(run: RunContext, settings: PreflightSettings) -> Any:
    docs = {n.name: _doctor(run, n) for n in run.inv.nodes}
    facts = fleet_facts(run)
    return {
        "doctor": {name: d.as_data() for name, d in docs.items() if d is not None},
        "fleet": {"facts": {name: dict(f.values) for name, f in facts.items()},
                  "mismatched": fleet.fold(facts)[1] if facts else {}},
    }


def _nic_cell(run: RunContext, node: Node) -> str:
    """The NIC netenv wrote for the node, else the one preflight found toward the head."""
    for found in (run.value(netenv.NAME, node), run.checked(netenv.NAME, node)):
        if found is not None and found.nic:
            return found.nic
    pre = run.value(NAME, node)
    return pre.nic if pre is not None and pre.nic else "-"


def doctor_seen(found: Optional[doctor.Doctor]) -> Seen:
    """`gpufab status`: the GPU doctor's quick root pass (preflight's, no training python): its problems."""
    if found is None:
        return Seen("-")
    return Seen(f"GPUs {found.verdict()}", tuple(p.line() for p in found.problems))


def _status(run: RunContext, remote: Remote, settings: PreflightSettings) -> Seen:
    pre = run.value(NAME, remote.node)
    return doctor_seen(pre.doctor if pre is not None else None)


NAME = "preflight"
STEP = Step(NAME, settings=read, run=run_on, optional=False, needs=(), check=check, check_cluster=check_doctor,
            columns=(Column("nic", "NIC", _nic_cell), Column("gpus", "GPUs", _gpus_cell)),
            report=_report, data=_data, status=_status)
