"""InfiniBand and RoCE ports, read from sysfs: what NCCL needs to use them.

NCCL falls back to TCP without a word when it finds no usable HCA, so a
cluster with 400 Gb/s InfiniBand can train over the 10 Gb/s management
ethernet. The facts come from `/sys/class/infiniband/*/ports/*`, which the
kernel fills as soon as the HCA driver is loaded: no rdma-core tools needed
to find them, though NCCL itself needs libibverbs to use them (checked too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from ...core import programs
from ...core.facts import Fact

#: Where the kernel lists RDMA devices (a lab test mounts a synthetic tree here).
SYSFS = "/sys/class/infiniband"
#: GID table entries read per port: RoCE v2 with an IPv4 address is usually among the first few.
GIDS_READ = 16

#: One line per port, then its RoCE GIDs; also whether libibverbs is present (NCCL dlopens it).
#: Lines: `ibport=DEV PORT|STATE|LINK_LAYER|RATE|NETDEVS|PHYS_STATE|VF`, `ibgid=DEV PORT INDEX|TYPE|GID`,
#: `verbs=yes|no`. VF is `vf` for an SR-IOV virtual function (a cloud's VM NIC).
SCRIPT = programs.call("ib_ports", ib_sysfs=SYSFS, ib_gids=GIDS_READ)

#: RoCE v2 GIDs that carry an IPv4 address (`::ffff:a.b.c.d`): the ones NCCL should use by default.
_IPV4_GID = re.compile(r"^0000:0000:0000:0000:0000:ffff:[0-9a-f]{4}:[0-9a-f]{4}$")


@dataclass(frozen=True)
class IbPort:
    device: str  # mlx5_0
    port: int
    state: str  # ACTIVE, DOWN, INIT ...
    link_layer: str  # InfiniBand or Ethernet (RoCE)
    rate: str  # "400 Gb/sec (4X NDR)"
    netdevs: Tuple[str, ...] = ()
    #: RoCE v2 GID index with an IPv4 address (None: not RoCE, or none found).
    gid_index: Optional[int] = None
    #: LinkUp, Polling, Disabled ... (the cable's state, beside the port's `state`).
    phys_state: str = ""
    #: An SR-IOV virtual function (what a cloud hands a VM).
    vf: bool = False

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @property
    def waiting_for_sm(self) -> bool:
        """Link up but not ACTIVE: INIT/ARMED means no subnet manager has brought the port up."""
        return self.state in ("INIT", "ARMED") and not self.roce

    @property
    def front_end(self) -> bool:
        """A port that carries the node's ordinary traffic, not a fabric rail: a bond of the front-end NICs
        (`mlx5_bond_0`), or a cloud's accelerated-networking function (Azure's `mlx5_an0`)."""
        return bool(re.search(r"bond|_an\d+$", self.device))

    @property
    def roce(self) -> bool:
        return self.link_layer == "Ethernet"

    @property
    def name(self) -> str:
        return f"{self.device}:{self.port}"

    @property
    def rate_gbps(self) -> float:
        match = re.match(r"^\s*(\d+(?:\.\d+)?)", self.rate)
        return float(match.group(1)) if match else 0.0

    @property
    def gbps(self) -> str:
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec", self.rate)
        return f"{match.group(1)} Gb/s" if match else (self.rate or "?")


@dataclass(frozen=True)
class IbFacts:
    ports: Tuple[IbPort, ...]
    #: libibverbs.so.1 is installed: NCCL's IB transport can load.
    verbs: bool

    @property
    def active(self) -> List[IbPort]:
        return [p for p in self.ports if p.active]

    def rails(self, front_end: Sequence[str] = ()) -> List[IbPort]:
        """The ports NCCL should move data over between nodes.

        Never a front-end port: by name (`mlx5_bond_0`, Azure's `mlx5_an0`) or
        carrying one of the `front_end` interfaces (the node's default route).
        Then the InfiniBand ports where the node has any: an active RoCE port
        beside them is a front-end or storage NIC, not a rail. Without
        InfiniBand, the RoCE ports at the node's fastest rate: a slower port
        beside 400 Gb/s rails is a front-end or storage NIC, and would hold
        every rail to its speed.
        """
        fabric = [p for p in self.active if not p.front_end and not set(p.netdevs) & set(front_end)]
        ib = [p for p in fabric if p.link_layer == "InfiniBand"]
        if ib:
            return ib
        roce = [p for p in fabric if p.roce]
        top = max((p.rate_gbps for p in roce), default=0.0)
        return [p for p in roce if p.rate_gbps == top]

    @property
    def waiting_for_sm(self) -> List[IbPort]:
        return [p for p in self.ports if p.waiting_for_sm]


def _state(text: str) -> str:
    """`4: ACTIVE` (sysfs) or `PORT_ACTIVE (4)` (ibv_devinfo) -> `ACTIVE`."""
    text = text.strip()
    match = re.match(r"^\d+:\s*(\S+)", text) or re.match(r"^PORT_(\S+)", text)
    return match.group(1) if match else text or "?"


def parse_sysfs(text: str) -> IbFacts:
    """SCRIPT's output -> the ports (in device, port order) and whether verbs is there."""
    ports: Dict[Tuple[str, int], IbPort] = {}
    gids: Dict[Tuple[str, int], List[Tuple[int, str, str]]] = {}
    verbs = False
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ibport":
            fields = value.split("|")
            head = fields[0].split()
            if len(fields) < 4 or len(head) != 2 or not head[1].isdigit():
                continue
            dev, port = head[0], int(head[1])
            netdevs = tuple(fields[4].split()) if len(fields) > 4 else ()
            phys = _state(fields[5]) if len(fields) > 5 and fields[5].strip() else ""
            vf = len(fields) > 6 and fields[6].strip() == "vf"
            ports[(dev, port)] = IbPort(dev, port, _state(fields[1]), fields[2].strip(), fields[3].strip(), netdevs,
                                        phys_state=phys, vf=vf)
        elif key == "ibgid":
            fields = value.split("|")
            head = fields[0].split()
            if len(fields) == 3 and len(head) == 3 and head[1].isdigit() and head[2].isdigit():
                gids.setdefault((head[0], int(head[1])), []).append((int(head[2]), fields[1].strip(), fields[2].strip()))
        elif key == "verbs":
            verbs = value.strip() == "yes"
    out = []
    for key in sorted(ports):
        port = ports[key]
        if port.roce:
            port = replace(port, gid_index=roce_gid_index(gids.get(key, [])))
        out.append(port)
    return IbFacts(tuple(out), verbs)


def read_ports(remote) -> IbFacts:
    return parse_sysfs(remote.script(SCRIPT, warn=True, timeout=30).stdout)


#: The node's ports, read once per run for every step that needs them; a package (libibverbs) can change them.
PORTS = Fact("InfiniBand ports", read_ports, stale_after=("packages",))


def roce_gid_index(entries: Sequence[Tuple[int, str, str]]) -> Optional[int]:
    """The first RoCE v2 GID holding an IPv4 address: what NCCL_IB_GID_INDEX should name."""
    for index, kind, gid in sorted(entries):
        if kind.lower().replace(" ", "") == "rocev2" and _IPV4_GID.match(gid.lower()):
            return index
    return None


def parse_ibv_devinfo(text: str) -> List[IbPort]:
    """`ibv_devinfo` output -> its ports: a second source where rdma-core is installed."""
    ports: List[IbPort] = []
    device = None
    current: Dict[str, str] = {}

    def flush() -> None:
        if device and current.get("port"):
            ports.append(IbPort(device, int(current["port"]), _state(current.get("state", "")),
                                current.get("link_layer", ""), ""))

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("hca_id:"):
            flush()
            current = {}
            device = line.split(":", 1)[1].strip()
        elif re.match(r"^port:\s*\d+$", line):
            flush()
            current = {"port": line.split(":", 1)[1].strip()}
        elif current and ":" in line:
            key, _, value = line.partition(":")
            current.setdefault(key.strip(), value.strip())
    flush()
    return ports


_IBSTAT_STATES = {"active": "ACTIVE", "initializing": "INIT", "init": "INIT", "armed": "ARMED", "down": "DOWN"}


def parse_ibstat(text: str) -> List[IbPort]:
    """`ibstat` (`CA 'mlx5_0'` ... `Port 1:` ... `State: Active`) or `ibstatus` (`Infiniband device 'mlx5_0'
    port 1 status:` ... `state: 4: ACTIVE`) -> its ports: what operators paste, and what the lab's GPU
    profiles turn into a sysfs tree."""
    ports: List[IbPort] = []
    device: Optional[str] = None
    current: Dict[str, str] = {}

    def flush() -> None:
        if device and current.get("port", "").isdigit():
            state = current.get("state", "")
            word = state.split(":")[-1].strip().lower()
            rate = current.get("rate", "")
            ports.append(IbPort(device, int(current["port"]), _IBSTAT_STATES.get(word, _state(state)),
                                current.get("link layer", current.get("link_layer", "")),
                                rate if "Gb/sec" in rate else (f"{rate} Gb/sec" if rate else ""),
                                phys_state=current.get("physical state", current.get("phys state", "")).split(":")[-1].strip()))

    for raw in text.splitlines():
        line = raw.strip()
        ca = re.match(r"^CA '([^']+)'", line)
        status = re.match(r"^Infiniband device '([^']+)' port (\d+) status:", line)
        port = re.match(r"^Port (\d+):$", line)
        if ca or status or port:
            flush()
            current = {"port": status.group(2)} if status else ({"port": port.group(1)} if port else {})
            device = (ca or status).group(1) if (ca or status) else device
        elif current and ":" in line:
            key, _, value = line.partition(":")
            current.setdefault(key.strip().lower(), value.strip())
    flush()
    return ports


def nccl_settings(facts: IbFacts, front_end: Sequence[str] = ()) -> Dict[str, str]:
    """NCCL variables for the node's fabric rails (`IbFacts.rails`); empty when it has none (ethernet settings
    apply).

    `=` before the list makes NCCL match names exactly: `mlx5_1` must not also take `mlx5_10`. A GID index
    only for RoCE rails: InfiniBand ignores it (NCCL reads GIDs only where the link layer is Ethernet).
    """
    rails = facts.rails(front_end)
    if not rails:
        return {}
    out = {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "=" + ",".join(p.name for p in rails)}
    if any(p.roce for p in rails):
        indexes = sorted({p.gid_index for p in rails if p.gid_index is not None})
        # One index for every port: NCCL takes a single value. 3 is RoCE v2/IPv4 on most Mellanox setups.
        out["NCCL_IB_GID_INDEX"] = str(indexes[0] if indexes else 3)
    return out


#: What `docker run` needs for a container to use the HCAs.
CONTAINER_FLAGS = "--device /dev/infiniband --cap-add IPC_LOCK --ulimit memlock=-1"


def summary(facts: Optional[IbFacts]) -> str:
    """`8 × 400 Gb/s IB active (front-end mlx5_bond_0:1)` / `2 × 100 Gb/s RoCE active` / `none`: one cell, the fabric
    rails counted (what NCCL gets), the front-end named apart."""
    if facts is None:
        return "-"
    if not facts.ports:
        return "none"
    active = facts.active
    if not active:
        return f"{len(facts.ports)} ports, none active"
    rails = facts.rails()
    front = [p.name for p in active if p not in rails]
    if not rails:
        return f"front-end only ({', '.join(front)})"
    kinds = sorted({f"{p.gbps} {'RoCE' if p.roce else 'IB'}" for p in rails})
    return f"{len(rails)} × {', '.join(kinds)} active" + (f" (front-end {', '.join(front)})" if front else "")
