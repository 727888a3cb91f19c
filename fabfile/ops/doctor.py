"""`gpu.doctor`: is the NVIDIA stack of each node fit to train, and if not, what to do.

The failures users meet first are found only when a job starts: GPUs on the
PCI bus that the driver lost, NVSwitch machines whose fabric manager is not
running (CUDA error 802 while nvidia-smi looks fine), a pending row remap,
an XID in the kernel log, containers that cannot see the GPUs. Each is read
from the node in two round trips (root: PCI, nvidia-smi -q, kernel log,
Docker, InfiniBand; the SSH user: the training python's CUDA), every
command under a timeout, so a hung driver is a finding and not a hung run.

In bootstrap it is a check of its own (CHECK) that preflight carries: a first
look in preflight's round (no training python yet), again in the verify phase
with the training python's view of CUDA; its verdict fills the GPU column, and
a node with a problem fails verify.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.cluster import setting
from ..core.errors import HostError, InputError
from ..core.facts import parse_facts
from ..core.checks import Carried, Check, CheckColumn
from ..core.fanout import FAILED, OK, HostResult
from ..core.inventory import Inventory, Node
from ..core.remote import Remote
from ..core.report import host_table
from ..core.steps import Outcome, Seen
from .shared import infiniband
from .shared.python import PythonChoice, parse_probe, probe_pythons, read_choice

#: Seconds each nvidia-smi / docker command gets before it counts as hung.
COMMAND_TIMEOUT = 20
#: `dcgmi diag -r 1` (quick) takes about a minute.
DCGM_TIMEOUT = 300
CONTAINER_TIMEOUT = 90
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")

PROBLEM = "problem"
WARNING = "warning"

#: Everything root can read in one pass. $1 timeout, $2 deep (1/0), $3 test image ('' = none), $4 `known`
#: where the run has read the InfiniBand ports already (core.facts).
ROOT_SCRIPT = programs.text("doctor-root.sh", ib_sysfs=infiniband.SYSFS, ib_gids=infiniband.GIDS_READ,
                            container_timeout=CONTAINER_TIMEOUT, dcgm_timeout=DCGM_TIMEOUT)


def sections(text: str) -> Dict[str, List[str]]:
    """`@@name` lines open a section; `@@name-rc N` / `@@name-missing` become entries of their own."""
    out: Dict[str, List[str]] = {}
    current = "head"
    for line in text.splitlines():
        if line.startswith("@@"):
            word = line[2:].strip()
            if " " in word or word.endswith(("-missing", "-noimage")):
                key, _, value = word.partition(" ")
                out[key] = [value]
            else:
                current = word
                out.setdefault(current, [])
            continue
        out.setdefault(current, []).append(line)
    return out


# --------------------------------------------------------------------------- PCI


@dataclass(frozen=True)
class PciDevice:
    bus: str  # 18:00.0, or 0001:00:00.0 where the device has a PCI domain of its own (pci_address)
    kind: str  # gpu, nvswitch, other
    name: str


_LSPCI = re.compile(r"^((?:[0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+(.*?)\s*\[([0-9a-f]{4})\]:\s*(.*?)\s*"
                    r"\[10de:([0-9a-f]{4})\]", re.I)
#: Plain `lspci` (no -nn): `0008:01:00.0 3D controller: NVIDIA Corporation Device 2941 (rev a1)`.
_LSPCI_PLAIN = re.compile(r"^((?:[0-9a-f]{4,8}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+(VGA compatible controller|3D controller|"
                          r"Bridge):\s*NVIDIA Corporation\s+(.*?)\s*(?:\(rev [0-9a-f]+\))?$", re.I)
_PLAIN_CLASS = {"vga compatible controller": "0300", "3d controller": "0302", "bridge": "0680"}


def _kind(pci_class: str) -> str:
    """0300 VGA / 0302 3D controller: a GPU; 0680 bridge from NVIDIA: an NVSwitch."""
    return {"0300": "gpu", "0302": "gpu", "0680": "nvswitch"}.get(pci_class.lower()[:4], "other")


def parse_pci(lines: Sequence[str]) -> List[PciDevice]:
    """`lspci -nn -d 10de:` lines, or `pci=ADDR 0xCLASS 0xDEVICE` from sysfs where lspci is absent."""
    out = []
    for line in lines:
        if line.startswith("pci="):
            parts = line[4:].split()
            if len(parts) == 3:
                out.append(PciDevice(pci_address(parts[0]), _kind(parts[1][2:6]), f"10de:{parts[2][2:]}"))
            continue
        match = _LSPCI.match(line.strip())
        if match:
            bus, _, cls, name, device = match.groups()
            out.append(PciDevice(pci_address(bus), _kind(cls), name.replace("NVIDIA Corporation ", "")))
            continue
        plain = _LSPCI_PLAIN.match(line.strip())
        if plain:
            bus, cls, name = plain.groups()
            out.append(PciDevice(pci_address(bus), _kind(_PLAIN_CLASS[cls.lower()]), name))
    return out


_PCI = re.compile(r"(?:([0-9a-f]{4,8}):)?([0-9a-f]{2}):([0-9a-f]{2})(?:\.([0-7]))?$")


def pci_address(address: str) -> str:
    """One spelling for a PCI function, whoever printed it, for comparing: `18:00.0` in domain 0, `0001:00:00.0`
    in any other.

    nvidia-smi writes `00000001:00:00.0`, lspci `0001:00:00.0` (or `18:00.0` when every domain is 0), the
    kernel's XID lines `PCI:0000:18:00`. Where each GPU has a domain of its own (cloud VMs), the domain is
    all that tells them apart, so it is kept; domain 0 is left out, as lspci does.
    """
    text = address.strip().lower()
    match = _PCI.search(text)
    if not match:
        return text
    domain = int(match.group(1), 16) if match.group(1) else 0
    short = f"{match.group(2)}:{match.group(3)}.{match.group(4) or '0'}"
    return f"{domain:04x}:{short}" if domain else short


# --------------------------------------------------------------------------- nvidia-smi -q


@dataclass(frozen=True)
class SmiGpu:
    bus: str
    name: str
    persistence: str  # Enabled / Disabled
    fabric_state: str  # Completed / In Progress / Not Started / N/A
    fabric_status: str
    #: Volatile uncorrectable ECC errors since the driver loaded (None: not reported).
    ecc_uncorrectable: Optional[int]
    retired_pending: bool
    remap_pending: bool
    remap_failed: bool
    #: Vital fields nvidia-smi reads as `Unknown Error`: the GPU no longer answers NVML.
    unknown: Tuple[str, ...] = ()


#: Fields every working GPU answers; `Unknown Error` there is a GPU that stopped answering. (Other fields
#: read so on healthy cards where they are not supported: `Addressing Mode` on a GeForce, `Host Max`.)
VITAL_FIELDS = (("Product Name",), ("GPU UUID",), ("ECC Mode", "Current"), ("Ecc Mode", "Current"),
                ("Persistence Mode",), ("Bus Id",), ("PCI", "Bus Id"))
UNKNOWN_ERROR = "Unknown Error"


@dataclass(frozen=True)
class SmiReport:
    driver: str
    cuda: str
    gpus: Tuple[SmiGpu, ...]


_GPU_BLOCK = re.compile(r"^GPU [0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")


def _tree(lines: Sequence[str]) -> Tuple[Dict[Tuple[str, ...], str], List[Tuple[str, Dict[Tuple[str, ...], str]]]]:
    """The header's keys, and per `GPU <bus>` block its keys as section paths.

    `Key : value` lines hold a value (which may hold colons of its own: bus ids,
    times); a line without ` :` opens a section for the lines indented below it.
    """
    header: Dict[Tuple[str, ...], str] = {}
    blocks: List[Tuple[str, Dict[Tuple[str, ...], str]]] = []
    stack: List[Tuple[int, str]] = []
    for raw in lines:
        text = raw.strip()
        if not text or text.startswith("="):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if indent == 0 and _GPU_BLOCK.match(text):
            blocks.append((pci_address(text[4:]), {}))
            stack = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, sep, value = text.partition(" :")
        if sep:
            target = blocks[-1][1] if blocks and indent > 0 else header
            target[tuple(k for _, k in stack) + (key.strip(),)] = value.strip()
        else:
            stack.append((indent, text))
    return header, blocks


def _int(value: Optional[str]) -> Optional[int]:
    return int(value) if value is not None and value.strip().isdigit() else None


def parse_smi_q(lines: Sequence[str]) -> SmiReport:
    """`nvidia-smi -q` text (drivers 470 to 580 lay it out alike) -> what the doctor judges."""
    header, blocks = _tree(lines)
    gpus = []
    for bus, keys in blocks:
        def get(*path: str) -> str:
            return keys.get(path, "")

        volatile = [(p, v) for p, v in keys.items() if p[:2] == ("ECC Errors", "Volatile")]
        # 535+: `DRAM Uncorrectable`, `SRAM Uncorrectable ...`; older: `Double Bit` / `Total`.
        counts = [_int(v) for p, v in volatile if "Uncorrectable" in p[-1] or (len(p) == 4 and p[2] == "Double Bit"
                                                                                 and p[3] == "Total")]
        known = [c for c in counts if c is not None]
        pending_pages = get("Retired Pages", "Pending Page Blacklist") or get("Retired Pages", "Pending Retirement") \
            or get("Retired Pages", "Pending")
        gpus.append(SmiGpu(
            bus=bus,
            name=get("Product Name"),
            persistence=get("Persistence Mode"),
            fabric_state=get("Fabric", "State") or "N/A",
            fabric_status=get("Fabric", "Status") or "N/A",
            ecc_uncorrectable=sum(known) if known else None,
            retired_pending=pending_pages == "Yes",
            remap_pending=get("Remapped Rows", "Pending") == "Yes",
            remap_failed=get("Remapped Rows", "Remapping Failure Occurred") == "Yes",
            unknown=tuple(" ".join(f) for f in VITAL_FIELDS if keys.get(f) == UNKNOWN_ERROR),
        ))
    # R610 marks the old names deprecated (`610.88 [Deprecated; ... Use KMD Version instead]`) beside new ones.
    driver = header.get(("KMD Version",)) or header.get(("Driver Version",), "").split(" [", 1)[0]
    cuda = header.get(("CUDA UMD Version",)) or header.get(("CUDA Version",), "").split(" [", 1)[0]
    return SmiReport(driver, cuda, tuple(gpus))


# --------------------------------------------------------------------------- nvidia-smi topo -m


@dataclass(frozen=True)
class Topology:
    #: (GPU i, GPU j) -> the link between them: NV18, PIX, NODE, SYS ...
    links: Mapping[Tuple[int, int], str]
    #: NIC0 -> mlx5_0 (the legend under the matrix).
    nics: Mapping[str, str]

    def without_nvlink(self) -> List[Tuple[int, int, str]]:
        return sorted((i, j, link) for (i, j), link in self.links.items() if i < j and not link.startswith("NV"))

    @property
    def nvlinked(self) -> bool:
        """Some GPU pair is joined by NVLink (an SXM board or a bridge, not PCIe alone)."""
        return any(link.startswith("NV") for link in self.links.values())

    def degraded(self) -> List[Tuple[int, int, str]]:
        """Pairs joined by fewer NVLinks than the best-joined pair: on a full-mesh board, a link that is down."""
        counts = {pair: nv_count(link) for pair, link in self.links.items()}
        top = max((c for c in counts.values() if c), default=0)
        return sorted((i, j, self.links[(i, j)]) for (i, j), c in counts.items() if i < j and c and c < top)


def nv_count(link: str) -> int:
    """`NV18` -> 18; any other cell -> 0."""
    match = re.fullmatch(r"NV(\d+)", link)
    return int(match.group(1)) if match else 0


_DEVICE_COLUMN = re.compile(r"^(GPU\d+|NIC\d+|mlx\d+_\d+|\w+_\d+)$")


def parse_topo(lines: Sequence[str]) -> Topology:
    """The GPU-to-GPU part of `nvidia-smi topo -m`, and its NIC legend.

    nvidia-smi separates cells with tabs; outputs pasted elsewhere have spaces. Cells never hold a space,
    so the device columns (GPU0.., NIC0.., mlx5_0..) are the first words of the header and of each row.
    """
    header: List[str] = []
    links: Dict[Tuple[int, int], str] = {}
    nics: Dict[str, str] = {}
    for line in lines:
        words = line.split()
        if not header and words and words[0] == "GPU0" and not line[:1].strip():
            header = words[:next((k for k, w in enumerate(words) if not _DEVICE_COLUMN.match(w)), len(words))]
            continue
        row = re.match(r"^GPU(\d+)$", words[0]) if header and words else None
        if row:
            i = int(row.group(1))
            for name, cell in zip(header, words[1:1 + len(header)]):
                col = re.match(r"^GPU(\d+)$", name)
                if col and int(col.group(1)) != i:
                    links[(i, int(col.group(1)))] = cell
        legend = re.match(r"^\s*(NIC\d+):\s*(\S+)\s*$", line)
        if legend:
            nics[legend.group(1)] = legend.group(2)
    return Topology(links, nics)


def parse_nvlink_status(lines: Sequence[str]) -> Dict[int, List[int]]:
    """`nvidia-smi nvlink -s` -> GPU index -> the links it lists as `<inactive>`."""
    out: Dict[int, List[int]] = {}
    gpu: Optional[int] = None
    for line in lines:
        head = re.match(r"^GPU (\d+):", line)
        if head:
            gpu = int(head.group(1))
            continue
        link = re.match(r"^\s+Link (\d+):\s*<inactive>", line)
        if link and gpu is not None:
            out.setdefault(gpu, []).append(int(link.group(1)))
    return out


#: Boards whose GPUs are all joined by NVLink (through NVSwitches on 8-GPU HGX boards, directly on 4-GPU
#: ones): H100/H200/H800/B200 SXM and A100 SXM4. Not V100 SXM2 (DGX-1's hybrid cube-mesh leaves pairs on
#: SYS by design) and not PCIe cards, whose NVLink bridges join pairs only.
_FULL_MESH = re.compile(r"SXM4|SXM5|SXM6|HBM3|\bH200\b|\bH800\b|\bH20\b|\bB200\b|\bB300\b", re.I)


def full_mesh_expected(model: str, switches: int) -> bool:
    """Whether this board joins every GPU pair by NVLink: NVSwitches say so, else the model does."""
    if switches:
        return True
    return bool(_FULL_MESH.search(model)) and "NVL" not in model.upper().split() and "V100" not in model.upper()


def nvlink_findings(topo: Topology, full_mesh: bool, inactive: Mapping[int, Sequence[int]]) -> List["Finding"]:
    """What the NVLink topology says is broken, judged against what the board is built to have.

    On a full-mesh board every pair has the same NVLink count; a pair on PCIe, or with fewer links, is a
    link down. On a partial board (V100 hybrid cube-mesh, bridge pairs) a pair without NVLink is by
    design, and only `nvlink -s` can show a link that should be up and is not.
    """
    found: List[Finding] = []
    fix = "an NVLink is down: `nvidia-smi nvlink -s`, reset the GPUs or reboot; if it stays, ask the provider"
    if full_mesh and topo.links:
        broken = topo.without_nvlink()
        if broken:
            pairs = ", ".join(f"GPU{i}-GPU{j} {link}" for i, j, link in broken[:4]) + (" ..." if len(broken) > 4 else "")
            found.append(Finding(PROBLEM, f"{len(broken)} GPU pairs without NVLink ({pairs})", fix))
        fewer = topo.degraded()
        if fewer:
            top = max(nv_count(link) for link in topo.links.values())
            pairs = ", ".join(f"GPU{i}-GPU{j} {link}" for i, j, link in fewer[:4]) + (" ..." if len(fewer) > 4 else "")
            found.append(Finding(PROBLEM, f"{len(fewer)} GPU pairs with fewer NVLinks than the board's NV{top} ({pairs})",
                                 fix))
    if inactive:
        gpus = "; ".join(f"GPU{g} link{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))}"
                         for g, ls in sorted(inactive.items()))
        found.append(Finding(PROBLEM, f"{sum(len(v) for v in inactive.values())} NVLinks inactive ({gpus})", fix))
    return found


# --------------------------------------------------------------------------- XID


@dataclass(frozen=True)
class Xid:
    bus: str
    code: int
    text: str


@dataclass(frozen=True)
class KernelEvent:
    """A line (or lines) of the kernel log about one GPU or NVSwitch."""

    kind: str  # xid, sxid (NVSwitch), fallen (off the bus, with or without an XID), init (RmInitAdapter failed)
    bus: str
    code: int = 0
    text: str = ""


_XID = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f:.]+)\): (\d+),\s*(.*)$")
_SXID = re.compile(r"SXid \(PCI:([0-9A-Fa-f:.]+)\): (\d+),\s*(.*)$")
_FALLEN = re.compile(r"NVRM: GPU ([0-9A-Fa-f:.]+): GPU has fallen off the bus")
#: 570-era drivers at probe time, over three lines: `The NVIDIA GPU 0000:b3:00.0` ... `fallen off the bus`.
_PROBE_GPU = re.compile(r"NVRM: The NVIDIA GPU ([0-9A-Fa-f:.]+)")
_INIT = re.compile(r"NVRM: GPU ([0-9A-Fa-f:.]+): RmInitAdapter failed! \(([^)]*)\)")

#: XIDs a user's program causes (bad memory access, its own kill, a contained error it hit): worth a
#: look, not a broken GPU.
APP_XIDS = {13, 31, 43, 45, 68, 94, 109}
#: NVLink XIDs of NVLink5 boards that say Nonfatal: a link event the hardware recovered from.
NONFATAL_XIDS = {144, 145}
XID_MEANING = {
    13: "graphics engine exception (usually the program)",
    31: "GPU memory page fault (usually the program)",
    43: "GPU stopped processing (usually the program)",
    45: "preemptive cleanup after a killed program",
    48: "double-bit ECC error",
    61: "internal micro-controller breakpoint",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remap recorded",
    64: "ECC page retirement or row remap failed",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error (the program that hit it was stopped)",
    95: "uncontained ECC error",
    109: "context switch timeout (usually the program)",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
    144: "NVLink event (nonfatal)",
    145: "NVLink event (nonfatal)",
    149: "NVLink fabric error",
    154: "GPU recovery action required",
}


def parse_kernel_log(lines: Sequence[str]) -> List[KernelEvent]:
    """Every NVIDIA event in kernel log lines (dmesg, `dmesg -T`, syslog, journal or kmsg spellings)."""
    out: List[KernelEvent] = []
    probing: Optional[Tuple[str, int]] = None  # a `The NVIDIA GPU ...` line waiting for its `fallen off` line
    for index, line in enumerate(lines):
        for pattern, kind in ((_XID, "xid"), (_SXID, "sxid")):
            match = pattern.search(line)
            if match:
                out.append(KernelEvent(kind, pci_address(match.group(1)), int(match.group(2)), match.group(3).strip()))
                break
        else:
            fallen, init, probe = _FALLEN.search(line), _INIT.search(line), _PROBE_GPU.search(line)
            if fallen:
                out.append(KernelEvent("fallen", pci_address(fallen.group(1)), 0, "GPU has fallen off the bus"))
            elif init:
                out.append(KernelEvent("init", pci_address(init.group(1)), 0, f"RmInitAdapter failed ({init.group(2)})"))
            elif probe:
                probing = (pci_address(probe.group(1)), index)
            elif probing and "fallen off the bus" in line and index - probing[1] <= 3:
                out.append(KernelEvent("fallen", probing[0], 0, "fallen off the bus at probe time"))
                probing = None
    return out


def parse_xids(lines: Sequence[str]) -> List[Xid]:
    return [Xid(e.bus, e.code, e.text) for e in parse_kernel_log(lines) if e.kind == "xid"]


def kernel_findings(events: Sequence[KernelEvent]) -> Tuple[List["Finding"], List["Finding"]]:
    """(problems, warnings) from the kernel log: one finding per GPU and kind, with how often it was seen."""
    counts: Dict[Tuple[str, str, int], int] = {}
    first: Dict[Tuple[str, str, int], KernelEvent] = {}
    fatal: Dict[Tuple[str, str, int], KernelEvent] = {}
    for e in events:
        key = (e.kind, e.bus, e.code)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, e)
        if e.kind == "sxid" and e.text.lower().startswith("fatal"):
            fatal.setdefault(key, e)
    lost_with_xid = {bus for (kind, bus, code) in counts if kind == "xid" and code == 79}
    problems: List[Finding] = []
    warnings: List[Finding] = []
    for key, e in first.items():
        times = f" ({counts[key]} times)" if counts[key] > 1 else ""
        if e.kind == "xid":
            meaning = XID_MEANING.get(e.code, e.text)
            what = f"XID {e.code} on GPU {e.bus} since boot{times}: {meaning}"
            if e.code in APP_XIDS:
                warnings.append(Finding(WARNING, what, "look at the program that ran then"))
            elif e.code in NONFATAL_XIDS:
                warnings.append(Finding(WARNING, what, "the link recovered; if it repeats, ask the provider"))
            else:
                problems.append(Finding(PROBLEM, what, "drain the node and reboot; if it comes back, ask the provider"))
        elif e.kind == "sxid":
            shown = fatal.get(key, e)  # one fatal line among them makes the switch's error fatal
            what = f"NVSwitch {e.bus}: SXid {e.code} since boot{times} ({shown.text[:60]})"
            level = PROBLEM if key in fatal else WARNING
            (problems if key in fatal else warnings).append(
                Finding(level, what, "drain the node and reboot; if it comes back, ask the provider"))
        elif e.kind == "fallen" and e.bus not in lost_with_xid:
            problems.append(Finding(PROBLEM, f"GPU {e.bus} has fallen off the bus (kernel log, no XID)",
                                    "reboot; if the GPU stays missing, ask the provider to replace it"))
        elif e.kind == "init":
            problems.append(Finding(PROBLEM, f"the driver cannot start GPU {e.bus}: {e.text}{times}",
                                    "reboot; if it stays, check the driver against the kernel, then ask the provider"))
    return problems, warnings


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Finding:
    level: str  # problem / warning
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.what}: {self.fix}" if self.fix else self.what


@dataclass(frozen=True)
class Doctor:
    """One node's GPU stack: what it has, and every finding (problems first)."""

    pci_gpus: int
    smi_gpus: Optional[int]  # None: no nvidia-smi, or it failed
    model: str
    driver: str
    cuda: str
    nvswitches: int
    findings: Tuple[Finding, ...]
    ib: Optional[infiniband.IbFacts] = None
    torch: Optional[Mapping[str, Any]] = None

    @property
    def problems(self) -> List[Finding]:
        return [f for f in self.findings if f.level == PROBLEM]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def has_gpus(self) -> bool:
        return bool(self.pci_gpus or self.smi_gpus)

    def verdict(self) -> str:
        """One cell: `8 × NVIDIA H100 80GB HBM3 ok`, `none`, or the count and the first problem."""
        if not self.has_gpus and not self.problems:
            return "none"
        count = self.smi_gpus if self.smi_gpus is not None else self.pci_gpus
        what = f"{count} × {self.model}" if self.model else f"{count} GPUs"
        return f"{what}: {self.problems[0].what}" if self.problems else f"{what} ok"

    def as_data(self) -> Dict[str, Any]:
        return {
            "gpus_pci": self.pci_gpus, "gpus": self.smi_gpus, "model": self.model, "driver": self.driver,
            "cuda": self.cuda, "nvswitches": self.nvswitches,
            "problems": [{"what": f.what, "fix": f.fix} for f in self.problems],
            "warnings": [{"what": f.what, "fix": f.fix} for f in self.warnings],
            "infiniband": infiniband.summary(self.ib),
            "torch": dict(self.torch) if self.torch else None,
        }


