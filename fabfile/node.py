"""`inv node.remove NAME`: a worker out of the cluster, and out of the inventory.

Adding a node needs no task of its own: import the longer mapping (or add
it to the inventory) and run `bootstrap` again; every step only changes
what differs, so the new node is set up whole and the others only where it
concerns them (the head authorizes its sshfs key, Ray counts it).
"""

from __future__ import annotations

from dataclasses import replace

from invoke import task

from .core.cluster import cluster_inventory, open_session
from .core.errors import InputError, reported
from .core.inventory import without_node
from .core.localfs import read_text, write_if_changed
from .core.steps import merge_phases, report_step, run_step


@task(help={"name": "the worker to remove (its inventory name)"})
@reported
def remove(c, name):
    """Take a worker out: its Ray and share stopped, gpufab's files gone from it, its keys off the others, the others'
    Ray firewall closed to it, its entry off the inventory."""
    from .ops import mesh, ray
    from .ops.storage import sshfs
    from .ops import reset as reset_ops
    with open_session(c.config) as session:
        inv = cluster_inventory(session)
        node = inv.by_name(name)
        if node.is_head:
            raise InputError(f"{name} is the head: a cluster cannot lose its head (use reset to take it all down)",
                             path="NAME")
        text = read_text(inv.path) if inv.path else None
        rest = without_node(text, name, inv.path) if text is not None else None  # a file it cannot cut: before any change
        s = reset_ops.read(c.config, inv, {})
        gone = reset_ops.reset_nodes(session, [node], s)
        head = run_step(session, [inv.head], lambda r: sshfs.forget_worker(r, name))
        others = replace(inv, nodes=tuple(n for n in inv.nodes if n.name != name))
        # The others' hostfiles, /etc/hosts and known hosts stop naming it (where they have a mesh).
        renamed = mesh.refresh(session, others, mesh.read(c.config, others, {}))
        # And their Ray ports stop accepting it: a node that was off now comes back without rejoining.
        fenced = ray.refresh_firewall(session, others, ray.read(c.config, others, {}))
        results = merge_phases([*others.nodes, node], [head, gone, renamed, fenced])
    if head[0].failed:
        print(f"node.remove: {name} stays in the inventory: the head could not drop its key")
    elif rest is not None and write_if_changed(inv.path, rest, backup=f"{inv.path}.bak"):
        print(f"node.remove: {name} removed from {inv.path} (previous version: {inv.path}.bak)")
    elif rest is None:
        print(f"node.remove: no inventory file (hosts from -H): drop {name} from -H yourself")
    report_step("node.remove", results)
