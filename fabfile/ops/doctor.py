"""`gpu.doctor`: is the NVIDIA stack of each node fit to train, and if not, what to do.

The failures users meet first are found only when a job starts: GPUs on the
PCI bus that the driver lost, NVSwitch machines whose fabric manager is not
running (CUDA error 802 while nvidia-smi looks fine), a pending row remap,
an XID in the kernel log, containers that cannot see the GPUs. Each is read
from the node in two round trips (root: PCI, nvidia-smi -q, kernel log,
Docker, InfiniBand; the SSH user: the training python's CUDA), every
command under a timeout, so a hung driver is a finding and not a hung run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.cluster import setting
from ..core.errors import HostError, InputError
from ..core.facts import parse_facts
from ..core.fanout import HostResult
from ..core.inventory import Inventory
from ..core.remote import Remote
from ..core.report import host_table
from ..core.steps import Outcome
from . import allreduce, infiniband
from .ray import DEFAULT_VENV

#: Seconds each nvidia-smi / docker command gets before it counts as hung.
COMMAND_TIMEOUT = 20
#: `dcgmi diag -r 1` (quick) takes about a minute.
DCGM_TIMEOUT = 300
CONTAINER_TIMEOUT = 90
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")

PROBLEM = "problem"
WARNING = "warning"

#: Everything root can read in one pass. $1 timeout, $2 deep (1/0), $3 test image ('' = none).
ROOT_SCRIPT = r"""
T=$1; deep=$2; image=$3
echo "@@lspci"
if command -v lspci >/dev/null 2>&1; then timeout -k 2 "$T" lspci -nn -d 10de: 2>/dev/null
else
  for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/vendor" 2>/dev/null)" = 0x10de ] && echo "pci=${d##*/} $(cat "$d/class") $(cat "$d/device")"
  done
fi
echo "@@smi"
if command -v nvidia-smi >/dev/null 2>&1; then timeout -k 5 "$T" nvidia-smi -q 2>&1; rc=$?; echo "@@smi-rc $rc"
  if [ "$rc" = 0 ]; then echo "@@topo"; timeout -k 2 "$T" nvidia-smi topo -m 2>/dev/null; fi
else echo "@@smi-missing"; fi
echo "@@fm"
systemctl is-active nvidia-fabricmanager 2>/dev/null || true
echo "@@xid"
{ dmesg 2>/dev/null || journalctl -k -b --no-pager -q 2>/dev/null; } | grep 'NVRM: Xid' | tail -n 20
echo "@@docker"
if command -v docker >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
  echo "runtimes=$(timeout -k 2 "$T" docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null)"
fi
command -v nvidia-ctk >/dev/null 2>&1 && echo ctk=yes
command -v nvidia-container-runtime-hook >/dev/null 2>&1 && echo hook=yes
echo "@@ib"
IB_SCRIPT
if [ -n "$image" ] && command -v docker >/dev/null 2>&1 && timeout -k 2 "$T" nvidia-smi -L >/dev/null 2>&1; then
  echo "@@container"
  if docker image inspect "$image" >/dev/null 2>&1; then
    timeout -k 5 CONTAINER_TIMEOUT docker run --rm --gpus all "$image" nvidia-smi -L 2>&1 | tail -n 20
    echo "@@container-rc $?"
  else echo "@@container-noimage"; fi
fi
if [ "$deep" = 1 ]; then
  echo "@@dcgm"
  if command -v dcgmi >/dev/null 2>&1; then timeout -k 5 DCGM_TIMEOUT dcgmi diag -r 1 2>&1; echo "@@dcgm-rc $?"
  else echo "@@dcgm-missing"; fi
