"""`inv gpu.status`: every GPU of every node in one table."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.errors import number_option, reported
from .core.fanout import fan_out, worst_exit_code
from .core.report import host_table, summary_line
from .core.steps import run_step


@task(help={"nodes": "only these nodes (comma-separated names)", "workers": help_texts.option("workers", "hosts asked at once")})
@reported
def status(c, nodes=None, workers=None):
    """Index, name, memory used/total and utilization of every GPU, per node."""
    from .ops.shared import gpu as plan
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


@task(help={"deep": "also run `dcgmi diag -r 1` where DCGM is installed (about a minute)",
            "json": "print the findings as JSON (for scripts)",
            "image": help_texts.option("gpu_test_image", "a local image for the `docker run --gpus all` check"),
            "nodes": "only these nodes (comma-separated names)", "workers": help_texts.option("workers", "hosts asked at once")})
@reported
def doctor(c, deep=False, json=False, image=None, nodes=None, workers=None):
    """Driver, GPUs, fabric manager, ECC/remaps, XIDs, container runtime, CUDA from the training python, InfiniBand.

    Exit 1 when any node has a problem; each problem says what to do.
    """
    from .ops import doctor as plan
    with open_session(c.config) as session:
        s = plan.read(c.config, session.inventory, {"deep": deep, "image": image})
        targets = select_nodes(session.inventory, nodes)
        results = run_step(session, targets, lambda remote: plan.outcome(remote, s),
                           workers=number_option(workers, "--workers"))
    if json:
        print(plan.findings_json({r.node.name: r.value for r in results}, {r.node.name: r.reason for r in results}))
    else:
        print(plan.doctor_table(results))
        print(summary_line("gpu.doctor", results))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
