"""GPU-shaped lab hosts: stand-in NVIDIA tools serving outputs captured on real machines.

`inv lab.up --gpus hgx-h100` (or `--gpus node2=hgx-h100,node3=hgx-h100-broken`) gives a lab host what
gpufab reads from a GPU node: `nvidia-smi` (-q, topo -m, nvlink -s, -L, --query-gpu), `lspci`, NVIDIA
kernel log lines, an InfiniBand sysfs tree (made from a captured `ibstat`), an nvidia-fabricmanager
unit, and a training python whose torch.cuda answers as the profile's GPUs would. Each file the profile
serves is a capture from tests/fixtures/captured (tests/fixtures/README.md names its source), or says
how it was derived from one. CUDA, NCCL and GPUDirect cannot be stood in: nothing runs on a GPU here,
and the lab's all-reduce runs Gloo.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.errors import InputError
from ..core.files import render
from ..ops.shared import infiniband

REPO = Path(__file__).resolve().parents[2]
CAPTURED = REPO / "tests" / "fixtures" / "captured"
DERIVED = REPO / "tests" / "fixtures" / "derived"
STANDINS = Path(__file__).resolve().parent / "standins"
#: On the lab host.
DATA = "/usr/local/lib/gpufab-lab/gpu"
SITE = "/usr/local/lib/gpufab-lab/python"
UNIT = "gpufab-lab-gpu.service"
FM_UNIT = "nvidia-fabricmanager.service"


@dataclass(frozen=True)
class Profile:
    name: str
    smi: str
    topo: str
    lspci: str
    ibstat: str
    #: NVIDIA kernel log lines the host shows (a capture), the GPU bus they name rewritten to `lost`.
    kernel: Optional[str] = None
    #: A GPU whose block is cut out of nvidia-smi -q: lost, as after an XID 79.
    lost: Optional[str] = None
    fabric_manager: bool = True
    #: torch's NCCL version on the stand-in python (no capture says it: the one torch 2.4 ships).
    nccl: Tuple[int, int, int] = (2, 20, 5)


PROFILES: Dict[str, Profile] = {p.name: p for p in (
    Profile("hgx-h100", smi="gpu/h100-sxm-hgx8-535.nvidia-smi-q.txt", topo="gpu/h100-hgx8-nv18-8nic-570.topo-m.txt",
            lspci="h100-hgx8.lspci-nn.txt", ibstat="net/ibstat_h100_8xNDR_400_plus_mlx5_bond_0_ethernet.txt"),
    Profile("hgx-h100-broken", smi="gpu/h100-sxm-hgx8-535.nvidia-smi-q.txt",
            topo="gpu/h100-hgx8-nv18-8nic-570.topo-m.txt", lspci="h100-hgx8.lspci-nn.txt",
            ibstat="net/ibstat_h100_8xNDR_400_plus_mlx5_bond_0_ethernet.txt",
            kernel="gpu/dmesg-xid79-fallen-off-bus-pciehp-linkdown.txt", lost="5d", fabric_manager=False),
)}


def parse_gpus_option(value: Optional[str], names: Sequence[str]) -> Dict[str, Profile]:
    """`hgx-h100` (every host) or `node2=hgx-h100,node3=hgx-h100-broken` -> host -> profile."""
    if not value:
        return {}
    out: Dict[str, Profile] = {}
    for item in value.split(","):
        host, _, name = item.strip().rpartition("=")
        if name not in PROFILES:
            raise InputError(f"unknown GPU profile {name!r} (profiles: {', '.join(PROFILES)})", path="--gpus")
        targets = [host] if host else list(names)
        for target in targets:
            if target not in names:
                raise InputError(f"no lab host {target!r} (hosts: {', '.join(names)})", path="--gpus")
            out[target] = PROFILES[name]
    return out


# --------------------------------------------------------------------------- what a profile serves


def smi_text(p: Profile) -> str:
    """nvidia-smi -q as captured; with `lost`, that GPU's block cut out and the count lowered (derived)."""
    text = (CAPTURED / p.smi).read_text()
    if not p.lost:
        return text
    head, *blocks = re.split(r"(?m)^(?=GPU [0-9A-Fa-f]{8}:)", text)
    kept = [b for b in blocks if not b[4:].lower().startswith(f"00000000:{p.lost}")]
    head = re.sub(r"(Attached GPUs\s*: )\d+", lambda m: f"{m.group(1)}{len(kept)}", head)
    return head + "".join(kept)


