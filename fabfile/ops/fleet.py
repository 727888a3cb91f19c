"""`inv fleet`: every node's stack in one table, equal values folded, the odd node out marked.

A cluster trains only when the pieces that talk to each other agree: Ray
will not join across versions, NCCL across versions can hang, a node on
another driver major can lack a CUDA feature the others use. Rows are facts,
not nodes, folded the way `clush -b` folds output, so fifty equal nodes are
one line and the one that differs stands out.

In bootstrap it is a check of its own (CHECK) that preflight carries: the
facts are read on each node in the verify phase and compared in the report.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.checks import Carried, Check
from ..core.facts import parse_facts
from ..core.inventory import Inventory
from ..core.remote import Remote
from ..core.report import fold_names
from .shared import infiniband
from .shared.nodeenv import ENV_FILE
from .shared.python import PythonChoice, TrainPython, parse_probe, probe_pythons, read_choice
from .shared.versions import installed_versions

#: The facts, in table order.
FACTS = ("OS", "kernel", "driver", "CUDA", "NCCL", "GPUs", "NIC", "MTU", "InfiniBand", "Docker", "Python",
         "torch", "ray")
#: Facts whose values differ by design (each node names its own NIC): never starred.
VARIES = ("NIC",)
#: Facts that must be equal on every node (driver: its major version); `-` counts as a value.
MUST_MATCH = ("driver major", "CUDA", "NCCL", "torch", "ray", "Python")

#: One key=value per line. $1 head's private address, $2 Ray's venv python ('': Ray's version is known),
#: $3 seconds for nvidia-smi, $4 `known` where the run has read the InfiniBand ports already (core.facts).
SCRIPT = programs.text("fleet-facts.sh", env_file=ENV_FILE, ib_sysfs=infiniband.SYSFS, ib_gids=infiniband.GIDS_READ)


@dataclass(frozen=True)
class NodeFacts:
    values: Mapping[str, str]


def parse(text: str, python: Optional[Mapping[str, object]], ib: Optional[infiniband.IbFacts] = None) -> NodeFacts:
    """SCRIPT's output and the training python's view -> one value per fact (`-`: absent); `ib`: the
    node's ports where the run knew them already (SCRIPT then leaves them out)."""
    keys = parse_facts(text)
    gpus = [line[4:].strip() for line in text.splitlines() if line.startswith("gpu=") and line[4:].strip()]
    ib = ib if ib is not None else infiniband.parse_sysfs(text)
    counted = OrderedDict((name, gpus.count(name)) for name in gpus)
    nic = keys.get("nic", "")
    speed = keys.get("speed", "")
    nic_cell = f"{nic} ({int(speed) // 1000} Gb/s)" if nic and speed.isdigit() and int(speed) >= 1000 else \
        f"{nic} ({speed} Mb/s)" if nic and speed.isdigit() and int(speed) > 0 else nic
    py = python or {}
    values = {
        "OS": keys.get("os", ""),
        "kernel": keys.get("kernel", ""),
        "driver": keys.get("driver", ""),
        "CUDA": keys.get("cuda", ""),
        "NCCL": str(py.get("nccl_version") or ""),
        "GPUs": ", ".join(f"{n} × {name}" for name, n in counted.items()) or "none",
        "NIC": nic_cell,
        "MTU": keys.get("mtu", ""),
        "InfiniBand": infiniband.summary(ib),
        "Docker": keys.get("docker", ""),
        "Python": str(py.get("python") or ""),
        "torch": str(py.get("torch") or ""),
        "ray": keys.get("ray", ""),
    }
    return NodeFacts({k: v or "-" for k, v in values.items()})


def read_facts(remote: Remote, head_private: str, s: PythonChoice, ray: Optional[str] = None) -> str:
    """SCRIPT's output; `ray`: Ray's version where the run has read it already (then SCRIPT does not)."""
    raypy = f"{s.venv}/bin/python" if ray is None else ""
    text = remote.script(SCRIPT, head_private, raypy, "20", remote.facts.flag(infiniband.PORTS), timeout=150,
                         warn=True).stdout
    return text if ray is None else text + f"ray={ray}\n"


def python_view(found: Optional[TrainPython]) -> Optional[Dict[str, object]]:
    """What the all-reduce step already read of the training python, in the probe's terms."""
    if found is None:
        return None
    return {"python": found.python, "torch": found.torch, "nccl_version": found.nccl_version}


def read_node(remote: Remote, head_private: str, s: PythonChoice) -> NodeFacts:
    """Two round trips: the facts script, then the training python's torch."""
    text = read_facts(remote, head_private, s)
    probe = probe_pythons(remote, s)
    found = parse_probe(probe)
    if found is None:
        # No torch anywhere: the Python version of the first interpreter that answered still counts.
        match = re.search(r'"python": "([^"]+)"', probe)
        found = {"python": match.group(1)} if match else None
    return NodeFacts(parse(text, found).values)


