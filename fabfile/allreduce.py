"""`inv allreduce`: a real all-reduce across the nodes, timed, checked, and on which NIC."""

from __future__ import annotations

import json as _json
import sys

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import cluster_inventory, open_session, select_nodes
from .core.errors import reported
from .core.report import host_table
from .core.facts import human_bytes


@task(
    auto_shortflags=False,
    help={
        "backend": help_texts.option("allreduce_backend", "auto (NCCL, one process per GPU, where every node has GPUs; else Gloo), nccl or gloo"),
        "sizes": help_texts.option("allreduce_sizes", "buffer sizes, comma-separated"),
        "iters": help_texts.option("allreduce_iters", "timed all-reduces per size"),
        "python": help_texts.option("train_python", "the training python on the nodes"),
        "pairs": "node pairs in turn (all pairs up to 8 nodes, a ring above): names a slow or broken link",
        "timeout": help_texts.option("allreduce_timeout", "seconds one run may take before it fails, named"),
        "port": help_texts.option("allreduce_port", "rendezvous port"),
        "nodes": "only these nodes (comma-separated names)",
        "json": "print the figures as JSON instead of tables (for scripts and bench/run.py)",
    },
)
@reported
def allreduce(c, backend=None, sizes=None, iters=None, python=None, pairs=False, timeout=None, port=None, nodes=None,
              json=False):
    """All-reduce across every node (Gloo or NCCL): sums checked, busbw, link speed, NIC per rank."""
    from .ops import allreduce as ar
    from .ops.shared.launch import rank_order
    with open_session(c.config) as session:
        inv = cluster_inventory(session)
        s = ar.read(c.config, inv, {"allreduce_backend": backend, "allreduce_sizes": sizes, "allreduce_iters": iters,
                                    "train_python": python, "allreduce_pairs": pairs, "allreduce_timeout": timeout,
                                    "allreduce_port": port})
        targets = select_nodes(inv, nodes)
        prepared = ar.prepare_all(session, None, targets, s)
        failed = [r for r in prepared if r.failed]
        for r in failed:
            print(f"{r.node.name}: {r.reason}", file=sys.stderr if json else sys.stdout)
        ready = {r.node.name: r.value for r in prepared if not r.failed}
        going = [n for n in targets if n.name in ready]
        if len(going) < min(2, len(targets)):
            raise Exit(f"allreduce: not enough nodes ready ({len(going)} of {len(targets)})", code=1)
        plan = ar.choose_backend(s.backend, ready)
        groups = ar.groups_of(going, s.pairs)
        per_node = "one process per GPU" if plan.backend == "nccl" else "one process per node"
        print(f"allreduce: {', '.join(n.name for n in rank_order(going))}: {plan.backend}, {per_node}, "
              f"{sum(plan.procs.values())} ranks; sizes {', '.join(human_bytes(b, whole=True) for b in s.sizes)}; "
              f"{s.iters} iterations" + (f"; {len(groups)} pairs in turn" if s.pairs else ""),
              file=sys.stderr if json else sys.stdout, flush=True)
        results = []
        for group in groups:
            result = ar.run_group(session, None, group, plan, ready, s)
            results.append(result)
            if s.pairs and not json:
                print(f"  {'-'.join(result.nodes)}: " + ("ok" if result.ok else f"FAILED: {result.reason}"), flush=True)
    sys.stdout.flush()
    bad = [r for r in results if not r.ok]
    # The whole cluster's collective is judged against the hardware's figure (pairs are compared with each other).
    judged = ar.judge(results[0], ready, s) if not s.pairs and results[0].ok else None
    slow = judged is not None and (judged.problem is not None or not judged.fast_enough)
    if json:
        groups = [r.to_json() for r in results]
        if judged is not None:
            groups[0]["judgement"] = judged.to_json()
        print(_json.dumps({"groups": groups, "failed_nodes": {r.node.name: r.reason for r in failed}}, indent=2))
    elif s.pairs:
        print(host_table(ar.PAIR_HEADERS, ar.pair_table(results)))
        slow = ar.slowest_pair(results)
        if slow is not None:
            print(f"slowest pair: {'-'.join(slow.nodes)} ({ar.summary(slow)})")
        print(f"allreduce --pairs: {len(results) - len(bad)} of {len(results)} pairs ok"
              + (f"; failed: {', '.join('-'.join(r.nodes) for r in bad)}" if bad else ""))
    else:
        result = results[0]
        print(host_table(ar.SIZE_HEADERS, ar.size_table(result)))
        print(host_table(ar.RANK_HEADERS, ar.rank_table(result)))
        print(ar.link_line(result))
        if judged is not None:
            over = f", {judged.transport}" if judged.transport else ""
            print(f"allreduce: {ar.summary(result)}{over}; sums right; {judged.tail}")
            if judged.problem:
                print(f"problem: {judged.problem}")
        else:
            print(f"allreduce: {ar.summary(result)}; " + ("sums right" if result.ok else f"FAILED: {result.reason}"))
    if bad or failed or slow:
        raise Exit(code=1)