def kernel_text(p: Profile) -> str:
    """The captured kernel lines, their GPU bus rewritten to the profile's lost GPU (derived)."""
    if not p.kernel:
        return ""
    text = (CAPTURED / p.kernel).read_text()
    if p.lost:
        text = re.sub(r"0000:01:00", f"0000:{p.lost}:00", text)
    return "".join(line + "\n" for line in text.splitlines() if "NVRM" in line or "pciehp" in line)


def cuda_view(p: Profile) -> Dict[str, object]:
    """What the stand-in python's torch.cuda answers: the GPUs nvidia-smi shows, its CUDA version."""
    text = smi_text(p)
    names = re.findall(r"^\s+Product Name\s*: (.*)$", text, re.M)
    cuda = re.search(r"^CUDA Version\s*: (\S+)", text, re.M)
    return {"gpus": len(names), "name": names[0].strip() if names else "", "cuda": cuda.group(1) if cuda else "",
            "nccl": list(p.nccl)}


_STATES = {"ACTIVE": "4: ACTIVE", "INIT": "2: INIT", "ARMED": "3: ARMED", "DOWN": "1: DOWN"}
_PHYS = {"linkup": "5: LinkUp", "disabled": "3: Disabled", "polling": "2: Polling", "sleep": "1: Sleep"}


def sysfs_tree(ports: Sequence[infiniband.IbPort], gids: Mapping[Tuple[str, int], Sequence[Tuple[int, str, str]]]
               = {}, netdevs: Mapping[str, str] = {}) -> Dict[str, str]:
    """`/sys/class/infiniband/...` files (relative) for these ports, as the kernel writes them: derived from
    a captured `ibstat`; RoCE GID tables and network devices from a captured `show_gids` where given."""
    out: Dict[str, str] = {}
    for p in ports:
        base = f"infiniband/{p.device}/ports/{p.port}"
        out[f"{base}/state"] = _STATES.get(p.state, f"0: {p.state}")
        out[f"{base}/phys_state"] = _PHYS.get(p.phys_state.lower(), p.phys_state or "5: LinkUp")
        out[f"{base}/link_layer"] = p.link_layer
        out[f"{base}/rate"] = p.rate if "(" in p.rate else f"{p.rate} (4X)"
        for index, kind, gid in gids.get((p.device, p.port), ()):
            out[f"{base}/gids/{index}"] = gid
            out[f"{base}/gid_attrs/types/{index}"] = kind
        if p.device in netdevs:  # a directory in sysfs: only its name is read
            out[f"infiniband/{p.device}/device/net/{netdevs[p.device]}/.keep"] = ""
    return out


def roce_tree() -> Dict[str, str]:
    """A two-port RoCE node's tree, derived from two captures: the ports (ACTIVE, Ethernet, 100 Gb/s) of
    `ibstatus` in NVIDIA/nccl#1866, the GID tables and network devices of `show_gids` in NVIDIA/nccl#1538."""
    ports = [p for p in infiniband.parse_ibstat((CAPTURED / "net" / "ibstatus_roce_100G_EDR_ethernet_nccl1866.txt")
                                                .read_text()) if p.device in ("mlx5_0", "mlx5_1")]
    text = (CAPTURED / "net" / "show_gids_roce_v1_v2_nccl1538.txt").read_text()
    return sysfs_tree(ports, parse_show_gids(text), show_gids_netdevs(text))


