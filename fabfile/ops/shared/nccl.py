"""What NCCL did and how fast it should have been: its debug log, nccl-tests' tables, expected busbw.

An all-reduce that "works" can still be 20 times slower than the hardware:
NCCL falls back to sockets without a word when it cannot use the HCAs, and
runs InfiniBand without GPUDirect RDMA where nvidia-peermem is not loaded.
`NCCL_DEBUG=INFO` says which transport each channel took; this module reads
it. The expected figures are public acceptance thresholds and NVIDIA
engineers' numbers, each with its source, so that a verdict ("97% of
expected") names its reference; where none exists, it says so rather than
inventing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

# --------------------------------------------------------------------------- NCCL_DEBUG=INFO


@dataclass(frozen=True)
class Transport:
    """What an NCCL communicator's debug log says it used."""

    #: Between nodes: `IB+GDRDMA`, `IB`, `Socket`, or None (no channel went over the network).
    inter: Optional[str]
    #: Inside a node: NVLS, P2P/CUMEM, P2P/IPC, P2P/direct, SHM (each seen at least once).
    intra: Tuple[str, ...]
    #: `mlx5_0:1/IB`, `mlx5_10:1/RoCE` ... from `NET/IB : Using`; or the socket interfaces.
    devices: Tuple[str, ...]
    #: Why the IB transport was not used, as NCCL said it (None: it was, or nothing said).
    fallback: Optional[str] = None
    #: `GPU Direct RDMA Disabled for ...` lines: why GDR was not used over IB.
    gdr_disabled: Tuple[str, ...] = ()
    #: NVLink SHARP: True where NCCL says it is available, False where not, None where silent.
    nvls: Optional[bool] = None
    version: str = ""
    #: Channel lines (`via NET/IB/0/GDRDMA`) were in the log: without them, GPUDirect RDMA is not known.
    channels: bool = True

    @property
    def roce(self) -> bool:
        return any(d.endswith("/RoCE") for d in self.devices)

    def describe(self) -> str:
        """`InfiniBand with GPUDirect RDMA (8 HCAs)`, `RoCE without GPUDirect RDMA`, `sockets`, `inside one node`."""
        inside = f"; inside nodes {', '.join(self.intra)}" if self.intra else ""
        if self.inter is None:
            return f"inside one node ({', '.join(self.intra) or 'no channel seen'})"
        if self.inter == "Socket":
            return "sockets (no InfiniBand/RoCE)" + inside
        fabric = "RoCE" if self.roce else "InfiniBand"
        hcas = len({d.split(":")[0] for d in self.devices if "/" in d})
        if not self.channels:
            return f"{fabric}" + (f" ({hcas} HCAs" if hcas else " (") + "; GPUDirect RDMA not shown: no channel lines)"
        gdr = "with GPUDirect RDMA" if self.inter == "IB+GDRDMA" else "without GPUDirect RDMA"
        return f"{fabric} {gdr}" + (f" ({hcas} HCAs)" if hcas else "") + inside


_VIA = re.compile(r"\bvia (NET/(IB\w*|Socket)(?:/\d+)?(/GDRDMA)?|P2P/(CUMEM|IPC|direct)|SHM|NVLS|CollNet)")
_USING = re.compile(r"NET/(?:IB|Socket) : Using (.*?)(?:;|$)")
_DEVICE = re.compile(r"\[\d+\]([\w.:-]+(?:/\w+)*)")
#: What NCCL prints when it will not use the HCAs, and what the operator should read into it.
FALLBACKS = (
    ("NET/IB : No device found", "NCCL found no usable HCA: libibverbs / rdma-core missing where the job runs (a "
                                 "container?), no ACTIVE port, or NCCL_IB_HCA names none"),
    ("NCCL_IB_DISABLE set by environment to 1", "NCCL_IB_DISABLE=1 in the job's environment"),
    ("NCCL_NET set by environment to Socket", "NCCL_NET=Socket in the job's environment"),
    ("libibverbs", "libibverbs cannot be loaded where the job runs"),
)


