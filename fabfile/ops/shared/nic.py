"""The node's NIC toward the head's private address, and the facts behind the choice.

netenv writes it for NCCL/Gloo; the NFS export is opened to the network it is on. Found per node
from the route, because rented nodes of one cluster name the same port differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from ...core import programs
from ...core.cluster import VIRTUAL_PREFIXES
from ...core.errors import HostError
from ...core.inventory import USER_RE
from ...core.remote import Remote
from . import infiniband


#: Everything needed to choose a NIC, in one round trip. $1 = head private IP; $2 `known` where the run
#: has the InfiniBand ports already.
FACTS_SCRIPT = programs.text("netenv-facts.sh", ib_sysfs=infiniband.SYSFS, ib_gids=infiniband.GIDS_READ)


@dataclass(frozen=True)
class NicFacts:
    route_dev: Optional[str]
    #: The interface holding the head's address, when this node is the head.
    owner: Optional[str]
    addresses: Dict[str, List[str]]
    mtus: Dict[str, int]
    hcas: Optional[List[str]]
    #: InfiniBand/RoCE ports from sysfs.
    ib: infiniband.IbFacts = infiniband.IbFacts((), False)
    #: The SSH user's group (secrets.env is readable by it).
    group: Optional[str] = None
    #: The interface of the default route: the front-end, never an NCCL rail.
    default_dev: Optional[str] = None


def parse_route_dev(text: str) -> Optional[str]:
    """The `dev` of `ip -o route get ADDR` output, or None (no route, error)."""
    match = re.search(r"\bdev (\S+)", text)
    return match.group(1) if match else None


def parse_nic_facts(text: str) -> NicFacts:
    route = owner = None
    addresses: Dict[str, List[str]] = {}
    mtus: Dict[str, int] = {}
    hcas: Optional[List[str]] = None
    group = default_dev = None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "route":
            route = parse_route_dev(value)
        elif key == "owner":
            owner = value.strip() or None
        elif key == "addr":
            name, _, cidr = value.partition(" ")
            addresses.setdefault(name, []).append(cidr.strip())
        elif key == "link":
            name, _, mtu = value.partition(" ")
            if mtu.strip().isdigit():
                mtus[name] = int(mtu)
        elif key == "hcas":
            hcas = value.split()
        elif key == "group" and USER_RE.match(value.strip()):
            group = value.strip()
        elif key == "defroute" and value.strip():
            default_dev = value.strip()
    return NicFacts(route, owner, addresses, mtus, hcas, infiniband.parse_sysfs(text), group, default_dev)


def choose_nic(facts: NicFacts, override: Optional[str] = None) -> str:
    """The node's NIC toward the head; ValueError naming the problem otherwise."""
    if override:
        if override not in facts.mtus:
            known = ", ".join(sorted(n for n in facts.mtus if not n.startswith(VIRTUAL_PREFIXES))) or "none"
            raise ValueError(f"interface {override} (inventory nic) does not exist here; this node has: {known}")
        return override
    if facts.route_dev == "lo":  # the head: its own address routes via lo
        if facts.owner:
            return facts.owner
        raise ValueError("the head's private address routes via lo but no interface holds it")
    if not facts.route_dev:
        raise ValueError("no route to the head's private address")
    return facts.route_dev


def nic_facts(remote: Remote, head_private: str) -> Tuple[str, NicFacts]:
    """This node's NIC toward the head (inventory `nic` wins), and the facts behind it."""
    ib_known = remote.facts.flag(infiniband.PORTS)
    facts = parse_nic_facts(remote.script(FACTS_SCRIPT, head_private, ib_known).stdout)
    facts = replace(facts, ib=remote.facts.kept(infiniband.PORTS, ib_known, lambda: facts.ib, remote))
    try:
        return choose_nic(facts, remote.node.vars.get("nic")), facts
    except ValueError as exc:
        raise HostError(str(exc)) from None