SMI_FAILURES = (
    ("Driver/library version mismatch", "the driver was upgraded but the old module is still loaded",
     "reboot the node (or unload and reload the nvidia modules)"),
    ("couldn't communicate with the NVIDIA driver", "the NVIDIA driver is not loaded",
     "reboot after a driver install; if it stays, reinstall the driver for this kernel (DKMS)"),
    ("No devices were found", "nvidia-smi finds no GPU",
     "reboot; if it stays, check `dmesg | grep NVRM` and ask the provider"),
)


def ib_section(parts: Mapping[str, List[str]]) -> infiniband.IbFacts:
    return infiniband.parse_sysfs("\n".join(parts.get("ib", [])))


def diagnose(parts: Mapping[str, List[str]], torch: Optional[Mapping[str, Any]] = None,
             ib: Optional[infiniband.IbFacts] = None) -> Doctor:
    """ROOT_SCRIPT's sections (and the training python's CUDA view) -> the node's findings; `ib`: the
    node's ports where the run knew them already (ROOT_SCRIPT then leaves them out)."""
    pci = parse_pci(parts.get("lspci", []))
    pci_gpus = [d for d in pci if d.kind == "gpu"]
    switches = [d for d in pci if d.kind == "nvswitch"]
    problems: List[Finding] = []
    warnings: List[Finding] = []
    report = SmiReport("", "", ())
    smi_count: Optional[int] = None
    if "smi-missing" in parts:
        if pci_gpus:
            problems.append(Finding(PROBLEM, f"{len(pci_gpus)} NVIDIA GPU{'s' if len(pci_gpus) != 1 else ''} on the PCI bus but no driver (nvidia-smi not found)",
                                    "install the NVIDIA driver (and nvidia-utils), then reboot"))
    else:
        rc = (parts.get("smi-rc") or ["0"])[0].strip()
        text = parts.get("smi", [])
        if rc in ("124", "137"):
            problems.append(Finding(PROBLEM, f"nvidia-smi hung ({COMMAND_TIMEOUT}s)",
                                    "the driver is stuck: reboot the node; if it stays, ask the provider"))
        elif rc != "0":
            joined = " ".join(text)
            known = next((k for k in SMI_FAILURES if k[0] in joined), None)
            first = next((line.strip() for line in text if line.strip()), f"exit {rc}")
            problems.append(Finding(PROBLEM, known[1] if known else f"nvidia-smi failed ({first})",
                                    known[2] if known else "check `dmesg | grep NVRM`"))
        else:
            report = parse_smi_q(text)
            smi_count = len(report.gpus)
    model = _model(report, pci_gpus)
    if smi_count is not None and len(pci_gpus) > smi_count:
        seen = {g.bus for g in report.gpus}
        lost = [d.bus for d in pci_gpus if d.bus not in seen]
        problems.append(Finding(PROBLEM, f"{len(pci_gpus) - smi_count} of {len(pci_gpus)} GPUs missing from nvidia-smi"
                                         f" ({', '.join(lost) or 'bus ids differ'})",
                                "reboot; if the GPU stays missing, ask the provider to replace it (see XID 79)"))
    fm_active = (parts.get("fm") or [""])[0].strip() == "active"
    if switches and not fm_active:
        problems.append(Finding(PROBLEM, f"NVSwitch system ({len(switches)} NVSwitches) but nvidia-fabricmanager is not running",
                                "install nvidia-fabricmanager of the driver's exact version and "
                                "`systemctl enable --now nvidia-fabricmanager`; CUDA fails with error 802 until then"))
    for g in report.gpus:
        tag = f"GPU {g.bus}"
        if g.unknown:
            problems.append(Finding(PROBLEM, f"{tag} no longer answers the driver (nvidia-smi reads "
                                             f"{UNKNOWN_ERROR} for {', '.join(g.unknown)})",
                                    "reboot; if it stays, ask the provider to replace the GPU (see XID 79)"))
        if g.fabric_state in ("In Progress", "Not Started") or (g.fabric_state == "Completed"
                                                                and g.fabric_status not in ("Success", "N/A")):
            problems.append(Finding(PROBLEM, f"{tag}: NVLink fabric {g.fabric_state.lower()} ({g.fabric_status})",
                                    "start nvidia-fabricmanager (same version as the driver) and wait for "
                                    "`nvidia-smi -q` to say State: Completed"))
        if g.ecc_uncorrectable:
            problems.append(Finding(PROBLEM, f"{tag}: {g.ecc_uncorrectable} uncorrectable ECC errors since the driver loaded",
                                    "drain the node, reset the GPU or reboot; replace it if they come back"))
        if g.remap_failed:
            problems.append(Finding(PROBLEM, f"{tag}: row remapping failed", "the GPU's memory cannot be repaired: ask the provider to replace it"))
        elif g.remap_pending or g.retired_pending:
            problems.append(Finding(PROBLEM, f"{tag}: {'row remap' if g.remap_pending else 'page retirement'} pending",
                                    "reset the GPU (`nvidia-smi -r`) or reboot to apply it"))
        if g.persistence == "Disabled":
            warnings.append(Finding(WARNING, f"{tag}: persistence mode off",
                                    "enable nvidia-persistenced (or `nvidia-smi -pm 1`): each job then starts faster"))
    topo = parse_topo(parts.get("topo", []))
    problems += nvlink_findings(topo, full_mesh_expected(model, len(switches)),
                                parse_nvlink_status(parts.get("nvlink", [])))
    kernel_problems, kernel_warnings = kernel_findings(parse_kernel_log(parts.get("xid", [])))
    problems += kernel_problems
    warnings += kernel_warnings
    gpus_seen = bool(smi_count) or bool(pci_gpus)
    docker = parse_facts("\n".join(parts.get("docker", [])))
    if gpus_seen and "runtimes" in docker:
        runtimes = docker["runtimes"].split()
        if "nvidia" not in runtimes and docker.get("hook") != "yes":
            fix = ("`inv docker.configure` (it adds what `nvidia-ctk runtime configure` would, and restarts docker)"
                   if docker.get("ctk") == "yes" else
                   "`inv docker.install docker.configure`: NVIDIA's container toolkit from its repository, then its runtime")
            problems.append(Finding(PROBLEM, "containers cannot see the GPUs (no NVIDIA container runtime)", fix))
    if "container-rc" in parts:
        lines = [x for x in parts.get("container", []) if x.strip()]
        seen = sum(1 for x in lines if x.startswith("GPU "))
        if parts["container-rc"][0].strip() != "0" or (smi_count and seen < smi_count):
            problems.append(Finding(PROBLEM, f"a container sees {seen} of {smi_count or len(pci_gpus)} GPUs"
                                             f" ({lines[-1] if lines else 'no output'})",
                                    "check nvidia-container-toolkit (`nvidia-ctk runtime configure`, restart docker)"))
    ib = ib if ib is not None else ib_section(parts)
    stuck = ib.waiting_for_sm
    if stuck:
        problems.append(Finding(PROBLEM, f"InfiniBand ports up but not active: {', '.join(p.name for p in stuck)} "
                                         f"({stuck[0].state}: no subnet manager has brought them up)",
                                "start a subnet manager on the fabric (opensm, or the switch's), or ask the "
                                "provider: NCCL uses ACTIVE ports only"))
    if ib.rails() and not ib.verbs:
        problems.append(Finding(PROBLEM, f"InfiniBand/RoCE rails active ({', '.join(p.name for p in ib.rails())}) but no libibverbs",
                                "install rdma-core/ibverbs-providers (libibverbs1): NCCL otherwise falls back to TCP"))
    if torch is not None and gpus_seen:
        seen = int(torch.get("gpus") or 0)
        want = smi_count if smi_count is not None else len(pci_gpus)
        if not torch.get("cuda"):
            problems.append(Finding(PROBLEM, f"torch {torch.get('torch')} in {torch.get('path')} is a CPU-only build",
                                    "install a CUDA build of torch (or set train_python to the environment that has one)"))
        elif seen < want:
            problems.append(Finding(PROBLEM, f"torch sees {seen} of {want} GPUs"
                                             + (f" ({torch['error']})" if torch.get("error") else ""),
                                    "CUDA cannot start: check the fabric manager, the driver version and CUDA_VISIBLE_DEVICES"))
    if "dcgm-rc" in parts:
        failed = [x.strip(" |") for x in parts.get("dcgm", []) if re.search(r"\bFail", x)]
        if parts["dcgm-rc"][0].strip() != "0" or failed:
            problems.append(Finding(PROBLEM, f"dcgmi diag -r 1 failed ({failed[0] if failed else 'exit ' + parts['dcgm-rc'][0]})",
                                    "read `dcgmi diag -r 1` on the node; drain it until it passes"))
    return Doctor(len(pci_gpus), smi_count, model, report.driver, report.cuda, len(switches),
                  tuple(problems + warnings), ib, torch)


