"""`inv reset` / `gpufab reset`: take away what gpufab added to the nodes (see ops/reset.py).

Asks first: it takes a cluster down. The work is ops.reset.reset_nodes.
"""

from __future__ import annotations

from invoke import task

from . import help_texts
from .core.cluster import cluster_inventory, open_session, select_nodes
from .core.errors import InputError, confirmed, number_option, reported
from .core.steps import report_step


@task(
    auto_shortflags=False,
    help={
        "yes": "do not ask (needed without a terminal)",
        "packages": "also purge the packages gpufab installed (Docker, sshfs, NFS...; never openssh-server)",
        "nodes": "only these nodes (comma-separated names)",
        "workers": help_texts.option("workers", "hosts worked on at once"),
    },
)
@reported
def reset(c, yes=False, packages=False, nodes=None, workers=None):
    """Undo bootstrap on the nodes (like `ray down`): units, mounts, fstab lines, keys, files; --packages too."""
    from .ops import reset as reset_ops
    n = number_option(workers, "--workers")
    with open_session(c.config) as session:
        inv = cluster_inventory(session)
        s = reset_ops.read(c.config, inv, {"packages": packages})
        chosen = select_nodes(inv, nodes)
        names = ", ".join(x.name for x in chosen)
        no_terminal = InputError("reset removes gpufab's setup from the nodes: pass --yes to do it without a terminal",
                                 path="--yes")
        if not (yes or confirmed(f"reset {names}: stop Ray, unmount the share, remove gpufab's files?", no_terminal)):
            print("reset: nothing done")
            return
        results = reset_ops.reset_nodes(session, chosen, s, workers=n)
    report_step("reset", results)
