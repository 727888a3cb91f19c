"""`inv launch "CMD"`: one distributed job started on every node at once, ranks assigned."""

from __future__ import annotations

import sys
from typing import Dict

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import ensure_private, open_session, setting
from .core.errors import not_blank, number_option, reported
from .core.fanout import HostResult, fan_out, run_command, worst_exit_code
from .core.remote import run_parsed
from .core.report import host_table, summary_line


@task(
    help={
        "command": "the launch command; NODE_RANK, NNODES, MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE are"
                   " exported, and {NODE_RANK} etc. in it are replaced",
        "role": "only nodes with this role (head, worker, or one from the inventory's roles:)",
        "master_port": help_texts.option("master_port", "rendezvous port"),
        "sudo": "run it through sudo",
        "timeout": "seconds the job may run before it counts as failed",
    }
)
@reported
def launch(c, command, role=None, master_port=None, sudo=False, timeout=None):
    """Start CMD on every node at the same time with its rank; stream labelled output."""
    from .ops.shared import launch as plan
    from .ops.shared import ports
    not_blank(command, "COMMAND", "an empty command runs nothing (give one, e.g. inv launch \"torchrun train.py\")")
    with open_session(c.config, command_timeout=number_option(timeout, "--timeout", float)) as session:
        inv = ensure_private(session)
        nodes = plan.launch_nodes(inv, role)
        port = ports.check_port(setting(c.config, inv, "master_port", master_port, ports.DEFAULT_MASTER_PORT))
        undeclared = [n for n in nodes if n.vars.get("gpus") is None]
        counted = fan_out(session, undeclared, lambda conn, node: HostResult(node, "ok", stdout=run_parsed(
            conn, plan.GPU_COUNT_CMD, timeout=30).stdout), workers=len(nodes))
        gpus: Dict[str, int] = {r.node.name: int(r.stdout.strip()) for r in counted
                                if not r.failed and r.stdout.strip().isdigit()}
        by_name = {p.node.name: p for p in plan.placements(nodes, port, gpus)}
        width = max(len(n.name) for n in nodes)
        # Asked before any rank starts (each node's own, else the run's one).
        passwords = {n.name: session.sudo_password(n) for n in nodes} if sudo else {}
        # Every rank must be up at once for the rendezvous: no worker limit here.
        results = fan_out(session, nodes, lambda conn, node: run_command(
            conn, node, plan.node_command(command, by_name[node.name].values), sudo=sudo, width=width,
            timeout=session.command_timeout, password=passwords.get(node.name)), workers=len(nodes))
    unreachable = {r.node.name: r for r in counted if r.failed}
    results = [unreachable.get(r.node.name, r) for r in results]
    rows = [(r.node.name, by_name[r.node.name].values["NODE_RANK"], by_name[r.node.name].values["NPROC_PER_NODE"],
             r.exit_code if r.status != "unreachable" else "-", r.reason or "ok") for r in results]
    sys.stdout.flush()
    print("---")
    print(host_table(["Node", "NODE_RANK", "NPROC_PER_NODE", "Exit", "Status"], rows))
    print(summary_line("launch", results))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