def _model(report: SmiReport, pci: Sequence[PciDevice]) -> str:
    names = sorted({g.name for g in report.gpus if g.name and g.name != UNKNOWN_ERROR}) or sorted({d.name for d in pci})
    return " + ".join(names)


# --------------------------------------------------------------------------- settings and reading a node


@dataclass(frozen=True)
class DoctorSettings:
    deep: bool = False
    #: A local image `docker run --gpus all` tries (None: that check is left out).
    image: Optional[str] = None
    python: PythonChoice = field(default_factory=PythonChoice)


def check_image(value: Any) -> Optional[str]:
    if value in (None, ""):
        return None
    if not IMAGE_RE.match(str(value)):
        raise InputError(f"invalid image name {value!r}", path="gpu_test_image")
    return str(value)


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> DoctorSettings:
    """`--deep`; inventory var `gpu_test_image` (else the first of `docker: images:`); the training python."""
    images = list(inv.docker_images or [])
    return DoctorSettings(
        deep=bool(cli.get("deep")),
        image=check_image(setting(config, inv, "gpu_test_image", cli.get("image"), images[0] if images else None)),
        python=read_choice(config, inv, cli),
    )


def root_command_timeout(s: DoctorSettings) -> int:
    return COMMAND_TIMEOUT * 4 + 30 + (CONTAINER_TIMEOUT if s.image else 0) + (DCGM_TIMEOUT if s.deep else 0)