# --------------------------------------------------------------------------- folding


def driver_major(version: str) -> str:
    return version.split(".", 1)[0] if version and version != "-" else "-"


@dataclass(frozen=True)
class FoldedRow:
    fact: str
    value: str
    nodes: str
    odd: bool  # held by fewer nodes than the most common value


def fold(facts: Mapping[str, NodeFacts]) -> Tuple[List[FoldedRow], Dict[str, List[str]]]:
    """Rows of (fact, value, nodes) and, per must-match fact that differs, the nodes out of step.

    Ties go to the value seen first in inventory order (the head first), as ray.versions does.
    """
    rows: List[FoldedRow] = []
    mismatched: Dict[str, List[str]] = {}
    order = list(facts)
    for fact in FACTS:
        by_value, common = _group({name: facts[name].values.get(fact, "-") for name in order})
        for value, names in by_value.items():
            odd = len(by_value) > 1 and value != common and fact not in VARIES
            label = "all" if len(by_value) == 1 and len(order) > 1 else fold_names(names)
            rows.append(FoldedRow(fact, value, f"{label} ({len(names)})", odd))
        checked = "driver major" if fact == "driver" else fact
        if checked in MUST_MATCH:
            groups, top = _group({name: driver_major(facts[name].values.get(fact, "-")) if fact == "driver"
                                  else facts[name].values.get(fact, "-") for name in order})
            if len(groups) > 1:
                mismatched[checked] = [n for v, names in groups.items() if v != top for n in names]
    return rows, mismatched


def _group(values: Mapping[str, str]) -> Tuple["OrderedDict[str, List[str]]", str]:
    """Nodes by value, in first-seen order, and the most common value (the first on a tie)."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for name, value in values.items():
        groups.setdefault(value, []).append(name)
    return groups, max(groups, key=lambda v: len(groups[v]))


def table_rows(rows: Sequence[FoldedRow]) -> List[Tuple[str, str, str]]:
    """For host_table: the fact named once per group, an odd value starred."""
    out = []
    last = None
    for r in rows:
        out.append((r.fact if r.fact != last else "", f"*{r.value}*" if r.odd else r.value, r.nodes))
        last = r.fact
    return out


# --------------------------------------------------------------------------- in bootstrap (carried by preflight)


@dataclass(frozen=True)
class FleetSettings:
    head: str  # the head's private address (the fleet's NIC is the one toward it)
    python: PythonChoice = PythonChoice()


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> FleetSettings:
    return FleetSettings(inv.head.private or "", read_choice(config, inv, cli))


@dataclass(frozen=True)
class Checked:
    """The verify phase on one node: SCRIPT's output, and the node's InfiniBand ports (the run's one read)."""

    facts: str
    ib: infiniband.IbFacts


def ray_version(remote: Remote, s: PythonChoice) -> Optional[str]:
    """Ray's version in its venv, from the run's one read of it (ray's own check takes it too); None: the
    fleet's script reads it, as it did."""
    try:
        return (installed_versions(remote, s.venv, ["ray"]) or {}).get("ray") or ""
    except (ValueError, IndexError):  # a venv python that answers no JSON
        return None


def check(remote: Remote, s: FleetSettings) -> Checked:
    ib_known = remote.facts.flag(infiniband.PORTS)
    text = read_facts(remote, s.head, s.python, ray_version(remote, s.python))
    return Checked(text, remote.facts.kept(infiniband.PORTS, ib_known, lambda: infiniband.parse_sysfs(text), remote))


#: The all-reduce step's name: its value on a node holds the training python it found (`python`).
ALLREDUCE = "allreduce"


def fleet_facts(found: Carried) -> Dict[str, NodeFacts]:
    """Per verified node, the fleet's facts (the training python as the all-reduce step found it)."""
    out = {}
    for n in found.run.verified():
        if not found.was_checked(n):
            continue
        ready = found.run.value(ALLREDUCE, n)
        checked = found.checked(n)
        out[n.name] = parse(checked.facts, python_view(getattr(ready, "python", None)), checked.ib)
    return out


def _report(found: Carried, s: FleetSettings) -> Tuple[List[str], List[str]]:
    facts = fleet_facts(found)
    if not facts:
        return [], []
    _, mismatched = fold(facts)
    if mismatched:
        return (["Fleet: " + "; ".join(f"{k} differs on {', '.join(v)}" for k, v in mismatched.items()) + " (inv fleet)"],
                [f"fleet: {k} differs on {', '.join(v)}" for k, v in mismatched.items()])
    return [f"Fleet: {', '.join(MUST_MATCH)} match on {len(facts)}/{len(found.run.verified())} nodes"], []


def _data(found: Carried, s: FleetSettings) -> Any:
    facts = fleet_facts(found)
    return {"facts": {name: dict(f.values) for name, f in facts.items()}, "mismatched": fold(facts)[1] if facts else {}}


CHECK = Check("fleet", settings=read, check=check, report=_report, data=_data)