fi
true
""".replace("IB_SCRIPT", infiniband.SCRIPT).replace("CONTAINER_TIMEOUT", str(CONTAINER_TIMEOUT)) \
   .replace("DCGM_TIMEOUT", str(DCGM_TIMEOUT))


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
    bus: str  # 18:00.0 (domain dropped)
    kind: str  # gpu, nvswitch, other
    name: str


_LSPCI = re.compile(r"^(?:[0-9a-f]{4}:)?([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+(.*?)\s*\[([0-9a-f]{4})\]:\s*(.*?)\s*\[10de:([0-9a-f]{4})\]",
                    re.I)


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
                out.append(PciDevice(_short_bus(parts[0]), _kind(parts[1][2:6]), f"10de:{parts[2][2:]}"))
            continue
        match = _LSPCI.match(line.strip())
        if match:
            bus, _, cls, name, device = match.groups()
            out.append(PciDevice(bus.lower(), _kind(cls), name.replace("NVIDIA Corporation ", "")))
    return out


def _short_bus(address: str) -> str:
    """`00000000:18:00.0` / `0000:18:00.0` / `18:00` -> `18:00.0`-style, lower case, for comparing."""
    address = address.strip().lower()
    match = re.search(r"([0-9a-f]{2}):([0-9a-f]{2})(?:\.([0-7]))?$", address)
    return f"{match.group(1)}:{match.group(2)}.{match.group(3) or '0'}" if match else address


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
            blocks.append((_short_bus(text[4:]), {}))
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
        ))
    return SmiReport(header.get(("Driver Version",), ""), header.get(("CUDA Version",), ""), tuple(gpus))


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
        """Some GPU pair is joined by NVLink (an SXM board, not PCIe cards)."""
        return any(link.startswith("NV") for link in self.links.values())


def parse_topo(lines: Sequence[str]) -> Topology:
    """The GPU-to-GPU part of `nvidia-smi topo -m` (tab-separated), and its NIC legend."""
    header: List[str] = []
    links: Dict[Tuple[int, int], str] = {}
    nics: Dict[str, str] = {}
    for line in lines:
        cells = [c.strip() for c in line.split("\t")]
        if not header and len(cells) > 1 and cells[0] == "" and cells[1].startswith("GPU"):
            header = cells[1:]
            continue
        row = re.match(r"^GPU(\d+)$", cells[0]) if header else None
        if row:
            i = int(row.group(1))
            for name, cell in zip(header, cells[1:]):
                col = re.match(r"^GPU(\d+)$", name)
                if col and int(col.group(1)) != i:
                    links[(i, int(col.group(1)))] = cell
        legend = re.match(r"^\s*(NIC\d+):\s*(\S+)\s*$", line)
        if legend:
            nics[legend.group(1)] = legend.group(2)
    return Topology(links, nics)


# --------------------------------------------------------------------------- XID


@dataclass(frozen=True)
class Xid:
    bus: str
    code: int
    text: str


_XID = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f:.]+)\): (\d+),\s*(.*)$")

#: XIDs a user's program causes (bad memory access, its own kill): worth a look, not a broken GPU.
APP_XIDS = {13, 31, 43, 45, 68}
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
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}


def parse_xids(lines: Sequence[str]) -> List[Xid]:
    out = []
    for line in lines:
        match = _XID.search(line)
        if match:
            out.append(Xid(_short_bus(match.group(1)), int(match.group(2)), match.group(3).strip()))
    return out


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


def diagnose(parts: Mapping[str, List[str]], torch: Optional[Mapping[str, Any]] = None) -> Doctor:
    """ROOT_SCRIPT's sections (and the training python's CUDA view) -> the node's findings."""
    pci = parse_pci(parts.get("lspci", []))
    pci_gpus = [d for d in pci if d.kind == "gpu"]
    switches = [d for d in pci if d.kind == "nvswitch"]
    problems: List[Finding] = []
    warnings: List[Finding] = []
    report = SmiReport("", "", ())
    smi_count: Optional[int] = None
    if "smi-missing" in parts:
        if pci_gpus:
            problems.append(Finding(PROBLEM, f"{len(pci_gpus)} NVIDIA GPUs on the PCI bus but no driver (nvidia-smi not found)",
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
    if switches or topo.nvlinked:
        broken = topo.without_nvlink()
        if broken:
            pairs = ", ".join(f"GPU{i}-GPU{j} {link}" for i, j, link in broken[:4]) + (" ..." if len(broken) > 4 else "")
            problems.append(Finding(PROBLEM, f"{len(broken)} GPU pairs without NVLink ({pairs})",
                                    "an NVLink is down: `nvidia-smi nvlink -s`, reset the GPUs or reboot; "
                                    "if it stays, ask the provider"))
    for xid in parse_xids(parts.get("xid", [])):
        meaning = XID_MEANING.get(xid.code, xid.text)
        if xid.code in APP_XIDS:
            warnings.append(Finding(WARNING, f"XID {xid.code} on GPU {xid.bus} since boot: {meaning}",
                                    "look at the program that ran then"))
        else:
            problems.append(Finding(PROBLEM, f"XID {xid.code} on GPU {xid.bus} since boot: {meaning}",
                                    "drain the node and reboot; if it comes back, ask the provider"))
    gpus_seen = bool(smi_count) or bool(pci_gpus)
    docker = parse_facts("\n".join(parts.get("docker", [])))
    if gpus_seen and "runtimes" in docker:
        runtimes = docker["runtimes"].split()
        if "nvidia" not in runtimes and docker.get("hook") != "yes":
            fix = ("`nvidia-ctk runtime configure --runtime=docker` and restart docker" if docker.get("ctk") == "yes"
                   else "install nvidia-container-toolkit, then `nvidia-ctk runtime configure --runtime=docker` and restart docker")
            problems.append(Finding(PROBLEM, "containers cannot see the GPUs (no NVIDIA container runtime)", fix))
    if "container-rc" in parts:
        lines = [x for x in parts.get("container", []) if x.strip()]
        seen = sum(1 for x in lines if x.startswith("GPU "))
        if parts["container-rc"][0].strip() != "0" or (smi_count and seen < smi_count):
            problems.append(Finding(PROBLEM, f"a container sees {seen} of {smi_count or len(pci_gpus)} GPUs"
                                             f" ({lines[-1] if lines else 'no output'})",
                                    "check nvidia-container-toolkit (`nvidia-ctk runtime configure`, restart docker)"))
    ib = infiniband.parse_sysfs("\n".join(parts.get("ib", [])))
    if ib.active and not ib.verbs:
        problems.append(Finding(PROBLEM, f"InfiniBand ports active ({', '.join(p.name for p in ib.active)}) but no libibverbs",
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
    names = sorted({g.name for g in report.gpus if g.name}) or sorted({d.name for d in pci})
    return " + ".join(names)


# --------------------------------------------------------------------------- settings and reading a node


@dataclass(frozen=True)
class DoctorSettings:
    deep: bool = False
    #: A local image `docker run --gpus all` tries (None: that check is left out).
    image: Optional[str] = None
    python: allreduce.AllreduceSettings = field(default_factory=allreduce.AllreduceSettings)


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
        python=allreduce.AllreduceSettings(
            python=allreduce.check_python(cli.get("train_python"), "--python"),
            default_python=allreduce.check_python(setting(config, inv, "train_python"), "train_python"),
            venv=str(setting(config, inv, "ray_venv", None, DEFAULT_VENV)),
        ),
    )


def root_command_timeout(s: DoctorSettings) -> int:
    return COMMAND_TIMEOUT * 4 + 30 + (CONTAINER_TIMEOUT if s.image else 0) + (DCGM_TIMEOUT if s.deep else 0)


def examine(remote: Remote, s: DoctorSettings, with_python: bool = True) -> Doctor:
    """Read the node (root's pass, then the training python where there are GPUs) and judge it."""
    text = remote.script(ROOT_SCRIPT, str(COMMAND_TIMEOUT), "1" if s.deep else "0", s.image or "",
                         sudo=True, warn=True, timeout=root_command_timeout(s)).stdout
    parts = sections(text)
    torch = train_python_view(remote, s) if with_python and sees_gpus(parts) else None
    return diagnose(parts, torch)


def sees_gpus(parts: Mapping[str, List[str]]) -> bool:
    """NVIDIA GPUs on the PCI bus, or in nvidia-smi: the training python's view is worth reading."""
    return any(d.kind == "gpu" for d in parse_pci(parts.get("lspci", []))) or \
        any(_GPU_BLOCK.match(line) for line in parts.get("smi", []))


def probe_pythons(remote: Remote, s: DoctorSettings) -> str:
    """The all-reduce's probe of the node's candidate training pythons, as printed."""
    pythons, _ = allreduce.candidates(remote.node, s.python)
    return remote.script(allreduce.FIND_PYTHON_SCRIPT, allreduce.PROBE, *pythons, timeout=150, warn=True).stdout


def train_python_view(remote: Remote, s: DoctorSettings) -> Optional[Dict[str, Any]]:
    """What the training python's torch sees (None: no torch there)."""
    return allreduce.parse_probe(probe_pythons(remote, s))


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