def examine(remote: Remote, s: DoctorSettings, with_python: bool = True) -> Doctor:
    """Read the node (root's pass, then the training python where there are GPUs) and judge it."""
    ib_known = remote.facts.flag(infiniband.PORTS)
    text = remote.script(ROOT_SCRIPT, str(COMMAND_TIMEOUT), "1" if s.deep else "0", s.image or "", ib_known,
                         sudo=True, warn=True, timeout=root_command_timeout(s)).stdout
    parts = sections(text)
    torch = train_python_view(remote, s) if with_python and sees_gpus(parts) else None
    return diagnose(parts, torch, remote.facts.kept(infiniband.PORTS, ib_known, lambda: ib_section(parts), remote))


def sees_gpus(parts: Mapping[str, List[str]]) -> bool:
    """NVIDIA GPUs on the PCI bus, or in nvidia-smi: the training python's view is worth reading."""
    return any(d.kind == "gpu" for d in parse_pci(parts.get("lspci", []))) or \
        any(_GPU_BLOCK.match(line) for line in parts.get("smi", []))


def train_python_view(remote: Remote, s: DoctorSettings) -> Optional[Dict[str, Any]]:
    """What the training python's torch sees (None: no torch there)."""
    return parse_probe(probe_pythons(remote, s.python))


