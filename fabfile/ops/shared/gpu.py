"""`nvidia-smi` per node: the query, and parsing its CSV into rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from ...core import programs
from ...core.facts import Fact
from ...core.fanout import FAILED, OK, HostResult
from ...core.remote import run_parsed

FIELDS = "index,name,memory.used,memory.total,utilization.gpu"
NO_SMI = "==gpufab no nvidia-smi"
#: Seconds nvidia-smi gets: a driver that hangs it is a finding, not a hung run.
SMI_TIMEOUT = 20
SMI = f"timeout -k 5 {SMI_TIMEOUT} nvidia-smi"
HUNG = f"nvidia-smi hung ({SMI_TIMEOUT}s)"
#: CSV rows per GPU, or a marker line when the node has no nvidia-smi at all.
QUERY = (f"if command -v nvidia-smi >/dev/null 2>&1; then {SMI} --query-gpu={FIELDS}"
         f" --format=csv,noheader,nounits; else echo '{NO_SMI}'; fi")
#: The number of GPUs nvidia-smi lists (0 without it), or HUNG.
COUNT = programs.call("gpu_count", smi_timeout=SMI_TIMEOUT)


def read_count(remote) -> str:
    return remote.script(COUNT, warn=True, timeout=SMI_TIMEOUT + 10).stdout.strip()


#: What COUNT prints, read once per run for every step that needs it (preflight's pass reads it first).
GPUS = Fact("GPU count", read_count, stale_after=("packages",))


def count_of(text: str) -> int:
    """COUNT's answer as a number (0: none, or nvidia-smi hung)."""
    return int(text) if text.strip().isdigit() else 0


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str
    memory_used: str  # MiB
    memory_total: str  # MiB
    utilization: str  # percent


def parse_gpus(text: str) -> Tuple[Optional[List[Gpu]], str]:
    """(GPUs, problem): None with a reason when the node has no nvidia-smi or it failed."""
    if NO_SMI in text:
        return None, "no GPUs (nvidia-smi not found)"
    gpus: List[Gpu] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 5:
            continue
        gpus.append(Gpu(*fields))
    if not gpus:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
        return None, f"nvidia-smi lists no GPUs ({first})"
    return gpus, ""


def memory_cell(gpu: Gpu) -> str:
    return f"{gpu.memory_used} / {gpu.memory_total} MiB"


def query_gpus(conn, node, timeout) -> HostResult:
    result = run_parsed(conn, QUERY, warn=True, timeout=timeout)
    gpus, problem = parse_gpus(result.stdout + result.stderr)
    if result.exited in (124, 137):
        return HostResult(node, FAILED, result.exited, reason=HUNG)
    if result.exited != 0:
        return HostResult(node, FAILED, result.exited, reason=f"nvidia-smi failed: {problem}")
    return HostResult(node, OK, reason=problem or "", value=gpus)
