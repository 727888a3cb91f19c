"""A distributed launch: which nodes, in which rank order, with which values.

torchrun, `accelerate launch`, DeepSpeed and madengine-style runners all need
the same five numbers on every node, and each node a different NODE_RANK.
They are exported before the command and also substituted where the command
says `{NODE_RANK}` (for runners that take them as arguments).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ...core import programs
from ...core.errors import InputError
from ...core.inventory import Inventory, Node, check_count
from . import gpu
from ...core.declared import COUNT, NODE, Setting, declare

VARIABLES = ("NODE_RANK", "NNODES", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE")
#: `{NODE_RANK}` but not `${NODE_RANK}`, which is the shell's own expansion.
_PLACEHOLDER = re.compile(r"(?<!\$)\{(" + "|".join(VARIABLES) + r")\}")
#: Prints the node's GPU count (0 without nvidia-smi), bounded.
GPU_COUNT_CMD = gpu.COUNT


@dataclass(frozen=True)
class Placement:
    node: Node
    values: Dict[str, str]


def launch_nodes(inv: Inventory, role: Optional[str]) -> List[Node]:
    """The nodes of this launch, rank order: the head first, then by NID."""
    nodes = [n for n in inv.nodes if role is None or n.has_role(role)]
    if not nodes:
        known = sorted({r for n in inv.nodes for r in (n.role, *n.roles)})
        raise InputError(f"no node has role {role!r} (roles: {', '.join(known)})", path="--role")
    return rank_order(nodes)


def rank_order(nodes: Sequence[Node]) -> List[Node]:
    """The head first (it hosts the rendezvous), then by NID."""
    return sorted(nodes, key=lambda n: (not n.is_head, n.nid))


def placements(nodes: Sequence[Node], master_port: int, gpus: Dict[str, int]) -> List[Placement]:
    """Per node: its rank and the shared values. NPROC_PER_NODE is its GPU count (1 without GPUs)."""
    master = nodes[0].private or nodes[0].public
    out = []
    for rank, node in enumerate(nodes):
        declared = node.vars.get("gpus")
        if declared is not None and not str(declared).isdigit():
            raise InputError(f"{node.name}: gpus must be a whole number, not {declared!r}", path="gpus")
        count = int(declared) if declared is not None else gpus.get(node.name, 0)
        out.append(Placement(node, {
            "NODE_RANK": str(rank),
            "NNODES": str(len(nodes)),
            "MASTER_ADDR": master,
            "MASTER_PORT": str(master_port),
            "NPROC_PER_NODE": str(count or 1),
        }))
    return out


def substitute(command: str, values: Dict[str, str]) -> str:
    """`{MASTER_ADDR}` and the like filled in, each quoted for the shell (plain values stay as they are)."""
    return _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), command)


def node_command(command: str, values: Dict[str, str]) -> str:
    """The line run on one node: netenv loaded first, so that jobs see the node's NCCL/Gloo settings, then
    the values exported (launch values win), then the command."""
    exports = " ".join(f"{k}={shlex.quote(values[k])}" for k in VARIABLES)
    return f"{programs.inline('load_netenv')}; export {exports}; {substitute(command, values)}"


DECLARED = declare(
    "ops.shared.launch",
    Setting("gpus", "this node's GPU count for NPROC_PER_NODE, Ray and Slurm", "counted on the node", (NODE,),
            kind=COUNT, check=lambda v: check_count("gpus", v, None, None)),
)