def findings_json(found: Mapping[str, Optional[Doctor]], reasons: Mapping[str, str]) -> str:
    """`--json`: per node its facts and findings, or why it could not be read."""
    out = {}
    for name, doc in found.items():
        out[name] = doc.as_data() if doc is not None else {"error": reasons.get(name, "not read")}
    return json.dumps(out, indent=2, sort_keys=True)


def outcome(remote: Remote, s: DoctorSettings) -> Outcome:
    """gpu.doctor on one node: its problems fail it (the first is its reason), warnings are notes."""
    found = examine(remote, s)
    notes = [f.line() for f in found.findings]
    if found.problems:
        raise HostError(found.problems[0].line() + (f" (+{len(found.problems) - 1} more)" if len(found.problems) > 1 else ""),
                        value=found)
    return Outcome([], notes, found)


def doctor_table(results: Sequence[HostResult]) -> str:
    """Node, GPUs, driver, CUDA, InfiniBand, verdict; then every finding with what to do."""
    rows = []
    lines = []
    for r in results:
        d = r.value if isinstance(r.value, Doctor) else None
        if d is None:
            rows.append((r.node.name, "-", "-", "-", "-", f"not read: {r.reason}"))
            continue
        rows.append((r.node.name, d.verdict(), d.driver or "-", d.cuda or "-", infiniband.summary(d.ib),
                     "problem" if d.problems else "ok"))
        lines += [f"{r.node.name}: {f.level}: {f.line()}" for f in d.findings]
    return "\n".join([host_table(["Node", "GPUs", "Driver", "CUDA", "InfiniBand", "Verdict"], rows), *lines])


