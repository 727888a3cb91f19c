"""`netenv`: which NIC each node must use for NCCL / Gloo, and the files that say so.

The NIC is found per node from the route to the head's private address,
because rented nodes of one cluster name the same port differently
(`enp27s0f0np0` here, `ens14np0` there) and `eth0` is usually the public one.
Secrets from the controller's `.env` go to their own 0600 file and are never
shown: the report names keys, not values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.chain import Step, every_node
from ..core.cluster import setting
from ..core.errors import HostError, InputError
from ..core.files import ManagedFile, plan_files, render
from ..core.inventory import Inventory
from ..core.remote import Remote
from ..core.steps import Outcome, Seen
from .shared import infiniband
from .shared.nic import NicFacts, nic_facts
from .shared.nodeenv import ENV_FILE, MESH_HOSTFILE, MESH_HOSTS, env_lines, mesh_on, skipped_by_inventory
from .shared.ports import DEFAULT_MASTER_PORT, check_port
from .shared.rayauth import ray_auth_on, ray_auth_supported
from .shared.secrets import SECRETS_FILE, load_secrets
from .shared.share import read_cache, share_paths
from ..core.declared import NODE, PORT, Setting, choice, declare, owns, text
from ..core.context import RunContext

#: auto: infiniband on nodes with an active InfiniBand/RoCE port, ethernet elsewhere (per node);
#: ethernet: sockets over the netenv NIC, NVLink/PCIe P2P and shared memory on (the fast paths
#: inside a node); conservative: the seed guide's settings, P2P and SHM off too, for nodes
#: where P2P hangs (some virtualised/passthrough machines); infiniband: the HCAs for data.
PROFILES = ("auto", "ethernet", "conservative", "infiniband")
DEFAULT_PROFILE = "auto"
DEFAULT_TIMEOUT_MS = 60000
#: Ports netenv.check probes on every other node: rendezvous and Ray's GCS.
RAY_GCS_PORT = 6379

NCCL_CONF = "/etc/nccl.conf"
PROFILE_SNIPPET = "/etc/profile.d/gpufab-netenv.sh"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise InputError(f"unknown netenv profile {profile!r} (expected one of: {', '.join(PROFILES)})", path="--profile")
    return profile


def netenv_files(
    node: str,
    nic: str,
    master_addr: str,
    master_port: int,
    profile: str,
    hcas: Sequence[str] = (),
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    mesh: bool = False,
    hf_home: Optional[str] = None,
    ib: Optional[Mapping[str, str]] = None,
    why: str = "",
    ray_auth: bool = False,
) -> List[ManagedFile]:
    """netenv.env (the source of truth), nccl.conf (its NCCL_ part), the profile snippet.

    `ib`: the node's NCCL InfiniBand/RoCE settings (profile auto or
    infiniband); without them the node gets the ethernet settings. With
    `mesh`, it also names the hostfiles mesh.setup writes: what a job script
    reads to find the other nodes.
    """
    if ib is None and profile == "infiniband":
        ib = forced_ib(hcas)
    env = render(
        "netenv/netenv.env.j2",
        node=node,
        nic=nic,
        master_addr=master_addr,
        master_port=master_port,
        profile=profile,
        why=why,
        ib=dict(ib) if ib else None,
        timeout_ms=timeout_ms,
        hostfiles={"GPUFAB_HOSTFILE": MESH_HOSTFILE, "GPUFAB_HOSTS": MESH_HOSTS} if mesh else {},
        hf_home=hf_home,
        ray_auth=ray_auth,
    )
    return [
        ManagedFile(ENV_FILE, env),
        ManagedFile(NCCL_CONF, render("netenv/nccl.conf.j2", values=env_lines(env))),
        ManagedFile(PROFILE_SNIPPET, render("netenv/profile.sh.j2")),
    ]


def secrets_file(secrets: Mapping[str, str], group: str) -> ManagedFile:
    """Root's, readable by the SSH user's group (who runs jobs): root's login shells and Ray's units source it,
    so the SSH user (and anything running as them, a Ray task) must not be able to write it."""
    return ManagedFile(
        SECRETS_FILE,
        render("netenv/secrets.env.j2", secrets=dict(secrets)),
        mode=0o600 if group == "root" else 0o640,
        owner="root",
        group=group,
        secret=True,
    )


# --------------------------------------------------------------------------- #
# netenv.check

#: Probe TCP ports of other nodes. $1 = ports (space-separated), then IPs.
#: Prints `ip port open|refused|timeout|unreachable`.
PROBE_SCRIPT = programs.text("netenv-probe.sh")

#: Firewall rules that can drop incoming traffic: nft input-hook chains when
#: nft exists (it also shows iptables-nft rules), else iptables-save's INPUT.
#: gpufab's own table for Ray (ops/ray.py) drops only what comes from outside the cluster: left out.
FIREWALL_SCRIPT = programs.text("netenv-firewall.sh")

#: Probe results that mean the network path itself is broken.
BLOCKED = ("timeout", "unreachable")


def parse_probes(text: str) -> List[Tuple[str, int, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            out.append((parts[0], int(parts[1]), parts[2]))
    return out


def summarize_probes(probes: Sequence[Tuple[str, int, str]], names: Mapping[str, str], port: int) -> str:
    """One cell: `2/2 open`, or which nodes did not answer and how."""
    on_port = [(ip, state) for ip, p, state in probes if p == port]
    if not on_port:
        return "-"
    opened = sum(1 for _, state in on_port if state == "open")
    if opened == len(on_port):
        return f"{opened}/{len(on_port)} open"
    others = ", ".join(f"{names.get(ip, ip)} {state}" for ip, state in on_port if state != "open")
    return f"{opened}/{len(on_port)} open; {others}"


def forced_ib(hcas: Sequence[str]) -> Dict[str, str]:
    """Profile infiniband where sysfs shows no active port: IB on, the HCAs ibv_devices lists (or NCCL's choice)."""
    return {"NCCL_IB_DISABLE": "0", **({"NCCL_IB_HCA": ",".join(hcas)} if hcas else {})}


def ib_choice(profile: str, facts: NicFacts) -> Tuple[Optional[Dict[str, str]], str]:
    """(NCCL InfiniBand settings or None for ethernet, why): per node, from its own ports."""
    front = [facts.default_dev] if facts.default_dev else []
    found = infiniband.nccl_settings(facts.ib, front)
    active = ", ".join(f"{p.name} {p.gbps} {'RoCE' if p.roce else 'IB'}" for p in facts.ib.rails(front))
    if profile == "auto":
        if found:
            return found, f"active ports: {active}"
        return None, ("no active InfiniBand/RoCE fabric port (front-end only: "
                      f"{', '.join(p.name for p in facts.ib.active)}): ethernet" if facts.ib.active
                      else "no active InfiniBand/RoCE port: ethernet")
    if profile == "infiniband":
        if found:
            return found, f"active ports: {active}"
        return forced_ib(facts.hcas or []), "asked for; no active port in sysfs"
    return None, ""


def setup_netenv(
    remote: Remote,
    head_private: str,
    master_port: int,
    profile: str,
    secrets: Optional[Mapping[str, str]],
    mesh: bool = False,
    hf_home: Optional[str] = None,
    ray_auth: bool = False,
) -> Outcome:
    """Render netenv.env, nccl.conf and the profile snippet (and secrets.env when asked)."""
    nic, facts = nic_facts(remote, head_private)
    ib, why = ib_choice(profile, facts)
    files = netenv_files(remote.node.name, nic, head_private, master_port, profile, mesh=mesh, hf_home=hf_home,
                         ib=ib, why=why, ray_auth=ray_auth)
    if secrets is not None:
        files.append(secrets_file(secrets, "root" if remote.is_root else facts.group or remote.user))
    done = remote.write_files(plan_files(files, remote.read_state(files)))
    address = ", ".join(facts.addresses.get(nic, [])) or "no IPv4"
    notes = [f"NIC {nic} ({address}, MTU {facts.mtus.get(nic, '?')})"]
    if ib:
        notes.append(f"InfiniBand: NCCL_IB_HCA={ib.get('NCCL_IB_HCA', '(NCCL chooses)')} ({why})")
    if profile == "infiniband" and not ib.get("NCCL_IB_HCA"):
        notes.append("no InfiniBand HCAs found (no active port in sysfs, ibv_devices absent or empty): NCCL chooses")
    if secrets is not None:
        notes.append(f"secrets: {', '.join(sorted(secrets))} (values not shown)")
    return Outcome(done, notes, NetenvState(nic))


@dataclass(frozen=True)
class PortCheck:
    """netenv.check on one node: its NIC, and what every other node's ports answered."""

    nic: str
    address: str
    mtu: str
    probes: Tuple[Tuple[str, int, str], ...]
    firewall: Tuple[str, ...]
    ports: Tuple[int, ...]


def check_netenv(remote: Remote, inv: Inventory, master_port: int) -> Outcome:
    """NIC, address, MTU; can this node reach every other node's private ports?"""
    head = inv.head.private or ""
    nic, facts = nic_facts(remote, head)
    others = [n.private for n in inv.nodes if n.name != remote.node.name and n.private]
    ports = [master_port, RAY_GCS_PORT]
    probes = parse_probes(
        remote.script(PROBE_SCRIPT, " ".join(map(str, ports)), *others, timeout=10 + 4 * len(others) * len(ports)).stdout
    )
    firewall = [line for line in remote.script(FIREWALL_SCRIPT, sudo=True).stdout.splitlines() if line.strip()]
    found = PortCheck(nic, ", ".join(facts.addresses.get(nic, [])) or "-", facts.mtus.get(nic, "?"),
                      tuple(probes), tuple(firewall), tuple(ports))
    blocked = [(ip, port, state) for ip, port, state in probes if state in BLOCKED]
    if blocked:
        names = {n.private: n.name for n in inv.nodes}
        raise_with = "; ".join(f"{names.get(ip, ip)}:{port} {state}" for ip, port, state in blocked)
        raise HostError(f"private ports not reachable: {raise_with}", value=found)
    return Outcome([], [], found)


@dataclass(frozen=True)
class NetenvSettings:
    head: str  # the head's private address: each node's NIC is the one that reaches it
    master_port: int
    profile: str
    #: The local .env's variables for secrets.env (None: not asked for).
    secrets: Optional[Mapping[str, str]] = None
    #: The mesh step is on for this cluster: the env file names its hostfiles.
    mesh: bool = False
    #: Shared storage is on and its cache not turned off: Hugging Face's cache in the share.
    hf_home: Optional[str] = None
    #: Ray runs with token authentication: its clients need RAY_AUTH_MODE=token.
    ray_auth: bool = False


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> NetenvSettings:
    """CLI > inventory vars `master_port`, `netenv_profile` > config > defaults; `--secrets` reads `.env`."""
    return NetenvSettings(
        head=inv.head.private or "",
        master_port=check_port(setting(config, inv, "master_port", cli.get("master_port"), DEFAULT_MASTER_PORT)),
        profile=check_profile(setting(config, inv, "netenv_profile", cli.get("profile"), DEFAULT_PROFILE)),
        secrets=load_secrets(cli.get("env_file") or ".env") if cli.get("secrets") else None,
        mesh=mesh_wanted(config, inv),
        hf_home=hf_home_of(config, inv),
        ray_auth=ray_auth_on(config, inv) and ray_auth_supported(config, inv),
    )


def mesh_wanted(config: Any, inv: Inventory) -> bool:
    """The inventory keeps the mesh step (var `mesh`, `bootstrap_skip`): a fact of the cluster, not of one run."""
    return mesh_on(config, inv) and "mesh" not in skipped_by_inventory(inv)


def hf_home_of(config: Any, inv: Inventory) -> Optional[str]:
    """HF_HOME in the share, where the inventory keeps shared storage (`storage` is also called `nfs`)."""
    if skipped_by_inventory(inv) & {"storage", "nfs"}:
        return None
    return read_cache(config, inv, share_paths(config, inv, {})[1])


@dataclass(frozen=True)
class NetenvState:
    """What a node's netenv says: its NIC, and the input path's DROP/REJECT rules."""

    nic: Optional[str]
    firewall: Tuple[str, ...] = ()


def apply(remote: Remote, s: NetenvSettings) -> Outcome:
    return setup_netenv(remote, s.head, s.master_port, s.profile, s.secrets, s.mesh, s.hf_home, s.ray_auth)


def check(remote: Remote, s: NetenvSettings) -> Outcome:
    """The verify phase: the NIC the node's env file names, and its firewall rules."""
    nic = env_lines(remote.read_text(ENV_FILE) or "").get("NCCL_SOCKET_IFNAME")
    firewall = tuple(line for line in remote.script(FIREWALL_SCRIPT, sudo=True).stdout.splitlines() if line.strip())
    return Outcome(value=NetenvState(nic, firewall))


def _report(run: RunContext, s: NetenvSettings) -> Tuple[List[str], List[str]]:
    warnings = []
    for node in run.verified():
        found = run.checked(NAME, node)
        warnings += [f"firewall rule on {node.name}: {line}" for line in (found.firewall if found else ())]
    return [], warnings


def netenv_seen(text: Optional[str], nic: str) -> Seen:
    """`gpufab status`: the node's env file there, naming the NIC the node reaches the head over."""
    if text is None:
        return Seen("missing", (f"no {ENV_FILE}",))
    named = env_lines(text).get("NCCL_SOCKET_IFNAME")
    if named != nic:
        return Seen(f"NIC {named or '-'}", (f"{ENV_FILE} names NIC {named or 'none'}; the node reaches the head "
                                            f"over {nic}",))
    return Seen(f"NIC {nic}")


def _status(run: RunContext, remote: Remote, s: NetenvSettings) -> Seen:
    return netenv_seen(remote.read_text(ENV_FILE), nic_facts(remote, s.head)[0])


NAME = "netenv"
STEP = Step(NAME, settings=read, run=every_node(NAME, apply), needs_head=True, check=check, report=_report,
            needs=("preflight",), status=_status)


DECLARED = declare(
    "ops.netenv",
    Setting("master_port", "MASTER_PORT of torch.distributed jobs (the all-reduce uses it + 17)",
            str(DEFAULT_MASTER_PORT),
            kind=PORT, check=check_port),
    Setting("netenv_profile", "which NCCL settings: auto, ethernet or infiniband", DEFAULT_PROFILE,
            kind=choice(*PROFILES), check=check_profile),
    Setting("nic", "this node's cluster NIC, where `ip route get <head>` would pick another", "found per node",
            (NODE,),
            kind=text("^[A-Za-z0-9_.:@-]{1,15}$", "interface name")),
)


OWNED = owns("ops.netenv", files=(ENV_FILE, SECRETS_FILE, NCCL_CONF, PROFILE_SNIPPET))
