"""`inv mesh.setup`, `mesh.verify`, `mesh.remove`: node-to-node SSH by name, hostfiles, /etc/hosts.

For launchers that start their ranks over SSH (mpirun, DeepSpeed's pdsh,
Horovod): every node reaches every other as the SSH user, without a prompt.
"""

from __future__ import annotations

from invoke import task

from . import help_texts
from .core.cluster import cluster_inventory, open_session, select_nodes
from .core.errors import number_option, reported
from .core.steps import report_step, run_step

_HELP = {
    "nodes": "only these nodes (comma-separated names); the mesh still names every inventory node",
    "workers": help_texts.option("workers", "hosts worked on at once"),
}


def _on_cluster(c, title: str, action: str, nodes, workers) -> None:
    """`mesh.<action>(session, inventory, nodes, settings, workers)`, reported as one table."""
    from .ops import mesh
    with open_session(c.config) as session:
        inv = cluster_inventory(session)
        results = getattr(mesh, action)(session, inv, select_nodes(inv, nodes), mesh.read(c.config, inv, {}),
                                        workers=number_option(workers, "--workers"))
    report_step(title, results)


@task(help=_HELP)
@reported
def setup(c, nodes=None, workers=None):
    """The cluster key, known host keys, /etc/hosts names and hostfiles on every node (bootstrap's mesh step)."""
    _on_cluster(c, "mesh.setup", "setup", nodes, workers)


@task(help=_HELP)
@reported
def verify(c, nodes=None, workers=None):
    """From every node, `ssh NAME true` to every other node in BatchMode; a pair that fails is named."""
    _on_cluster(c, "mesh.verify", "verify", nodes, workers)


@task(help=_HELP)
@reported
def remove(c, nodes=None, workers=None):
    """Undo mesh.setup: gpufab's blocks out of /etc/hosts and ~/.ssh files, its key and hostfiles gone."""
    from .ops import mesh
    with open_session(c.config) as session:
        chosen = select_nodes(session.inventory, nodes)
        results = run_step(session, chosen, mesh.remove_node, workers=number_option(workers, "--workers"))
    report_step("mesh.remove", results)
