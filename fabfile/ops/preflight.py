"""`preflight`: can gpufab work on this node at all, and what is it?

Reachable, authenticated, sudo, OS, GPUs, the route to the head's private
address and free disk, in one round trip; every later step relies on these
facts, so it is the one step that cannot be skipped. It also runs the other
steps' fact gathering in the same pass over the hosts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from invoke.exceptions import AuthFailure
from paramiko.ssh_exception import AuthenticationException

from ..core.chain import Column, Step
from ..core.connection import NodeConnection, Session
from ..core.facts import parse_facts
from ..core.fanout import FAILED, OK, HostResult, fan_out
from ..core.inventory import Node
from ..core.remote import Remote, run_parsed
from ..core.steps import Outcome
from . import gpu, netenv, ray

#: Prints one key=value per line. `$1` is the head's private address (may be empty).
PREFLIGHT_SCRIPT = r"""
head="$1"
. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"
echo "uid=$(id -u)"
echo "gpus=$(GPU_COUNT)"
if [ -n "$head" ]; then
  nic=$(ip -o route get "$head" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  # On the head itself the route is via lo: name the NIC holding the address.
  if [ "$nic" = lo ]; then nic=$(ip -o addr show to "$head" 2>/dev/null | awk '{print $2; exit}'); fi
  echo "nic=$nic"
fi
echo "disk_free_kb=$(df -Pk / 2>/dev/null | awk 'NR==2 {print $4}')"
if [ "$(id -u)" = 0 ]; then echo "sudo=root"
elif ! command -v sudo >/dev/null 2>&1; then echo "sudo=missing"
elif sudo -n true 2>/dev/null; then echo "sudo=nopasswd"
else echo "sudo=password"
fi
""".replace("GPU_COUNT", gpu.COUNT)


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
        password = session.sudo_password()
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


def run_on(run: Any, nodes: Sequence[Node], settings: Any) -> List[HostResult]:
    """Every node probed at once; a node fit to go on also answers every step's fact gathering."""
    head_private = run.inv.head.private

    def one(conn: NodeConnection, node: Node) -> HostResult:
        result = probe(run.session, conn, node, head_private)
        if result.failed:
            return result
        if node.private is None:
            return HostResult(node, FAILED, 1, reason="no private address (give one in the inventory)", value=result.value)
        run.gather(run.remotes[node.name])
        d = result.value
        gpus = f"{d.gpus} GPUs" if d.gpus.isdigit() else d.gpus
        notes = [f"{d.os}; {gpus}; private NIC {d.nic or '-'}"]
        return HostResult(node, OK, data={"changes": [], "notes": notes}, value=d)

    return fan_out(run.session, nodes, one, workers=run.workers, on_result=run.live(NAME))


def check(remote: Remote, settings: Any) -> Outcome:
    """The verify phase: the GPUs the driver lists now."""
    return Outcome(value=remote.run(gpu.COUNT, warn=True).stdout.strip() or "0")


def _gpus_cell(run: Any, node: Node) -> str:
    pre = run.value(NAME, node)
    found = run.checked(NAME, node) or (pre.gpus if pre is not None and pre.gpus != "-" else None)
    if found is None:
        return "-"
    text = "none" if str(found) == "0" else str(found)
    member = ray.member(run, node)
    if member is not None and str(found) != "0":
        text += f" (Ray {member.gpus:g})"
    return text


def _nic_cell(run: Any, node: Node) -> str:
    """The NIC netenv wrote for the node, else the one preflight found toward the head."""
    for found in (run.value(netenv.NAME, node), run.checked(netenv.NAME, node)):
        if found is not None and found.nic:
            return found.nic
    pre = run.value(NAME, node)
    return pre.nic if pre is not None and pre.nic else "-"


NAME = "preflight"
STEP = Step(NAME, settings=lambda config, inv, cli: None, run=run_on, optional=False, check=check,
            columns=(Column("nic", "NIC", 10, _nic_cell), Column("gpus", "GPUs", 60, _gpus_cell)))
