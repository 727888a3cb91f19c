"""`inv run.detached "CMD" --log FILE` and `inv run.kill PATTERN`."""

from __future__ import annotations

import time
from typing import Dict, List

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.errors import confirmed, not_blank, number_option, reported
from .core.fanout import HostResult, worst_exit_code
from .core.report import host_table, summary_line
from .core.steps import run_step

_HELP = {"nodes": "only these nodes (comma-separated names)", "workers": help_texts.option("workers", "hosts worked on at once")}


@task(help={"command": "the command to keep running", "log": "its output file (default ~/NAME.log)", **_HELP})
@reported
def detached(c, command, log=None, nodes=None, workers=None):
    """Start CMD on every node so that it outlives the SSH session (systemd-run, or nohup)."""
    from .ops import detached as plan
    not_blank(command, "COMMAND", "an empty command runs nothing (give one, e.g. inv run.detached \"python train.py\")")
    name = plan.job_name(command, time.strftime("%Y%m%d-%H%M%S"))
    log = plan.check_log(log) if log is not None else f"{name}.log"
    with open_session(c.config) as session:
        targets = select_nodes(session.inventory, nodes)
        results = run_step(session, targets, lambda r: plan.start_detached(r, name, log, command),
                           workers=number_option(workers, "--workers"))
    rows = [(r.node.name, r.reason if r.failed else r.changes[0], r.value or "-") for r in results]
    print(host_table(["Node", "Started", "Log"], rows))
    print(summary_line("run.detached", results))
    print(f"stop it with: inv run.kill {name}   (or: inv run.kill PATTERN)")
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)


@task(help={"pattern": "regular expression matched against full command lines (pgrep -f)",
            "yes": "kill without asking", "signal": "signal to send (default TERM)", **_HELP})
@reported
def kill(c, pattern, yes=False, signal="TERM", nodes=None, workers=None):
    """List the processes matching PATTERN on every node, confirm, then signal exactly those."""
    from .ops import detached as plan
    plan.check_pattern(pattern)
    sig = plan.check_signal(signal)
    n = number_option(workers, "--workers")
    with open_session(c.config) as session:
        targets = select_nodes(session.inventory, nodes)
        listed = run_step(session, targets, lambda r: plan.list_matches(r, pattern), workers=n)
        rows = [(r.node.name, m.pid, m.command[:100]) for r in listed for m in (r.value or [])]
        rows += [(r.node.name, "-", f"FAILED: {r.reason}") for r in listed if r.failed]
        found: Dict[str, List[int]] = {r.node.name: [m.pid for m in r.value] for r in listed if r.value}
        print(host_table(["Node", "PID", "Command"], rows) if rows else f"run.kill: nothing matches {pattern!r}")
        total = sum(len(p) for p in found.values())
        no_terminal = Exit(f"run.kill: {total} processes on {len(found)} hosts match; nothing killed "
                           "(no terminal to confirm on: add --yes)", code=1)
        if total and (yes or confirmed(f"Kill these {total} processes on {len(found)} hosts?", no_terminal)):
            chosen = [t for t in targets if t.name in found]
            killed = run_step(session, chosen, lambda r: plan.kill_matches(r, sig, pattern, found[r.node.name]), workers=n)
            print(summary_line("run.kill", killed, changed=True))
            results: List[HostResult] = killed + [r for r in listed if r.failed]
        elif total:
            print("run.kill: not confirmed; nothing killed")
            results = [r for r in listed if r.failed]
        else:
            results = listed
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
