"""`inv reset` / `gpufab reset`: take away what gpufab added to the nodes (see ops/reset.py).

Two phases, each on every node at once: Ray stopped and the workers' share
unmounted while the head still serves it; then the head's share service,
daemon.json's keys, gpufab's files and directories. A node that fails the
first phase keeps everything for the next run to finish.
"""

from __future__ import annotations

import sys

from invoke import task

from .core.cluster import cluster_inventory, open_session, select_nodes
from .core.errors import InputError, number_option, reported
from .core.steps import merge_phases, report_step, run_step
from .ops import docker, nfs, ray
from .ops import reset as reset_ops


def _confirmed(names: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputError("reset removes gpufab's setup from the nodes: pass --yes to do it without a terminal",
                         path="--yes")
    answer = input(f"reset {names}: stop Ray, unmount the share, remove gpufab's files? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


@task(
    auto_shortflags=False,
    help={
        "yes": "do not ask (needed without a terminal)",
        "packages": "also purge the packages gpufab installed (Docker, sshfs, NFS...; never openssh-server)",
        "nodes": "only these nodes (comma-separated names)",
        "workers": "hosts worked on at once (default 32)",
    },
)
@reported
def reset(c, yes=False, packages=False, nodes=None, workers=None):
    """Undo bootstrap on the nodes (like `ray down`): units, mounts, fstab lines, keys, files; --packages too."""
    n = number_option(workers, "--workers")
    with open_session(c.config) as session:
        inv = cluster_inventory(session)
        share = nfs.read_share(c.config, inv, {})
        venv = ray.read(c.config, inv, {}).venv
        daemon = docker.read(c.config, inv, {}).daemon
        chosen = select_nodes(inv, nodes)
        if not _confirmed(", ".join(x.name for x in chosen), yes):
            print("reset: nothing done")
            return
        first = run_step(session, chosen, lambda r: reset_ops.stop_and_unmount(r, share, r.node.is_head, venv),
                         workers=n)
        going = [r.node for r in first if not r.failed]
        second = run_step(session, going, lambda r: reset_ops.remove_the_rest(r, share, r.node.is_head, daemon, packages),
                          workers=n)
        results = merge_phases(chosen, [first, second])
    report_step("reset", results)
