"""From an Invoke context to the nodes of this run and their connections.

Tasks stay thin: they ask this module for the inventory (from `fab -H`, the
`GPUFAB_INVENTORY` variable, the `gpufab.inventory` config key, or the
default: `inventory/hosts.yaml` where the current directory has `inventory/`,
else `~/.config/gpufab/hosts.yaml`) and for a Session over it.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .connection import Session, gpufab_setting
from .errors import InputError
from .fanout import OK, HostResult, fan_out
from .inventory import Inventory, Node, load_inventory, nodes_from_hosts, with_private
from .networks import Reach, read_reach
from .remote import run_parsed
from .declared import CONFIG, NAMES, SWITCH, TEXT, Setting, declare

#: Interfaces that are never a node's private NIC (bridges, tunnels, container links).
VIRTUAL_PREFIXES = ("lo", "docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "tun", "tap", "wg", "zt", "tailscale")

DEFAULT_INVENTORY = "inventory/hosts.yaml"
ENV_INVENTORY = "GPUFAB_INVENTORY"


def inventory_path(config: Any) -> str:
    """Which inventory file a run uses: env var, then config key, then the default."""
    return os.environ.get(ENV_INVENTORY) or gpufab_setting(config, "inventory") or default_inventory()


def default_inventory() -> str:
    """The repository's (or any project's) `inventory/`, else the user's config directory.

    An installed `gpufab` runs from anywhere: its clusters must not depend on
    the directory it happens to be started in, unless that one is a project.
    """
    if os.path.isdir(os.path.dirname(DEFAULT_INVENTORY)):
        return DEFAULT_INVENTORY
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "gpufab", "hosts.yaml")


def cli_hosts(config: Any) -> Optional[List[str]]:
    hosts = gpufab_setting(config, "hosts")
    return list(hosts) if hosts else None


def resolve_inventory(config: Any) -> Inventory:
    """The nodes of this run: `fab -H` hosts if given, else the inventory file."""
    hosts = cli_hosts(config)
    if hosts:
        return nodes_from_hosts(hosts)
    return load_inventory(inventory_path(config))


def open_session(config: Any, inventory: Optional[Inventory] = None, **kwargs: Any) -> Session:
    return Session(inventory or resolve_inventory(config), config, **kwargs)


def select_nodes(inv: Inventory, names: Optional[str]) -> Tuple[Node, ...]:
    """`--nodes node1,node3` narrows a run to some nodes (nodeset names only)."""
    if not names:
        return inv.nodes
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise InputError(f"no node named in {names!r} (give names such as node0,node2)", path="--nodes")
    return tuple(inv.by_name(n) for n in wanted)


# --------------------------------------------------------------------------- #
# Private address discovery for `fab -H` (no inventory to say it)



def parse_addresses(text: str) -> List[Tuple[str, ipaddress.IPv4Interface]]:
    """Parse `ip -o -4 addr show` into (interface, address/prefix) pairs."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            out.append((parts[1], ipaddress.IPv4Interface(parts[3])))
    return out


def choose_private(
    facts: Dict[str, Sequence[Tuple[str, ipaddress.IPv4Interface]]],
    ssh_addresses: Dict[str, str],
    subnet: Optional[str] = None,
) -> Dict[str, str]:
    """Pick each host's private address from its interfaces.

    With `subnet` given, each host's address in it. Otherwise the IPv4 network
    that every host has an address in, other than the one SSH used and the
    virtual bridges every host has alike (docker0 is 172.17.0.1 everywhere);
    addresses must differ between hosts for a network to count as shared.
    """
    if subnet:
        try:
            net = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError:
            raise InputError(f"invalid private subnet {subnet!r}", path="--private-subnet") from None
        chosen = {}
        for host, addrs in facts.items():
            match = [a for _, a in addrs if a.ip in net]
            if not match:
                raise InputError(f"host {host} has no address in {net}", path="--private-subnet")
            chosen[host] = str(match[0].ip)
        return chosen

    candidates: Dict[str, Dict[ipaddress.IPv4Network, str]] = {}
    for host, addrs in facts.items():
        ssh_ip = ssh_addresses.get(host)
        nets: Dict[ipaddress.IPv4Network, str] = {}
        for ifname, addr in addrs:
            if ifname.startswith(VIRTUAL_PREFIXES) or addr.ip.is_loopback:
                continue
            if ssh_ip is not None and str(addr.ip) == ssh_ip:
                continue
            nets.setdefault(addr.network, str(addr.ip))
        candidates[host] = nets
    hosts = list(facts)
    if len(hosts) == 1:
        nets = candidates[hosts[0]]
        if len(nets) == 1:
            return {hosts[0]: next(iter(nets.values()))}
        return {hosts[0]: ssh_addresses.get(hosts[0]) or ""}
    shared = set.intersection(*(set(candidates[h]) for h in hosts))
    shared = {net for net in shared if len({candidates[h][net] for h in hosts}) == len(hosts)}
    if not shared:
        raise InputError(
            "no IPv4 subnet is shared by all hosts besides the SSH one; give --private-subnet CIDR",
            path="--hosts",
        )
    # Several: prefer private ranges, then the smallest network.
    net = sorted(shared, key=lambda n: (not n.is_private, -n.prefixlen))[0]
    return {h: candidates[h][net] for h in hosts}


