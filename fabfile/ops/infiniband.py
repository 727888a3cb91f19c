"""InfiniBand and RoCE ports, read from sysfs: what NCCL needs to use them.

NCCL falls back to TCP without a word when it finds no usable HCA, so a
cluster with 400 Gb/s InfiniBand can train over the 10 Gb/s management
ethernet. The facts come from `/sys/class/infiniband/*/ports/*`, which the
kernel fills as soon as the HCA driver is loaded: no rdma-core tools needed
to find them, though NCCL itself needs libibverbs to use them (checked too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

#: Where the kernel lists RDMA devices (a lab test mounts a synthetic tree here).
SYSFS = "/sys/class/infiniband"
#: GID table entries read per port: RoCE v2 with an IPv4 address is usually among the first few.
GIDS_READ = 16

#: One line per port, then its RoCE GIDs; also whether libibverbs is present (NCCL dlopens it).
#: Lines: `ibport=DEV PORT|STATE|LINK_LAYER|RATE|NETDEVS`, `ibgid=DEV PORT INDEX|TYPE|GID`, `verbs=yes|no`.
SCRIPT = r"""
for p in SYSFS/*/ports/*; do
  [ -r "$p/state" ] || continue
  dev=${p%/ports/*}; dev=${dev##*/}; port=${p##*/}
  nets=$(ls "SYSFS/$dev/device/net" 2>/dev/null | tr '\n' ' ')
  echo "ibport=$dev $port|$(cat "$p/state" 2>/dev/null)|$(cat "$p/link_layer" 2>/dev/null)|$(cat "$p/rate" 2>/dev/null)|$nets"
  if [ "$(cat "$p/link_layer" 2>/dev/null)" = Ethernet ]; then
    i=0
    while [ $i -lt GIDS ]; do
      t=$(cat "$p/gid_attrs/types/$i" 2>/dev/null) && g=$(cat "$p/gids/$i" 2>/dev/null) && echo "ibgid=$dev $port $i|$t|$g"
      i=$((i + 1))
    done
  fi
done
if ldconfig -p 2>/dev/null | grep -q 'libibverbs\.so\.1 '; then echo verbs=yes; else echo verbs=no; fi
""".replace("SYSFS", SYSFS).replace("GIDS", str(GIDS_READ))

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

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    @property
    def roce(self) -> bool:
        return self.link_layer == "Ethernet"

    @property
    def name(self) -> str:
        return f"{self.device}:{self.port}"

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
            ports[(dev, port)] = IbPort(dev, port, _state(fields[1]), fields[2].strip(), fields[3].strip(), netdevs)
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
            port = IbPort(port.device, port.port, port.state, port.link_layer, port.rate, port.netdevs,
                          roce_gid_index(gids.get(key, [])))
        out.append(port)
    return IbFacts(tuple(out), verbs)


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


def nccl_settings(facts: IbFacts) -> Dict[str, str]:
    """NCCL variables for the node's active ports; empty when it has none (ethernet settings apply).

    `=` before the list makes NCCL match names exactly: `mlx5_1` must not also take `mlx5_10`.
    """
    active = facts.active
    if not active:
        return {}
    out = {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "=" + ",".join(p.name for p in active)}
    indexes = sorted({p.gid_index for p in active if p.roce and p.gid_index is not None})
    if any(p.roce for p in active):
        # One index for every port: NCCL takes a single value. 3 is RoCE v2/IPv4 on most Mellanox setups.
        out["NCCL_IB_GID_INDEX"] = str(indexes[0] if indexes else 3)
    return out


#: What `docker run` needs for a container to use the HCAs.
CONTAINER_FLAGS = "--device /dev/infiniband --cap-add IPC_LOCK --ulimit memlock=-1"


def summary(facts: Optional[IbFacts]) -> str:
    """`2 × 400 Gb/s IB active` / `1 × 100 Gb/s RoCE active` / `none`: one cell."""
    if facts is None:
        return "-"
    if not facts.ports:
        return "none"
    active = facts.active
    if not active:
        return f"{len(facts.ports)} ports, none active"
    kinds = sorted({f"{p.gbps} {'RoCE' if p.roce else 'IB'}" for p in active})
    return f"{len(active)} × {', '.join(kinds)} active"
