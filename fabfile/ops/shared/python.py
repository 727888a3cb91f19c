"""The training python: which interpreter a node trains with, and what its torch can do.

The all-reduce step runs with it, the GPU doctor asks its torch what CUDA it sees, the fleet compares
its versions across nodes: all three find it the same way (`--python`, the node's `train_python`,
the inventory's, else Ray's venv, then python3) and read the same probe.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Protocol, Tuple

from ...core import programs
from ...core.cluster import setting
from ...core.errors import InputError
from ...core.inventory import Node
from ...core.remote import Remote


class Choice(Protocol):
    """Where the training python is named: the all-reduce's settings, or a `PythonChoice`."""

    @property
    def python(self) -> Optional[str]: ...

    @property
    def default_python(self) -> Optional[str]: ...

    @property
    def venv(self) -> str: ...


#: Ray's venv, where gpufab installs torch's neighbours: the training python unless one is named.
DEFAULT_VENV = "/opt/gpufab/venv"


PYTHON_MARK = "GPUFAB-PYTHON "
#: Which of the candidate pythons ($@) imports torch; one JSON line each, stops at the first.
PROBE = programs.text("torch-probe.py")
FIND_PYTHON_SCRIPT = programs.text("find-python.sh")


def check_python(value: Any, what: str = "--python") -> Optional[str]:
    if value is None or value == "":
        return None
    text = str(value)
    if not re.match(r"^[A-Za-z0-9_./+-]+$", text):
        raise InputError(f"invalid python {text!r}: a path or command name", path=what)
    return text


@dataclass(frozen=True)
class TrainPython:
    """The interpreter a node trains with, and what its torch can do."""

    path: str
    torch: str
    gloo: bool
    nccl: bool
    gpus: int
    #: Its Python and NCCL versions, for the fleet's comparison.
    python: str = ""
    nccl_version: str = ""


def candidates(node: Node, s: Choice) -> Tuple[List[str], bool]:
    """(pythons to try in order, whether the user named them): --python > the node's train_python >
    the inventory's > Ray's venv, then python3."""
    named = s.python or check_python(node.vars.get("train_python"), f"{node.name}: train_python") or s.default_python
    if named:
        return [named], True
    return [f"{s.venv}/bin/python", "python3"], False


def read_probes(text: str) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """FIND_PYTHON_SCRIPT's output -> (the first python with torch as plain data with its `path`,
    every existing python tried)."""
    tried: List[str] = []
    current = ""
    for line in text.splitlines():
        if line.startswith("python="):
            current = line[len("python="):].strip()
            tried.append(current)
        elif line.startswith(PYTHON_MARK) and current:
            try:
                found = json.loads(line[len(PYTHON_MARK):])
            except ValueError:
                continue
            if isinstance(found, dict) and "torch" in found:
                return {**found, "path": current}, tried
    return None, tried


def parse_pythons(text: str) -> Tuple[Optional[TrainPython], List[str]]:
    """FIND_PYTHON_SCRIPT's output -> (the first python with torch, every existing python tried)."""
    found, tried = read_probes(text)
    if found is None:
        return None, tried
    return TrainPython(found["path"], str(found["torch"]), bool(found.get("gloo")), bool(found.get("nccl")),
                       int(found.get("gpus") or 0), str(found.get("python") or ""),
                       str(found.get("nccl_version") or "")), tried


def parse_probe(text: str) -> Optional[Dict[str, Any]]:
    """The first python with torch, as plain data (the doctor and the fleet read more of it)."""
    return read_probes(text)[0]


def probe_pythons(remote: Remote, s: Choice) -> str:
    """The all-reduce's probe of the node's candidate training pythons, as printed."""
    pythons, _ = candidates(remote.node, s)
    return remote.script(FIND_PYTHON_SCRIPT, PROBE, *pythons, timeout=150, warn=True).stdout


@dataclass(frozen=True)
class PythonChoice:
    """The training python as named (for the doctor and the fleet, which run nothing with it but its probe)."""

    #: `--python`: the interpreter on every node, over any node's own train_python.
    python: Optional[str] = None
    #: The inventory's (or config's) train_python, for nodes that name none themselves.
    default_python: Optional[str] = None
    venv: str = DEFAULT_VENV


def read_choice(config: Any, inv: Any, cli: Mapping[str, Any]) -> PythonChoice:
    """`--python`, the inventory's `train_python` and Ray's venv, as the all-reduce reads them."""
    return PythonChoice(
        python=check_python(cli.get("train_python"), "--python"),
        default_python=check_python(setting(config, inv, "train_python"), "train_python"),
        venv=str(setting(config, inv, "ray_venv", None, DEFAULT_VENV)),
    )
