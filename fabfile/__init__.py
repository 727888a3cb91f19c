"""gpufab: turn rented bare-metal GPU machines into a training cluster over SSH.

`fab` and `inv` both load this collection (`inv` through the root tasks.py), as
`fabfile` in a clone; the installed `gpufab` command loads it as `gpufab`. Every
import here is relative, and names derive from `__name__`, so either name works.
"""

import os
import sys

from invoke import Collection, Config

from .core.connection import check_ssh_config_paths, fab_ssh_config_paths
from .core.declared import declared_in
from .core.errors import BAD_INPUT, InputError
from .core.settings import check_config_files

from . import docker, gpu, inventory, lab, limits, logs, mesh, netenv, nfs, node, ray, run, script, slurm, storage
from .bootstrap import bootstrap, report
from .launch import launch
from .allreduce import allreduce
from .bundle import bundle
from .execute import exec_
from .fleet import fleet
from .reset import reset
from .status import status

# Each step's module declares the settings it reads: an inventory or config key none declares is an error.
declared_in(__name__ + ".ops")

# `inv` and `fab` read the project's invoke.yaml / fabric.yaml (and -f's) after this import, gpufab every file.
check_config_files(Config)

ns = Collection()
ns.add_task(exec_, name="exec")
ns.add_task(bootstrap)
ns.add_task(report)
ns.add_task(launch)
ns.add_task(allreduce)
ns.add_task(bundle)
ns.add_task(reset)
ns.add_task(fleet)
ns.add_task(status)
for module in (inventory, lab, limits, docker, netenv, mesh, nfs, node, ray, gpu, logs, run, script, slurm, storage):
    ns.add_collection(Collection.from_module(module, name=module.__name__.rsplit(".", 1)[-1]))

# `inv pyenv.check`: the same version table, under the name some guides use.
pyenv = Collection("pyenv")
pyenv.add_task(ray.versions, name="check")
ns.add_collection(pyenv)


def _name_a_bad_ssh_config_for_fab() -> None:
    """Under `fab` and `gpufab`, a bad ssh config is one error line, not Fabric's traceback after this import."""
    if os.path.basename(sys.argv[0]) not in ("fab", "gpufab"):
        return
    try:
        check_ssh_config_paths(*fab_ssh_config_paths(sys.argv[1:]))
    except InputError as exc:
        print(f"gpufab: error: {exc}", file=sys.stderr)
        sys.exit(BAD_INPUT)


_name_a_bad_ssh_config_for_fab()
