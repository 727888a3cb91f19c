"""gpufab: turn rented bare-metal GPU machines into a training cluster over SSH.

`fab` and `inv` both load this collection (`inv` through the root tasks.py).
"""

from invoke import Collection

from . import docker, gpu, inventory, lab, limits, logs, netenv, nfs, ray, run, script, slurm, storage
from .bootstrap import bootstrap, report
from .launch import launch
from .allreduce import allreduce
from .execute import exec_

ns = Collection()
ns.add_task(exec_, name="exec")
ns.add_task(bootstrap)
ns.add_task(report)
ns.add_task(launch)
ns.add_task(allreduce)
for module in (inventory, lab, limits, docker, netenv, nfs, ray, gpu, logs, run, script, slurm, storage):
    ns.add_collection(Collection.from_module(module, name=module.__name__.rsplit(".", 1)[-1]))

# `inv pyenv.check`: the same version table, under the name some guides use.
pyenv = Collection("pyenv")
pyenv.add_task(ray.versions, name="check")
ns.add_collection(pyenv)