def parse_debug_log(text: str) -> Transport:
    """`NCCL_DEBUG=INFO` lines (any prefix: host:pid:tid [rank], or none) -> the transports used."""
    inter: set = set()
    intra: List[str] = []
    devices: List[str] = []
    gdr_disabled: List[str] = []
    fallback = None
    nvls: Optional[bool] = None
    version = ""
    socket_network = ib_network = False
    for line in text.splitlines():
        for match in _VIA.finditer(line):
            if match.group(2):
                net = "Socket" if match.group(2) == "Socket" else "IB"
                inter.add(net + ("+GDRDMA" if match.group(3) else ""))
            else:
                kind = match.group(1)
                if kind not in intra:
                    intra.append(kind)
        using = _USING.search(line)
        if using:
            for dev in _DEVICE.findall(using.group(1)):
                if dev not in devices:
                    devices.append(dev)
        if "Using network Socket" in line or "NET/Socket : Using" in line:
            socket_network = True
        if "Using network IB" in line or re.search(r"NET/IB\w* : Using \[", line):
            ib_network = True
        if "GPU Direct RDMA Disabled" in line:
            gdr_disabled.append(line.split("NET/IB : ", 1)[-1].strip())
        if "NVLS multicast support is available" in line:
            nvls = True
        elif "NVLS multicast support is not available" in line and nvls is None:
            nvls = False
        found = re.search(r"NCCL version (\S+)", line)
        if found and not version:
            version = found.group(1)
        if fallback is None:
            fallback = next((why for pattern, why in FALLBACKS if pattern in line), None)
    if "IB+GDRDMA" in inter:
        net = "IB+GDRDMA"
    elif "IB" in inter:
        net = "IB"
    elif "Socket" in inter:
        net = "Socket"
    elif ib_network:  # no channel line seen, but NCCL said which network it took
        net = "IB"
    elif socket_network or fallback:  # told so, or told why IB cannot be used: sockets are what is left
        net = "Socket"
    else:
        net = None
    if "NVLS" in intra and nvls is None:
        nvls = True
    return Transport(net, tuple(intra), tuple(devices), fallback if net in ("Socket", None) else None,
                     tuple(dict.fromkeys(gdr_disabled)), nvls, version, channels=bool(inter))


def transport_problem(t: Transport, active_rails: int) -> Optional[str]:
    """The finding a person draws from the log, given how many fabric ports the nodes have ACTIVE."""
    if t.inter == "Socket" and active_rails:
        cause = t.fallback or "NCCL did not say why (run with NCCL_DEBUG=INFO, NCCL_DEBUG_SUBSYS=INIT,NET)"
        return f"NCCL used sockets between nodes although {active_rails} InfiniBand/RoCE ports are active: {cause}"
    if t.inter == "IB" and t.gdr_disabled:
        return f"NCCL used {t.describe()}: {t.gdr_disabled[0]} (is nvidia-peermem loaded?)"
    return None


# --------------------------------------------------------------------------- nccl-tests


@dataclass(frozen=True)
class TestRow:
    bytes: int
    #: busbw in GB/s, out of place and in place.
    busbw_out: float
    busbw_in: float

    @property
    def busbw(self) -> float:
        return max(self.busbw_out, self.busbw_in)


@dataclass(frozen=True)
class TestRun:
    rows: Tuple[TestRow, ...]
    #: `NVIDIA H100 80GB HBM3` per rank, from the `#  Rank  N ... device  N [0x..] NAME` header lines.
    devices: Tuple[str, ...]
    average: Optional[float]

    def at_largest(self) -> Optional[TestRow]:
        return max(self.rows, key=lambda r: r.bytes) if self.rows else None


_RANK = re.compile(r"^(?:\d+:\s*)?#\s+Rank\s+\d+.*device\s+\d+\s+\[[^\]]*\]\s+(.+?)\s*$")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")


def _row(line: str) -> Optional[TestRow]:
    """One result row: `size count type redop [root] time algbw busbw #wrong time algbw busbw #wrong`, perhaps
    behind mpirun's `0: ` (the root column is all_reduce_perf's since nccl-tests 2.11; the error column is
    `0`, `N/A` or `2e-06`)."""
    words = re.sub(r"^\s*\d+:\s+", "", line).split()
    if len(words) < 12 or not (words[0].isdigit() and words[1].isdigit()) or words[0].startswith("#"):
        return None
    rest = words[4:]
    if len(rest) == 9:
        rest = rest[1:]
    if len(rest) != 8 or not all(_NUMBER.match(rest[k]) for k in (0, 1, 2, 4, 5, 6)):
        return None
    return TestRow(int(words[0]), float(rest[2]), float(rest[6]))


def parse_tests_output(text: str) -> TestRun:
    """`all_reduce_perf` (nccl-tests) output -> its rows, its devices and the `# Avg bus bandwidth` line."""
    rows = []
    devices = []
    average = None
    for line in text.splitlines():
        row = _row(line)
        if row:
            rows.append(row)
            continue
        rank = _RANK.match(line)
        if rank:
            devices.append(rank.group(1))
        avg = re.search(r"# Avg bus bandwidth\s*:\s*([\d.]+)", line)
        if avg:
            average = float(avg.group(1))
    return TestRun(tuple(rows), tuple(devices), average)


# --------------------------------------------------------------------------- expected busbw


