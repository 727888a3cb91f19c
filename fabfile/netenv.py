"""`inv netenv.setup` and `inv netenv.check`: the NCCL/Gloo environment of every node."""

from __future__ import annotations

from typing import Callable, Sequence

from invoke import task

from . import help_texts
from .core.cluster import cluster_inventory
from .core.errors import reported
from .core.fanout import HostResult
from .core.inventory import Inventory
from .core.report import host_table
from .core.steps import details, run_task


def check_table(inv: Inventory) -> Callable[[Sequence[HostResult]], str]:
    from .ops import netenv
    names = {n.private: n.name for n in inv.nodes}

    def table(results: Sequence[HostResult]) -> str:
        ports = next((r.value.ports for r in results if r.value is not None), ())
        rows = []
        for r in results:
            d = r.value
            if d is None:
                rows.append([r.node.name, "-", "-", "-"] + ["-" for _ in ports] + [details(r)])
                continue
            cells = [netenv.summarize_probes(d.probes, names, p) for p in ports]
            firewall = "\n".join(d.firewall) or "no DROP/REJECT rules"
            rows.append([r.node.name, d.nic, d.address, d.mtu, *cells, firewall])
        mtus = {r.value.mtu for r in results if r.value is not None}
        text = host_table(["Node", "NIC", "Address", "MTU", *[f"port {p}" for p in ports], "Firewall"], rows)
        if len(mtus) > 1:
            text += "\nwarning: MTU differs between nodes (" + ", ".join(map(str, sorted(mtus, key=str))) + ")"
        return text

    return table


_HELP = {
    "nodes": "only these nodes (comma-separated names)",
    "workers": help_texts.option("workers", "hosts worked on at once"),
    "master_port": help_texts.option("master_port", "torch.distributed rendezvous port"),
}


@task(
    help={
        "profile": help_texts.option("netenv_profile", "auto (infiniband where a node has an active IB/RoCE port, else ethernet), ethernet, conservative or infiniband"),
        "secrets": "also write the local .env's variables to /etc/gpufab/secrets.env (0600)",
        "env_file": "the .env file for --secrets (default .env)",
        **_HELP,
    }
)
@reported
def setup(c, profile=None, master_port=None, secrets=False, env_file=".env", nodes=None, workers=None):
    """Write NCCL/Gloo settings per node for the NIC that reaches the head."""
    from .ops import netenv
    cli = {"profile": profile, "master_port": master_port, "secrets": secrets, "env_file": env_file}

    def step(session):
        settings = netenv.read(c.config, cluster_inventory(session), cli)
        return lambda r: netenv.apply(r, settings)

    run_task(c.config, "netenv.setup", step, nodes=nodes, workers=workers)


@task(help=_HELP)
@reported
def check(c, master_port=None, nodes=None, workers=None):
    """Per node: NIC, address, MTU, other nodes' ports reachable, firewall rules."""
    from .ops import netenv
    holder = {}

    def step(session):
        inv = holder["inv"] = cluster_inventory(session)
        settings = netenv.read(c.config, inv, {"master_port": master_port})
        return lambda r: netenv.check_netenv(r, inv, settings.master_port)

    def table(results):
        return check_table(holder["inv"])(results)

    run_task(c.config, "netenv.check", step, nodes=nodes, workers=workers, table=table)
