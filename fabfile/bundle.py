"""`gpufab bundle [--nodes ...] [-o FILE]`: one .tar.gz of the evidence support asks for, every node's."""

from __future__ import annotations

import time

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import cli_hosts, inventory_path, open_session, select_nodes
from .core.errors import number_option, reported
from .core.fanout import worst_exit_code
from .core.runfiles import run_files
from .core.steps import Outcome, run_step


@task(help={"nodes": "only these nodes (comma-separated names)",
            "output": "the archive to write (default gpufab-bundle-<UTC time>.tar.gz here)",
            "workers": help_texts.option("workers", "hosts collected at once")})
@reported
def bundle(c, nodes=None, output=None, workers=None):
    """nvidia-smi -q, topo -m, ibstat, kernel errors, versions, netenv, unit journals and the last report, per node.

    Exit non-zero when a node could not be collected; the archive is written for the others and its
    MANIFEST names that node and why.
    """
    from .ops import bundle as plan
    now = time.time()
    inventory = inventory_path(c.config)
    files = run_files(inventory, bool(cli_hosts(c.config)))
    path = output or plan.default_output(now)
    plan.check_output(path, inventory, files)  # before any node is asked: nothing written
    with open_session(c.config) as session:
        targets = select_nodes(session.inventory, nodes)
        results = run_step(session, targets, lambda remote: Outcome(value=plan.collect(remote)),
                           workers=number_option(workers, "--workers"))
        secrets = plan.passwords([session.known_password(n) for n in targets if n.user != "root"])
    extra = plan.report_files(files)
    text = plan.manifest(results, extra, inventory, now, f"no {files.json}: run bootstrap first")
    size = plan.write_archive(path, plan.top_name(path), plan.archive_members(results, extra, text, secrets), now)
    print(plan.summary(results, path, size))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