def show_gids_netdevs(text: str) -> Dict[str, str]:
    """A captured `show_gids` table -> device -> its network device (the last column)."""
    return {cols[0]: cols[-1] for cols in (line.split() for line in text.splitlines())
            if len(cols) >= 5 and cols[1].isdigit() and cols[2].isdigit()}


def write_tree(tree: Mapping[str, str], root: Path) -> None:
    """A tree of `sysfs_tree` under `root`, one value a line as sysfs shows it."""
    for rel, content in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n" if content else "")


def parse_show_gids(text: str) -> Dict[Tuple[str, int], List[Tuple[int, str, str]]]:
    """A captured `show_gids` table -> (device, port) -> [(index, 'RoCE v2', gid)]."""
    out: Dict[Tuple[str, int], List[Tuple[int, str, str]]] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[1].isdigit() and cols[2].isdigit() and cols[-2] in ("v1", "v2"):
            kind = "RoCE v2" if cols[-2] == "v2" else "IB/RoCE v1"
            out.setdefault((cols[0], int(cols[1])), []).append((int(cols[2]), kind, cols[3]))
    return out


def profile_files(p: Profile) -> Dict[str, Tuple[str, int]]:
    """Every file of the profile on the host: inner path -> (content, mode)."""
    ports = infiniband.parse_ibstat((CAPTURED / p.ibstat).read_text())
    files: Dict[str, Tuple[str, int]] = {
        f"{DATA}/smi-q.txt": (smi_text(p), 0o644),
        f"{DATA}/topo.txt": ((CAPTURED / p.topo).read_text(), 0o644),
        f"{DATA}/nvlink.txt": ("", 0o644),
        f"{DATA}/lspci.txt": ((DERIVED / p.lspci).read_text(), 0o644),
        f"{DATA}/kmsg.txt": (kernel_text(p), 0o644),
        f"{DATA}/cuda.json": (json.dumps(cuda_view(p)) + "\n", 0o644),
        f"{DATA}/profile": (p.name + "\n", 0o644),
        "/usr/local/bin/nvidia-smi": ((STANDINS / "nvidia-smi").read_text(), 0o755),
        "/usr/local/bin/lspci": ((STANDINS / "lspci").read_text(), 0o755),
        "/usr/local/bin/dmesg": ((STANDINS / "dmesg").read_text(), 0o755),
        f"{SITE}/sitecustomize.py": ((STANDINS / "sitecustomize.py").read_text(), 0o644),
        # The training python of a GPU-shaped host: python3 with the stand-in torch.cuda on its path.
        "/usr/local/bin/python-gpu": (render("lab/python-gpu.j2", site=SITE), 0o755),
        # At every boot: /sys/class copied to a tmpfs with the profile's InfiniBand tree added, mounted over it.
        f"/etc/systemd/system/{UNIT}": (render(f"lab/{UNIT}.j2", data=DATA), 0o644),
        # A stand-in nvidia-fabricmanager: active, or failed as when its version does not match the driver.
        f"/etc/systemd/system/{FM_UNIT}": (render(f"lab/{FM_UNIT}.j2", healthy=p.fabric_manager), 0o644),
    }
    for rel, content in sysfs_tree(ports).items():
        files[f"{DATA}/sysfs/{rel}"] = (content + "\n" if content else "", 0o644)
    return files


def installed_profile(root: str) -> str:
    """The profile a lab host's root holds ('' for none)."""
    try:
        return (Path(root) / DATA.lstrip("/") / "profile").read_text().strip()
    except OSError:
        return ""


#: Run on the host once its files are written: the units on, at once and at every boot.
ENABLE = (f"systemctl daemon-reload && systemctl enable --now {UNIT} >/dev/null 2>&1 && "
          f"systemctl enable {FM_UNIT} >/dev/null 2>&1; systemctl start {FM_UNIT} 2>/dev/null; true")
