"""`bundle`: the evidence a provider's support asks for about a bad node, in one archive.

Support wants `nvidia-smi -q`, `topo -m`, `ibstat`, the kernel log around the Xid, versions and the
all-reduce figures, and users collected them by hand from each node. One program per node
(templates/remote/bundle-collect.sh, as root) runs each collector under its own time bound and
size cap and sends back one tar; the controller adds the last report and writes a MANIFEST that
says what each file is, which command made it and how that command ended. Secrets never travel:
the node blanks every value of its secrets file and its Ray tokens in what it collected before the
tar is made, and the controller blanks the sudo passwords it holds.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..core import programs
from ..core.declared import owned
from ..core.errors import HostError
from ..core.fanout import HostResult
from ..core.localfs import read_text, replacing
from ..core.remote import Remote, last_line
from ..core.runfiles import RunFiles, check_own_output
from .shared.nodeenv import ENV_FILE
from .shared.python import DEFAULT_VENV
from .shared.secrets import SECRETS_FILE

#: Seconds one collector may run (a hung nvidia-smi is a finding, not a hung bundle).
COLLECT_TIMEOUT = 20
#: Seconds all collectors of one node may take together; those left when it is spent are `skipped`.
NODE_BUDGET = 120
#: Bytes one collected file keeps (the rest is cut): with FILES, the bound on one node's share.
FILE_CAP = 1 << 20
#: Lines of kernel log around each GPU or InfiniBand error, and the most lines kept.
KERNEL_CONTEXT = 5
KERNEL_LINES = 2000
#: How far back the units' journals go.
JOURNAL_SINCE = "1 hour ago"
#: Where Ray reads its token (in the home of whoever runs it): Ray's own place, where ray.setup puts it.
RAY_TOKEN = ".ray/auth_token"

#: The program's values (its arguments: the SSH user, then the units whose journals it reads).
VALUES = dict(per=COLLECT_TIMEOUT, budget=NODE_BUDGET, cap=FILE_CAP, context=KERNEL_CONTEXT, kernel_lines=KERNEL_LINES,
              since=JOURNAL_SINCE, ib_sysfs="/sys/class/infiniband", venv=DEFAULT_VENV, netenv_file=ENV_FILE,
              secrets_file=SECRETS_FILE, token_path=RAY_TOKEN)
PROGRAM = programs.text("bundle-collect.sh", **VALUES)
MARKER = "==gpufab-bundle"
#: What the node's commands.tsv lists, by file: what the file is, for the MANIFEST.
FILES = {
    "nvidia-smi-q.txt": "every GPU's full state: ECC, row remaps, fabric state, clocks, persistence",
    "nvidia-smi-topo.txt": "the GPU/NIC topology matrix (NVLink, PCIe switch, NUMA affinity)",
    "nvidia-smi-nvlink.txt": "each NVLink's state and speed",
    "lspci-nvidia.txt": "the NVIDIA devices on the PCI bus (GPUs the driver lost show here only)",
    "fabricmanager.txt": "nvidia-fabricmanager's state and last lines (NVSwitch machines)",
    "ibstat.txt": "InfiniBand ports as ibstat reports them",
    "ibv_devinfo.txt": "InfiniBand devices as libibverbs sees them",
    "ib-sysfs.txt": "each InfiniBand port's state, rate and link layer from sysfs",
    "kernel-errors.txt": f"kernel log lines around GPU/InfiniBand errors (Xid, NVRM, mlx5, AER), {KERNEL_CONTEXT} lines of context",
    "version-kernel.txt": "the kernel's version",
    "os-release.txt": "the OS release",
    "version-driver.txt": "the NVIDIA driver's version",
    "version-docker.txt": "Docker's client and daemon versions",
    "version-ray.txt": f"Ray's version in gpufab's venv ({DEFAULT_VENV})",
    "netenv.env": f"netenv's settings ({ENV_FILE}: NCCL's NIC, MASTER_ADDR ...)",
    "units.txt": "gpufab's systemd units and their states",
    "journal-units.txt": f"the journals of gpufab's units since {JOURNAL_SINCE}",
}
_UNIT_RE = re.compile(r"^[A-Za-z0-9@._*-]+$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def journal_units() -> Tuple[str, ...]:
    """gpufab's units as the steps declare them (with and without files), and any other gpufab-* (jobs)."""
    o = owned()
    names = tuple(dict.fromkeys((*o.units, *o.transient, "gpufab-*")))
    assert all(_UNIT_RE.match(n) for n in names), names
    return names


@dataclass(frozen=True)
class Collected:
    """One file a node sent: how its command ended."""

    name: str
    status: str  # the exit status, or `skipped`
    size: int
    command: str

    def ending(self) -> str:
        if self.status == "skipped":
            return "skipped: the node's time budget was spent"
        said = {"0": "exit 0", "124": f"timed out after {COLLECT_TIMEOUT}s", "137": f"timed out after {COLLECT_TIMEOUT}s",
                "127": "command not found", "141": "exit 141 (output cut)"}.get(self.status, f"exit {self.status}")
        return said + (f", cut at {FILE_CAP} bytes" if self.size >= FILE_CAP else "")


@dataclass
class NodeBundle:
    files: Dict[str, bytes] = field(default_factory=dict)
    collected: List[Collected] = field(default_factory=list)


def parse_commands(text: str) -> List[Collected]:
    out = []
    for line in text.splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[2].isdigit():
            out.append(Collected(parts[0], parts[1], int(parts[2]), parts[3]))
    return out


