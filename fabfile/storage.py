"""`inv storage.setup`, `storage.verify`, `storage.unmount`: one shared directory, NFS or sshfs.

`storage.setup --backend auto` checks every node's kernel and picks NFS where
it can work, else sshfs (FUSE), and says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import cluster_inventory, open_session, select_nodes
from .core.connection import Session
from .core.errors import number_option, reported
from .core.fanout import HostResult
from .core.inventory import Node
from .core.steps import Outcome, needed, report_step, run_step

if TYPE_CHECKING:  # the step's code is imported by the task that runs it (start-up time)
    from .ops import storage

_HELP = {
    "backend": help_texts.option("storage", "auto (NFS where every kernel has it, else sshfs), nfs or sshfs"),
    "path": help_texts.option("nfs_export", "the head's shared directory"),
    "mount": help_texts.option("nfs_mount", "where workers mount it"),
    "nodes": "only these nodes (comma-separated names)",
    "workers": help_texts.option("workers", "hosts worked on at once"),
}


def _chosen(c, session: Session, title: str, backend, path, mount, nodes
            ) -> Tuple[storage.StorageSettings, Sequence[Node], str, List[HostResult]]:
    """The settings, the nodes that answered, the backend they all support, and the workers that did not answer.

    The head is read with them: without it there is no share (the run ends in one line);
    a worker that cannot be read is that worker's failure in the table, and the rest go on.
    """
    from .ops import storage
    inv = cluster_inventory(session)
    s = storage.read(c.config, inv, {"backend": backend, "path": path, "mount": mount})
    chosen = select_nodes(inv, nodes)
    read = run_step(session, [inv.head, *[n for n in chosen if not n.is_head]],
                    lambda r: Outcome(value=storage.storage_facts(r)))
    needed(read[0], title)
    facts = {r.node.name: r.value for r in read if not r.failed}
    choice = storage.choose(s.backend, inv.head, facts)
    if choice.backend is None:
        raise Exit(f"{title}: {choice.why}", code=1)
    print(f"storage: {choice.backend}" + (f" ({choice.why})" if choice.why else ""))
    return s, [n for n in chosen if n.name in facts], choice.backend, [r for r in read if r.failed]


def _on_backend(c, title: str, fn, backend, path, mount, nodes, workers):
    """Run `fn(session, inventory, nodes, share, backend, workers)` on the backend every node supports."""
    with open_session(c.config) as session:
        s, chosen, used, lost = _chosen(c, session, title, backend, path, mount, nodes)
        results = fn(session, session.inventory, chosen, s.share, used, number_option(workers, "--workers")) if chosen else []
        return used, results + lost


def _mounted(c, path, mount, nodes, workers):
    """verify without --backend: the backend is what the workers' mount points show, read from them."""
    from .ops import storage
    n = number_option(workers, "--workers")
    with open_session(c.config) as session:
        inv = cluster_inventory(session)
        s = storage.read(c.config, inv, {"path": path, "mount": mount})
        chosen = select_nodes(inv, nodes)
        found = storage.mounted_backend(storage.read_mounts(session, chosen, s.share.mount, n), s.share.mount)
        if found.backend is None:
            raise Exit(f"storage.verify: {found.why}", code=1)
        print(f"storage: {found.backend} ({found.why})")
        return found.backend, storage.round_trip(session, inv, chosen, s.share, found.backend, n)


@task(help=_HELP)
@reported
def setup(c, backend=None, path=None, mount=None, nodes=None, workers=None):
    """One shared directory from the head on every worker: NFS, sshfs, or auto (the one every node supports)."""
    from .ops import storage
    from .ops.shared.share import read_cache

    def with_cache(session, inv, chosen, share, used, n):
        return storage.setup(session, inv, chosen, share, used, n, cache=read_cache(c.config, inv, share.mount))

    used, results = _on_backend(c, "storage.setup", with_cache, backend, path, mount, nodes, workers)
    report_step(f"storage.setup ({used})", results)


@task(help={**_HELP, "backend": "nfs or sshfs (default: what the workers have mounted)"})
@reported
def verify(c, backend=None, path=None, mount=None, nodes=None, workers=None):
    """Token written on the head, read on every worker; 64 MiB write and read timed per worker."""
    from .ops import storage
    if backend is not None:
        used, results = _on_backend(c, "storage.verify", storage.round_trip, backend, path, mount, nodes, workers)
    else:
        used, results = _mounted(c, path, mount, nodes, workers)
    rates = storage.summarize((r.value.write, r.value.read) for r in results if isinstance(r.value, storage.Trip))
    if rates:
        print(rates)
    report_step(f"storage.verify ({used})", results)


@task(help={k: v for k, v in _HELP.items() if k != "backend"})
@reported
def unmount(c, path=None, mount=None, nodes=None, workers=None):
    """Undo storage.setup: unmount, remove gpufab's fstab lines and workers' keys, and the head's key lines."""
    from .ops.storage import nfs, sshfs
    n = number_option(workers, "--workers")
    with open_session(c.config) as session:
        share = nfs.share_of(c.config, session, {"path": path, "mount": mount})
        inv = session.inventory
        chosen = select_nodes(inv, nodes)
        results = run_step(session, [x for x in chosen if not x.is_head], lambda r: sshfs.unmount_worker(r, share), workers=n)
        if any(x.is_head for x in chosen):
            results = run_step(session, [inv.head], sshfs.revoke_workers) + results
    report_step("storage.unmount", results)
