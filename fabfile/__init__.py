"""gpufab: turn rented bare-metal GPU machines into a training cluster over SSH.

`fab` and `inv` both load this collection (`inv` through the root tasks.py).
"""

from invoke import Collection

from . import docker, inventory, lab, limits, netenv, nfs, ray
from .bootstrap import bootstrap, report
from .execute import exec_

ns = Collection()
ns.add_task(exec_, name="exec")
ns.add_task(bootstrap)
ns.add_task(report)
ns.add_collection(Collection.from_module(inventory, name="inventory"))
ns.add_collection(Collection.from_module(lab, name="lab"))
ns.add_collection(Collection.from_module(limits, name="limits"))
ns.add_collection(Collection.from_module(docker, name="docker"))
ns.add_collection(Collection.from_module(netenv, name="netenv"))
ns.add_collection(Collection.from_module(nfs, name="nfs"))
ns.add_collection(Collection.from_module(ray, name="ray"))

# `inv pyenv.check`: the same version table, under the name some guides use.
pyenv = Collection("pyenv")
pyenv.add_task(ray.versions, name="check")
ns.add_collection(pyenv)