def unpack(data: bytes) -> NodeBundle:
    """The node's tar: plain files at its top only (a node is not trusted to name paths on the controller)."""
    bundle = NodeBundle()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            if not member.isfile() or not _FILE_RE.match(name):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                bundle.files[name] = handle.read(FILE_CAP + 1)
    bundle.collected = parse_commands(bundle.files.pop("commands.tsv", b"").decode("utf-8", errors="replace"))
    return bundle


def decode(stdout: str) -> bytes:
    head, found, body = stdout.partition(MARKER + "\n")
    if not found:
        raise HostError("the collection sent no archive")
    return base64.b64decode(body)


def collect(remote: Remote) -> NodeBundle:
    """Run the program as root (sudo for a non-root login) and read back what it sent."""
    result = remote.script(PROGRAM, remote.user, *journal_units(), sudo=True, warn=True, timeout=NODE_BUDGET + 60)
    if result.exited != 0:
        raise HostError(f"the collection failed: {last_line(result.stderr) or f'exit {result.exited}'}")
    return unpack(decode(result.stdout))


def redact(data: bytes, secrets: Sequence[str]) -> bytes:
    for value in secrets:
        if value and len(value) >= 4:
            data = data.replace(value.encode("utf-8"), b"***")
    return data


# --------------------------------------------------------------------------- the archive


def check_output(path: str, inventory: str, files: RunFiles) -> None:
    """-o must name an archive of its own: the bundle reads the inventory and the reports."""
    check_own_output(path, inventory, files, "the bundle", "e.g. bundle.tar.gz")


def default_output(now: float) -> str:
    return time.strftime("gpufab-bundle-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime(now))


def report_files(files: RunFiles) -> List[Tuple[str, bytes, str]]:
    """(name in the archive, content, what it is) of the last report, and its all-reduce figures."""
    out = []
    text = read_text(files.json)
    if text is not None:
        out.append((f"report/{os.path.basename(files.json)}", text.encode(), f"the last bootstrap's report (JSON), from {files.json}"))
        try:
            figures = json.loads(text).get("results", {}).get("allreduce")
        except (ValueError, AttributeError):
            figures = None
        if figures:
            out.append(("report/allreduce.json", (json.dumps(figures, indent=2) + "\n").encode(),
                        "the all-reduce figures of the last bootstrap (its report's results)"))
    md = read_text(files.markdown)
    if md is not None:
        out.append((f"report/{os.path.basename(files.markdown)}", md.encode(), f"the last bootstrap's report, from {files.markdown}"))
    return out


def manifest(results: Sequence[HostResult], extra: Sequence[Tuple[str, bytes, str]], inventory: str, now: float,
             missing_report: str) -> str:
    reached = [r for r in results if not r.failed]
    lines = [f"gpufab bundle, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now))}, inventory {inventory}: "
             f"{len(reached)} of {len(results)} nodes collected",
             f"Each file: what it is; the command that made it (run as root on the node, {COLLECT_TIMEOUT}s and "
             f"{FILE_CAP} bytes at most each) and how it ended. Secret values are replaced by ***.", ""]
    if extra:
        lines += [f"{name}: {what}" for name, _, what in extra]
    else:
        lines.append(f"report: none ({missing_report})")
    for r in results:
        lines.append("")
        where = f"{r.node.name} ({r.node.public})"
        if r.failed:
            lines.append(f"{where}: NOT COLLECTED: {r.reason}")
            continue
        bundle: NodeBundle = r.value
        lines.append(f"{where}: {len(bundle.collected)} files in {r.seconds:.1f}s")
        for c in bundle.collected:
            what = FILES.get(c.name, "")
            lines.append(f"  {r.node.name}/{c.name}: {what}" + (";" if what else "") + f" `{c.command}`: {c.ending()}")
    return "\n".join(lines) + "\n"


def write_archive(path: str, top: str, members: Sequence[Tuple[str, bytes]], now: float) -> int:
    """The archive in one rename (a failure leaves nothing), 0600: it describes the cluster. Its size."""
    with replacing(path) as fh:
        with tarfile.open(fileobj=fh, mode="w:gz") as tar:
            for name, data in members:
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mtime, info.mode = len(data), int(now), 0o644
                tar.addfile(info, io.BytesIO(data))
    return os.path.getsize(path)


def archive_members(results: Sequence[HostResult], extra: Sequence[Tuple[str, bytes, str]], text: str,
                    secrets: Sequence[str]) -> List[Tuple[str, bytes]]:
    members = [("MANIFEST", text.encode())] + [(name, redact(data, secrets)) for name, data, _ in extra]
    for r in results:
        if not r.failed:
            members += [(f"{r.node.name}/{name}", redact(data, secrets)) for name, data in sorted(r.value.files.items())]
    return members


def summary(results: Sequence[HostResult], path: str, size: int) -> str:
    dead = [f"{r.node.name} ({r.reason})" for r in results if r.failed]
    return (f"bundle: wrote {path} ({size} bytes): {len(results) - len(dead)} of {len(results)} nodes"
            + (f"; not collected: {', '.join(dead)}" if dead else ""))


def top_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".tar.gz", ".tgz"):
        if base.endswith(suffix):
            return base[: -len(suffix)] or "gpufab-bundle"
    return "gpufab-bundle"


def passwords(values: Sequence[Optional[str]]) -> List[str]:
    return [v for v in dict.fromkeys(values) if v]
