"""`inv slurm.script`: the same cluster as a SLURM batch job, for sites that schedule with SLURM."""

from __future__ import annotations

from invoke import task

from .core.cluster import resolve_inventory, setting
from .core.errors import reported
from .core.localfs import write_if_changed


@task(help={
    "output": "where to write it (default ray-cluster.sbatch)",
    "command": "the job to run on the head once every node joined (default: python -u train.py)",
    "job_name": "SLURM job name (default gpufab-ray)",
    "time": "SLURM time limit (default 04:00:00)",
    "partition": "SLURM partition (default: the site's)",
})
@reported
def script(c, output="ray-cluster.sbatch", command="python -u train.py", job_name="gpufab-ray", time="04:00:00",
           partition=None):
    """Render a Ray-on-SLURM sbatch script: nodes, GPUs and CPUs per node from the inventory."""
    from .ops import slurm as plan
    from .ops import ray
    inv = resolve_inventory(c.config)
    s = ray.read(c.config, inv, {})
    text = plan.sbatch_script(inv, output=output, job_name=job_name, command=command, venv=s.venv, port=s.port,
                              time_limit=time, partition=partition, cpus=setting(c.config, inv, "cpus"))
    changed = write_if_changed(output, text, mode=0o755, backup=output + ".bak")
    print(f"slurm.script: {'wrote' if changed else 'unchanged'} {output} ({len(inv.nodes)} nodes, "
          f"{plan.gpus_per_node(inv)} GPUs per node); submit with: sbatch {output}")