# --------------------------------------------------------------------------- in bootstrap (carried by preflight)


def found_on(found: Carried, node: Node) -> Optional[Doctor]:
    """The verify phase's verdict where it ran, else the first look's."""
    checked = found.checked(node) if found.was_checked(node) else None
    return checked if checked is not None else found.looked(node)


def first_look(remote: Remote, s: DoctorSettings) -> Doctor:
    return examine(remote, s, with_python=False)


def said(d: Doctor) -> Tuple[str, List[str]]:
    return f"GPUs {d.verdict()}", [f"GPU {f.level}: {f.line()}" for f in d.findings]


def check_cluster(found: Carried, nodes: Sequence[Node], s: DoctorSettings) -> List[HostResult]:
    """A node whose GPU stack has a problem is not ready to train: it fails verify, with what to do."""
    out = []
    for n in nodes:
        d = found_on(found, n) if found.was_checked(n) else None
        if d is not None and d.problems:
            out.append(HostResult(n, FAILED, 1, reason=f"GPU: {d.problems[0].line()}"))
        else:
            out.append(HostResult(n, OK))
    return out


#: Ray's step name: the GPU cell adds what Ray counts on the node, as the verify phase found it.
RAY = "ray"


def _gpus_cell(found: Carried, node: Node) -> str:
    d = found_on(found, node)
    if d is None:
        pre = found.carrier_value(node)
        gpus = getattr(pre, "gpus", "-") if pre is not None else "-"
        return "none" if gpus == "0" else gpus
    text = d.verdict()
    member = found.run.cluster_checked(RAY, node)
    if member is not None and not member.failed and member.value is not None and d.has_gpus:
        text += f" (Ray {member.value.gpus:g})"
    return text


