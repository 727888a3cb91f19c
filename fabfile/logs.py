"""`inv logs.tail PATH [-n 100]`: the end of one log file on every node, labelled by node."""

from __future__ import annotations

import shlex

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.errors import not_blank, number_option, reported
from .core.fanout import fan_out, run_command, worst_exit_code
from .core.remote import last_line
from .core.report import summary_line


#: Lines shown when -n is not given (a None default keeps Invoke from casting a bad -n itself).
DEFAULT_LINES = 100


@task(help={"path": "log file on the nodes (read as root)", "n": "how many lines (default 100), as tail -n",
            "nodes": "only these nodes (comma-separated names)", "workers": help_texts.option("workers", "hosts read at once")})
@reported
def tail(c, path, n=None, nodes=None, workers=None):
    """Print the last lines of PATH from every node, each line prefixed with its node."""
    not_blank(path, "PATH", "an empty path names no log file (give one, e.g. inv logs.tail /var/log/syslog)")
    count = number_option(n, "-n") or DEFAULT_LINES
    command = f"tail -n {count} -- {shlex.quote(path)}"
    with open_session(c.config) as session:
        targets = select_nodes(session.inventory, nodes)
        sudo = any(n.user != "root" for n in targets)
        passwords = {n.name: session.sudo_password(n) for n in targets if n.user != "root"} if sudo else {}
        # Read in parallel, printed node by node so each node's lines stay together.
        results = fan_out(session, targets, lambda conn, node: run_command(
            conn, node, command, sudo=conn.user != "root", live=False, timeout=session.command_timeout,
            password=passwords.get(node.name)), workers=number_option(workers, "--workers"))
    width = max(len(n.name) for n in targets)
    for r in results:
        label = r.node.name.ljust(width)
        if r.failed:
            print(f"{label} | FAILED: {last_line(r.stderr) or r.reason}")
            continue
        for line in r.stdout.splitlines():
            print(f"{label} | {line}")
    print(summary_line("logs.tail", results))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
