"""`inv gpu.status`: every GPU of every node in one table."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from .core.cluster import open_session, select_nodes
from .core.errors import number_option, reported
from .core.fanout import fan_out, worst_exit_code
from .core.report import host_table, summary_line


@task(help={"nodes": "only these nodes (comma-separated names)", "workers": "hosts asked at once (default 32)"})
@reported
def status(c, nodes=None, workers=None):
    """Index, name, memory used/total and utilization of every GPU, per node."""
    from .ops import gpu as plan
    with open_session(c.config) as session:
        targets = select_nodes(session.inventory, nodes)
        results = fan_out(session, targets, lambda conn, node: plan.query_gpus(conn, node, session.fact_timeout),
                          workers=number_option(workers, "--workers"))
    rows = []
    for r in results:
        gpus = r.value
        if r.failed or gpus is None:
            rows.append((r.node.name, "-", r.reason, "-", "-"))
            continue
        rows += [(r.node.name, g.index, g.name, plan.memory_cell(g), f"{g.utilization} %") for g in gpus]
    print(host_table(["Node", "GPU", "Name", "Memory", "Util"], rows))
    total = sum(len(r.value or []) for r in results)
    print(summary_line("gpu.status", results) + f"; {total} GPUs")
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