def _report(found: Carried, s: DoctorSettings) -> Tuple[List[str], List[str]]:
    run = found.run
    docs = {n.name: found_on(found, n) for n in run.inv.nodes if found.was_checked(n)}
    if not docs:
        return [], []
    with_gpus = [name for name, d in docs.items() if d is not None and d.has_gpus]
    bad = {name: d for name, d in docs.items() if d is not None and d.problems}
    if not with_gpus and not bad:
        lines = [f"GPU doctor: no GPUs on {len(docs)}/{len(run.inv.nodes)} nodes"]
    else:
        fine = len(with_gpus) - len([n for n in with_gpus if n in bad])
        lines = [f"GPU doctor: {fine}/{len(with_gpus)} GPU nodes ok" + (f"; problems on {', '.join(bad)}" if bad else "")]
    warnings = [f"GPU {f.level} on {name}: {f.line()}" for name, d in docs.items() if d is not None for f in d.findings]
    return lines, warnings


def _data(found: Carried, s: DoctorSettings) -> Any:
    docs = {n.name: found_on(found, n) for n in found.run.inv.nodes}
    return {name: d.as_data() for name, d in docs.items() if d is not None}


def seen(found: Optional[Doctor]) -> Seen:
    """`gpufab status`: the doctor's quick root pass (its first look, no training python): its problems."""
    if found is None:
        return Seen("-")
    return Seen(f"GPUs {found.verdict()}", tuple(p.line() for p in found.problems))


CHECK = Check("doctor", settings=read, look=first_look, said=said, check=examine, check_cluster=check_cluster,
              columns=(CheckColumn("gpus", "GPUs", _gpus_cell),), report=_report, data=_data, status=seen)
