"""`inv exec "CMD"`: an ad-hoc command on every host, output labelled by host."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.connection import NodeConnection
from .core.errors import not_blank, number_option, reported
from .core.fanout import HostResult, fan_out, run_command, worst_exit_code
from .core.inventory import Node
from .core.report import format_gathered, summary_line


@task(
    name="exec",
    help={
        "command": "shell command to run on every host",
        "sudo": "run it through sudo",
        "quiet": "no live output, only the gathered output at the end",
        "nodes": "only these nodes (comma-separated names)",
        "workers": help_texts.option("workers", "hosts worked on at once"),
        "timeout": "seconds a host may take before it counts as failed",
    },
)
@reported
def exec_(c, command, sudo=False, quiet=False, nodes=None, workers=None, timeout=None):
    """Run CMD on every host; gather identical outputs; exit with the worst exit code."""
    not_blank(command, "COMMAND", "an empty command runs nothing (give one, e.g. inv exec \"nvidia-smi\")")
    with open_session(c.config, command_timeout=number_option(timeout, "--timeout", float)) as session:
        targets = select_nodes(session.inventory, nodes)
        width = max(len(n.name) for n in targets)

        def one(conn: NodeConnection, node: Node) -> HostResult:
            try:
                return run_command(conn, node, command, sudo=sudo, live=not quiet, width=width,
                                   timeout=session.command_timeout,
                                   password=session.sudo_password(node) if sudo else None)
            finally:
                session.release(node)  # one command per host: threads stay bounded by --workers

        results = fan_out(session, targets, one, workers=number_option(workers, "--workers"))
    print("---")
    print(format_gathered(results))
    print(summary_line("exec", results))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
