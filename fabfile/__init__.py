"""gpufab: turn rented bare-metal GPU machines into a training cluster over SSH.

`fab` and `inv` both load this collection (`inv` through the root tasks.py).
"""

from invoke import Collection

from . import docker, gpu, inventory, lab, limits, logs, netenv, nfs, ray, run, slurm, storage
from .bootstrap import bootstrap, report
from .launch import launch
from .execute import exec_

ns = Collection()
ns.add_task(exec_, name="exec")
ns.add_task(bootstrap)
ns.add_task(report)
ns.add_task(launch)
ns.add_collection(Collection.from_module(inventory, name="inventory"))
ns.add_collection(Collection.from_module(lab, name="lab"))
ns.add_collection(Collection.from_module(limits, name="limits"))
ns.add_collection(Collection.from_module(docker, name="docker"))
ns.add_collection(Collection.from_module(netenv, name="netenv"))
ns.add_collection(Collection.from_module(nfs, name="nfs"))
ns.add_collection(Collection.from_module(ray, name="ray"))
ns.add_collection(Collection.from_module(gpu, name="gpu"))
ns.add_collection(Collection.from_module(logs, name="logs"))
ns.add_collection(Collection.from_module(run, name="run"))
ns.add_collection(Collection.from_module(slurm, name="slurm"))
ns.add_collection(Collection.from_module(storage, name="storage"))

# `inv pyenv.check`: the same version table, under the name some guides use.
pyenv = Collection("pyenv")
pyenv.add_task(ray.versions, name="check")
ns.add_collection(pyenv)