ADDRESSES_CMD = 'echo "$SSH_CONNECTION"; ip -o -4 addr show'


def ensure_private(session: Session, subnet: Optional[str] = None, workers: Optional[int] = None) -> Inventory:
    """Fill in private addresses the inventory does not give, by asking the hosts.

    Returns the session's inventory with private addresses set (and stores it
    back on the session). Unreachable hosts are left without one; the step
    that needs it reports them.
    """
    inv = session.inventory
    missing = [n for n in inv.nodes if not n.private]
    if not missing and not subnet:
        return inv

    def addresses(conn: Any, node: Node) -> HostResult:
        out = run_parsed(conn, ADDRESSES_CMD, timeout=session.fact_timeout).stdout
        first, _, rest = out.partition("\n")
        # SSH_CONNECTION's third field is the address SSH reached, as the host
        # sees it (behind NAT it differs from the one we dialled).
        fields = first.split()
        ssh_ip = fields[2] if len(fields) == 4 else None
        return HostResult(node, OK, value=(parse_addresses(rest), ssh_ip))

    targets = inv.nodes if subnet else missing
    results = [r for r in fan_out(session, targets, addresses, workers=workers) if not r.failed]
    if not results:
        return inv
    facts = {r.node.name: r.value[0] for r in results}
    ssh_ips = {r.node.name: r.value[1] for r in results}
    chosen = choose_private(facts, ssh_ips, subnet)
    session.inventory = with_private(inv, {k: v for k, v in chosen.items() if v})
    return session.inventory


def setting(config: Any, inventory: Inventory, key: str, cli: Any = None, default: Any = None,
            node: Optional[Node] = None) -> Any:
    """One knob, by precedence: command line, node vars, inventory vars, config, default.

    Config keys live under `gpufab:` in invoke.yaml / fabric.yaml, with the
    same name as the inventory variable (`nofile`, `netenv_profile`, ...).
    """
    if cli is not None:
        return cli
    if node is not None and node.vars.get(key) is not None:
        return node.vars[key]
    if inventory.vars.get(key) is not None:
        return inventory.vars[key]
    return gpufab_setting(config, key, default)


def reach_of(config: Any, inventory: Inventory) -> Reach:
    """The cluster's idea of private (vars `private_ranges`, `allow_public_networks`), read the same for every step."""
    return read_reach(setting(config, inventory, "private_ranges"), setting(config, inventory, "allow_public_networks"))


def cluster_inventory(session: Session) -> Inventory:
    """The inventory with private addresses known, for a task that cannot do without the head's."""
    inv = ensure_private(session)
    if not inv.head.private:
        raise InputError(f"the head {inv.head.name} has no private address (give one in the inventory)")
    return inv


def switch(value: Any) -> bool:
    """An on/off inventory variable: YAML's booleans, or `off`, `no`, `false`, `0`, `none` as text."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "off", "0", "none", "")
    return bool(value)


DECLARED = declare(
    "core.cluster",
    Setting("inventory", "the inventory file (GPUFAB_INVENTORY wins)", DEFAULT_INVENTORY, (CONFIG,),
            kind=TEXT),
    Setting("hosts", "the hosts of a run without an inventory (what `-H` sets), the first one the head", "none",
            (CONFIG,),
            kind=NAMES),
    Setting("private_ranges", "more address ranges that count as the cluster's private network",
            "RFC 1918, 100.64/10, fc00::/7",
            kind=NAMES),
    Setting("allow_public_networks", "let listeners bind addresses outside the private ranges (warned every run)",
            "false",
            kind=SWITCH, check=switch),
)
