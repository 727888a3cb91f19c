"""`inv nfs.setup` (`nfs.server`, `nfs.client`) and `inv nfs.verify`.

The head exports a directory to the private subnet; workers mount it, only
once the server answers. Everything up to the kernel is done and checked
even where the kernel has no NFS, so a second run on such a host changes
nothing and fails with the same clear reason.
"""

from __future__ import annotations

from invoke import task

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.errors import number_option, reported
from .core.steps import report_step

_HELP = {
    "path": help_texts.option("nfs_export", "directory exported by the head"),
    "mount": help_texts.option("nfs_mount", "where workers mount it"),
    "nodes": "only these nodes (comma-separated names)",
    "workers": help_texts.option("workers", "hosts worked on at once"),
}


def run_nfs(c, title: str, server: bool, clients: bool, path, mount, nodes, workers) -> None:
    from .ops.storage import nfs
    with open_session(c.config) as session:
        share = nfs.share_of(c.config, session, {"path": path, "mount": mount})
        chosen = select_nodes(session.inventory, nodes)
        results = nfs.setup_share(session, chosen, share, server=server, clients=clients,
                                  workers=number_option(workers, "--workers"))
    report_step(title, results)


def _part(name: str, server: bool, clients: bool, doc: str):
    """nfs.setup and its two halves are the same task with the server and/or the clients."""

    def part(c, path=None, mount=None, nodes=None, workers=None):
        run_nfs(c, f"nfs.{name}", server, clients, path, mount, nodes, workers)

    part.__doc__ = doc
    return task(name=name, help=_HELP)(reported(part))


setup = _part("setup", True, True, "NFS server on the head, then the mount on every worker.")
server = _part("server", True, False, "Export the shared directory from the head to the private subnet.")
client = _part("client", False, True, "Mount the head's export on every worker (one managed fstab line).")


@task(help=_HELP)
@reported
def verify(c, path=None, mount=None, nodes=None, workers=None):
    """Write a token on the head's export and read it back on every worker."""
    from .ops.storage import nfs
    from .ops import storage
    with open_session(c.config) as session:
        share = nfs.share_of(c.config, session, {"path": path, "mount": mount})
        chosen = select_nodes(session.inventory, nodes)
        results = storage.round_trip(session, session.inventory, chosen, share, "nfs", number_option(workers, "--workers"))
    report_step("nfs.verify", results)
