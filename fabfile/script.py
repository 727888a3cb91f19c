"""`inv script.run FILE`: one of your own setup scripts on every node, the way `bootstrap` runs `steps:`."""

from __future__ import annotations

import os
import time
from typing import List, Optional

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import ensure_private, open_session, select_nodes, setting
from .core.errors import InputError, number_option, reported
from .core.fanout import worst_exit_code
from .core.inventory import Entry, Node
from .core.report import host_table, summary_line
from .core.steps import run_step


def _env(pairs: List[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"{pair!r} is not NAME=value", path="--env")
        out[key] = value
    return out


@task(
    iterable=["env"],
    help={
        "file": "the local script (or the name of one of the inventory's steps:)",
        "name": "its name on the nodes (default: the file's name)",
        "where": "all (default), head, workers, or a role",
        "env": "NAME=value for the script (repeatable)",
        "creates": "skip nodes where this path exists ($NID etc. filled in)",
        "unless": "skip nodes where this command succeeds",
        "detached": "run it as a transient unit and wait for it (survives Ctrl-C and a dropped link)",
        "timeout": "seconds it may run (default 3600)",
        "sudo": "run it as root (default: the SSH user)",
        "nodes": "only these nodes (comma-separated names)",
        "workers": help_texts.option("workers", "hosts worked on at once"),
    },
)
@reported
def run(c, file, name=None, where=None, env=None, creates=None, unless=None, detached=False, timeout=None, sudo=False,
        nodes=None, workers=None):
    """Ship FILE to the nodes and run it there with NID, IHN, NODE_RANK, RAY_HEAD_IP ... exported."""
    from .ops import scripts as plan
    from .ops.chain import CHAIN
    from .ops.netenv import DEFAULT_MASTER_PORT, check_port
    n_workers = number_option(workers, "--workers")
    with open_session(c.config) as session:
        inv = session.inventory
        named = [s for s in plan.user_steps(inv, [s.name for s in CHAIN]) if s.name == file]
        if named and not os.path.exists(file):
            step = named[0]
        else:
            raw = {"script": file, "name": name, "where": where, "env": _env(env or []) or None, "creates": creates,
                   "unless": unless, "detached": bool(detached), "sudo": bool(sudo),
                   "timeout": number_option(timeout, "--timeout") if timeout is not None else None}
            step = plan.parse_step(Entry({k: v for k, v in raw.items() if v is not None}), 0, inv, os.getcwd(),
                                   [], None, label="script.run")
        inv = ensure_private(session, workers=n_workers)
        port = check_port(setting(c.config, inv, "master_port", None, DEFAULT_MASTER_PORT))
        settings = plan.ScriptSettings(step, port)
        targets = [n for n in select_nodes(inv, nodes) if step.runs_on(n)]
        if not targets:
            raise InputError(f"no node of this selection is one the step runs on ({step.where})", path="--where")
        width = max(len(n.name) for n in targets)
        stamp = time.strftime("%Y%m%d-%H%M%S")

        def say(node: Node, text: str) -> None:
            print(f"{node.name:<{width}}  {text}", flush=True)

        results = run_step(session, targets, lambda remote: plan.apply(remote, settings, inv, say, stamp=stamp),
                           workers=n_workers)
    rows = []
    for r in results:
        found: Optional[plan.StepRun] = r.value
        state = found.state if found else r.status
        exit_code = found.exit if found and found.exit is not None else "-"
        seconds = f"{found.seconds:.1f}s" if found and found.state in ("ran", "failed") else "-"
        said = found.tail[-1][:80] if found and found.state == "ran" and found.tail else ""
        detail = r.reason if r.failed else "; ".join([*r.notes, *([said] if said else [])]) or "-"
        rows.append((r.node.name, state, exit_code, seconds, detail))
    print(host_table(["Node", "Step", "Exit", "Time", "Details"], rows))
    for r in results:
        if r.failed and isinstance(r.value, plan.StepRun) and r.value.tail:
            print(f"{r.node.name}: last lines of {r.value.log}:")
            print("\n".join(f"  | {line}" for line in r.value.tail))
    print(summary_line(f"script.run {step.name}", results, changed=True))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
