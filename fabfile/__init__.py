"""gpufab: turn rented bare-metal GPU machines into a training cluster over SSH.

`fab` and `inv` both load this collection (invoke.yaml points `inv` here).
"""

from invoke import Collection

from . import inventory, lab
from .execute import exec_

ns = Collection()
ns.add_task(exec_, name="exec")
ns.add_collection(Collection.from_module(inventory, name="inventory"))
ns.add_collection(Collection.from_module(lab, name="lab"))
