"""`inv fleet`: one table of every node's stack, equal values folded, the odd node out marked."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.errors import number_option, reported
from .core.fanout import worst_exit_code
from .core.report import host_table, summary_line
from .core.steps import Outcome, run_step


@task(help={"nodes": "only these nodes (comma-separated names)", "workers": help_texts.option("workers", "hosts asked at once")})
@reported
def fleet(c, nodes=None, workers=None):
    """OS, kernel, driver, CUDA, NCCL, GPUs, NIC, MTU, InfiniBand, Docker, Python, torch, ray: one row per fact.

    Exit 1 when a fact that must match (driver major, CUDA, NCCL, torch, ray, Python) differs.
    """
    from .ops import doctor, fleet as plan
    with open_session(c.config) as session:
        inv = session.inventory
        s = doctor.read(c.config, inv, {})
        targets = select_nodes(inv, nodes)
        results = run_step(session, targets, lambda r: Outcome(value=plan.read_node(r, inv.head.private or "", s.python)),
                           workers=number_option(workers, "--workers"))
    read = {r.node.name: r.value for r in results if not r.failed and r.value is not None}
    rows, mismatched = plan.fold(read) if read else ([], {})
    print(host_table(["Fact", "Value", "Nodes"], plan.table_rows(rows)))
    for r in results:
        if r.failed:
            print(f"{r.node.name}: not read: {r.reason}")
    for fact, odd in mismatched.items():
        print(f"mismatch: {fact} differs on {', '.join(odd)}")
    print(summary_line("fleet", results) + ("; versions match" if not mismatched else
                                            f"; {len(mismatched)} must-match facts differ"))
    code = worst_exit_code(results) or (1 if mismatched else 0)
    if code:
        raise Exit(code=code)
