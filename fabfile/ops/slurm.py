"""A Ray-on-SLURM batch script sized from the inventory (Ray's documented slurm-basic layout)."""

from __future__ import annotations

import re
from typing import Any, Optional

from ..core.errors import InputError
from ..core.files import render
from ..core.inventory import Inventory
from ..core.declared import Setting, declare, whole

TIME_RE = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")


def gpus_per_node(inv: Inventory) -> int:
    """The GPU count every node has (inventory var `gpus`); a mixed cluster is refused."""
    counts = {int(n.vars.get("gpus") or 0) for n in inv.nodes}
    if len(counts) > 1:
        raise InputError(f"nodes have different gpus counts ({', '.join(map(str, sorted(counts)))}); "
                         "a SLURM job asks the same of every node", path="gpus")
    return counts.pop()


def sbatch_script(inv: Inventory, *, output: str, job_name: str, command: str, venv: str, port: int,
                  time_limit: str, partition: Optional[str], cpus: Optional[Any]) -> str:
    if not TIME_RE.match(time_limit):
        raise InputError(f"invalid time limit {time_limit!r} (e.g. 04:00:00 or 1-00:00:00)", path="--time")
    if not re.match(r"^[A-Za-z0-9_.-]+$", job_name):
        raise InputError(f"invalid job name {job_name!r}", path="--job-name")
    if partition is not None and not re.match(r"^[A-Za-z0-9_.,-]+$", partition):
        raise InputError(f"invalid partition {partition!r}", path="--partition")
    if cpus is not None and not str(cpus).isdigit():
        raise InputError(f"invalid cpus {cpus!r}", path="cpus")
    return render("slurm/ray-cluster.sbatch.j2", inventory=inv.path or "--hosts", output=output, job_name=job_name,
                  nodes=len(inv.nodes), gpus=gpus_per_node(inv), cpus=cpus, partition=partition,
                  time_limit=time_limit, venv=venv, port=port, command=command)


DECLARED = declare(
    "ops.slurm",
    Setting("cpus", "CPUs per task of a Slurm job", "Slurm's",
            kind=whole(0)),
)
