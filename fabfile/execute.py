"""`inv exec "CMD"`: an ad-hoc command on every host, output labelled by host."""

from __future__ import annotations

import sys
from typing import Optional

from invoke import task
from invoke.exceptions import Exit

from .core.cluster import open_session, select_nodes
from .core.connection import NodeConnection
from .core.errors import reported
from .core.fanout import FAILED, OK, HostResult, PrefixedStream, fan_out, worst_exit_code
from .core.inventory import Node
from .core.report import format_gathered, summary_line


def run_command(
    conn: NodeConnection,
    node: Node,
    command: str,
    *,
    sudo: bool = False,
    live: bool = True,
    width: int = 0,
    timeout: Optional[float] = None,
    password: Optional[str] = None,
) -> HostResult:
    """Run one command on one host; a non-zero exit is a result, not an error."""
    prompt = conn.config.sudo.prompt if sudo else ""
    out = PrefixedStream(node.name, sys.stdout, width) if live else None
    err = PrefixedStream(node.name, sys.stderr, width, drop=prompt) if live else None
    opts = dict(warn=True, hide=True if not live else None, out_stream=out, err_stream=err, timeout=timeout, in_stream=False)
    if sudo:
        result = conn.sudo(command, password=password, **opts)
    else:
        result = conn.run(command, **opts)
    for stream in (out, err):
        if stream:
            stream.flush()
    stderr = result.stderr.replace(prompt, "") if prompt else result.stderr
    status = OK if result.exited == 0 else FAILED
    reason = "" if result.exited == 0 else f"exit code {result.exited}"
    return HostResult(node, status, result.exited, result.stdout, stderr, reason)


@task(
    name="exec",
    help={
        "command": "shell command to run on every host",
        "sudo": "run it through sudo",
        "quiet": "no live output, only the gathered output at the end",
        "nodes": "only these nodes (comma-separated names)",
        "workers": "hosts worked on at once (default 32)",
        "timeout": "seconds a host may take before it counts as failed",
    },
)
@reported
def exec_(c, command, sudo=False, quiet=False, nodes=None, workers=None, timeout=None):
    """Run CMD on every host; gather identical outputs; exit with the worst exit code."""
    with open_session(c.config, command_timeout=float(timeout) if timeout else None) as session:
        targets = select_nodes(session.inventory, nodes)
        width = max(len(n.name) for n in targets)
        password = session.sudo_password() if sudo else None

        def one(conn: NodeConnection, node: Node) -> HostResult:
            try:
                return run_command(conn, node, command, sudo=sudo, live=not quiet, width=width,
                                   timeout=session.command_timeout, password=password)
            finally:
                session.release(node)  # one command per host: threads stay bounded by --workers

        results = fan_out(session, targets, one, workers=int(workers) if workers else None)
    print("---")
    print(format_gathered(results))
    print(summary_line("exec", results))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
