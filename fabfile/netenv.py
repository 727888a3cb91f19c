"""`inv netenv.setup` and `inv netenv.check`: the NCCL/Gloo environment of every node."""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from invoke import task

from .ops import netenv as plan
from .core.cluster import ensure_private, setting
from .core.connection import Session
from .core.errors import HostError, InputError, reported
from .core.fanout import HostResult
from .core.files import plan_files
from .core.inventory import Inventory
from .core.remote import Remote
from .core.report import host_table
from .core.steps import Outcome, details, run_task


def nic_facts(remote: Remote, head_private: str) -> Tuple[str, plan.NicFacts]:
    """This node's NIC toward the head (inventory `nic` wins), and the facts behind it."""
    facts = plan.parse_nic_facts(remote.script(plan.FACTS_SCRIPT, head_private).stdout)
    try:
        return plan.choose_nic(facts, remote.node.vars.get("nic")), facts
    except ValueError as exc:
        raise HostError(str(exc)) from None


def setup_netenv(
    remote: Remote,
    head_private: str,
    master_port: int,
    profile: str,
    secrets: Optional[Mapping[str, str]],
) -> Outcome:
    """Render netenv.env, nccl.conf and the profile snippet (and secrets.env when asked)."""
    nic, facts = nic_facts(remote, head_private)
    hcas = facts.hcas or [] if profile == "infiniband" else []
    files = plan.netenv_files(remote.node.name, nic, head_private, master_port, profile, hcas)
    if secrets is not None:
        files.append(plan.secrets_file(secrets, remote.user))
    done = remote.write_files(plan_files(files, remote.read_state(files)))
    address = ", ".join(facts.addresses.get(nic, [])) or "no IPv4"
    notes = [f"NIC {nic} ({address}, MTU {facts.mtus.get(nic, '?')})"]
    if profile == "infiniband" and not hcas:
        notes.append("no InfiniBand HCAs found (ibv_devices absent or empty): NCCL chooses")
    if secrets is not None:
        notes.append(f"secrets: {', '.join(sorted(secrets))} (values not shown)")
    return Outcome(done, notes, {"nic": nic})


def check_netenv(remote: Remote, inv: Inventory, master_port: int) -> Outcome:
    """NIC, address, MTU; can this node reach every other node's private ports?"""
    head = inv.head.private or ""
    nic, facts = nic_facts(remote, head)
    others = [n.private for n in inv.nodes if n.name != remote.node.name and n.private]
    ports = [master_port, plan.RAY_GCS_PORT]
    probes = plan.parse_probes(
        remote.script(plan.PROBE_SCRIPT, " ".join(map(str, ports)), *others, timeout=10 + 4 * len(others) * len(ports)).stdout
    )
    firewall = [line for line in remote.script(plan.FIREWALL_SCRIPT, sudo=True).stdout.splitlines() if line.strip()]
    data = {
        "nic": nic,
        "address": ", ".join(facts.addresses.get(nic, [])) or "-",
        "mtu": facts.mtus.get(nic, "?"),
        "probes": probes,
        "firewall": firewall,
        "ports": ports,
    }
    blocked = [(ip, port, state) for ip, port, state in probes if state in plan.BLOCKED]
    if blocked:
        names = {n.private: n.name for n in inv.nodes}
        raise_with = "; ".join(f"{names.get(ip, ip)}:{port} {state}" for ip, port, state in blocked)
        raise HostError(f"private ports not reachable: {raise_with}", data=data)
    return Outcome([], [], data)


def check_table(inv: Inventory) -> Callable[[Sequence[HostResult]], str]:
    names = {n.private: n.name for n in inv.nodes}

    def table(results: Sequence[HostResult]) -> str:
        ports = next((r.data["ports"] for r in results if "ports" in r.data), [])
        rows = []
        for r in results:
            d = r.data
            if "nic" not in d:
                rows.append([r.node.name, "-", "-", "-"] + ["-" for _ in ports] + [details(r)])
                continue
            cells = [plan.summarize_probes(d["probes"], names, p) for p in ports]
            firewall = "\n".join(d["firewall"]) or "no DROP/REJECT rules"
            rows.append([r.node.name, d["nic"], d["address"], d["mtu"], *cells, firewall])
        mtus = {r.data["mtu"] for r in results if "mtu" in r.data}
        text = host_table(["Node", "NIC", "Address", "MTU", *[f"port {p}" for p in ports], "Firewall"], rows)
        if len(mtus) > 1:
            text += "\nwarning: MTU differs between nodes (" + ", ".join(map(str, sorted(mtus, key=str))) + ")"
        return text

    return table


def _settings(c, session: Session, master_port, profile=None) -> Dict[str, object]:
    inv = ensure_private(session)
    if not inv.head.private:
        raise InputError(f"the head {inv.head.name} has no private address (give one in the inventory)")
    return dict(
        inv=inv,
        master_port=plan.check_port(setting(c.config, inv, "master_port", master_port, plan.DEFAULT_MASTER_PORT)),
        profile=plan.check_profile(setting(c.config, inv, "netenv_profile", profile, plan.DEFAULT_PROFILE)),
    )


_HELP = {
    "nodes": "only these nodes (comma-separated names)",
    "workers": "hosts worked on at once (default 32)",
    "master_port": f"torch.distributed rendezvous port (default {plan.DEFAULT_MASTER_PORT})",
}


@task(
    help={
        "profile": "ethernet (default) or infiniband",
        "secrets": "also write the local .env's variables to /etc/gpufab/secrets.env (0600)",
        "env_file": "the .env file for --secrets (default .env)",
        **_HELP,
    }
)
@reported
def setup(c, profile=None, master_port=None, secrets=False, env_file=".env", nodes=None, workers=None):
    """Write NCCL/Gloo settings per node for the NIC that reaches the head."""
    load = plan.load_secrets(env_file) if secrets else None

    def step(session):
        values = _settings(c, session, master_port, profile)
        head = values["inv"].head.private
        return lambda r: setup_netenv(r, head, values["master_port"], values["profile"], load)

    run_task(c.config, "netenv.setup", step, nodes=nodes, workers=workers)


@task(help=_HELP)
@reported
def check(c, master_port=None, nodes=None, workers=None):
    """Per node: NIC, address, MTU, other nodes' ports reachable, firewall rules."""
    holder = {}

    def step(session):
        values = _settings(c, session, master_port)
        holder["inv"] = values["inv"]
        return lambda r: check_netenv(r, values["inv"], values["master_port"])

    def table(results):
        return check_table(holder["inv"])(results)

    run_task(c.config, "netenv.check", step, nodes=nodes, workers=workers, table=table)