@dataclass(frozen=True)
class Reference:
    """An expected all-reduce busbw and where it comes from."""

    gbps: float
    #: The message size it is measured at (bytes).
    size: int
    what: str
    source: str

    def line(self) -> str:
        return f"{self.gbps:g} GB/s for {self.what} ({self.source})"


GiB = 1 << 30
#: One node, NVLink: the acceptance thresholds of Azure's HPC/AI health checks (Azure/azurehpc-health-checks,
#: conf/*.conf: `check_nccl_allreduce <GB/s> ... <size>`), busbw at one message size.
INTRA_NODE = (
    (re.compile(r"H100.*(HBM3|SXM)", re.I), 8, Reference(460.0, 16 * GiB, "8 × H100 SXM (NVLink)",
     "Azure ND H100 v5 health check, conf/nd96isr_h100_v5.conf")),
    (re.compile(r"\bH200\b(?!.*NVL)", re.I), 8, Reference(431.0, 16 * GiB, "8 × H200 SXM (NVLink)",
     "Azure ND H200 v5 health check, conf/nd96isr_h200_v5.conf")),
    (re.compile(r"A100.*SXM", re.I), 8, Reference(228.0, 8 * GiB, "8 × A100 SXM (NVLink)",
     "Azure ND A100 v4 health check, conf/nd96asr_v4.conf")),
)
#: Between nodes over InfiniBand: "For NDR @ 400Gbps you should see 46-48GB/s per NIC" (NVIDIA,
#: NVIDIA/nccl-tests#290); other rates scaled from it.
PER_400G_NIC = 46.0
PER_NIC_SOURCE = "46 GB/s per 400 Gb/s NIC: NVIDIA/nccl-tests#290"


def expected(gpu_model: str, gpus_per_node: int, nodes: int, rails: int = 0, rail_gbps: float = 0.0,
             override: Optional[float] = None) -> Tuple[Optional[Reference], str]:
    """(the reference busbw, or None with why there is none) for this hardware.

    One node: the table above. Several: the fabric's figure (rails x per-NIC rate), or the node's NVLink
    figure where that is lower; no fabric (CPU, ethernet, Gloo): no expected figure, said so.
    """
    if override is not None:
        return Reference(float(override), 0, "this cluster", "inventory allreduce_expected_gbps"), ""
    if not gpu_model or gpus_per_node < 1:
        return None, "no expected figure for CPU/ethernet (Gloo)"
    intra = next((ref for pattern, count, ref in INTRA_NODE if pattern.search(gpu_model) and count == gpus_per_node),
                 None)
    if nodes <= 1:
        return (intra, "") if intra else (None, f"no expected figure for {gpus_per_node} × {gpu_model} in one node")
    if not rails or not rail_gbps:
        return None, f"no expected figure for {nodes} nodes without an InfiniBand/RoCE fabric"
    per_nic = PER_400G_NIC * rail_gbps / 400.0
    source = PER_NIC_SOURCE if rail_gbps == 400 else f"{PER_NIC_SOURCE}, scaled to {rail_gbps:g} Gb/s"
    fabric = Reference(round(per_nic * rails, 1), 8 * GiB, f"{nodes} nodes × {rails} × {rail_gbps:g} Gb/s", source)
    return (intra if intra and intra.gbps < fabric.gbps else fabric), ""


#: Below this share of the reference, the all-reduce is not "as fast as expected".
FAST_ENOUGH = 0.9


def verdict(busbw_gbps: float, size: int, ref: Optional[Reference], why_none: str = "") -> Tuple[str, bool]:
    """(`busbw 452 GB/s at 1 GiB, 98% of expected 460 GB/s for 8 × H100 SXM (NVLink; source)`, fast enough)."""
    at = f"busbw {busbw_gbps:.3g} GB/s at {human(size)}"
    if ref is None:
        return f"{at}; {why_none}", True
    share = busbw_gbps / ref.gbps if ref.gbps else 0.0
    sized = f", measured at {human(ref.size)}" if ref.size and ref.size != size else ""
    ok = share >= FAST_ENOUGH
    return (f"{at}, {share:.0%} of expected {ref.gbps:g} GB/s for {ref.what} ({ref.source}{sized})"
            + ("" if ok else ": below expected"), ok)


def human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def rails_of(hca: str) -> List[str]:
    """`=mlx5_0:1,mlx5_1:1` (netenv's NCCL_IB_HCA) -> the ports it names."""
    return [p for p in hca.lstrip("=^").split(",") if p.strip()]


def per_node(values: Dict[str, int]) -> int:
    """The GPU count most nodes have (the figure is per node)."""
    counts = list(values.values())
    return max(set(counts), key=counts.count) if counts else 0


def fastest(rates: Sequence[float]) -> float:
    return max(rates) if rates else 0.0
