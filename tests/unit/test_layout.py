"""The shape of the package, read from its source with `ast` so that it stays that way.

core knows no step; ops modules know no task; task modules import no other
task module; nothing imports in a circle (function-level imports count too).
"""

import ast
from pathlib import Path
from typing import Dict, Set

from fabfile.ops.chain import CHAIN
from sources import syntax_nodes

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fabfile"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path) -> Set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in syntax_nodes(path):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fabfile")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fabfile"):
                continue
            # `from . import docker` names a module, not an attribute of the package.
            submodules = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(target)
    return {m for m in found if m in MODULES and m != name}


GRAPH: Dict[str, Set[str]] = {name: imports_of(name, path) for name, path in MODULES.items()}
TASK_MODULES = {name for name, path in MODULES.items() if path.parent == PACKAGE and path.name != "__init__.py"}


def test_no_import_circle():
    done: Set[str] = set()

    def visit(name: str, stack: list) -> None:
        if name in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(name):] + [name]))
        if name in done:
            return
        for dep in sorted(GRAPH[name] - {"fabfile"}):
            visit(dep, stack + [name])
        done.add(name)

    for name in sorted(MODULES):
        visit(name, [])


def test_task_modules_import_no_other_task_module():
    offending = {name: sorted(GRAPH[name] & TASK_MODULES) for name in TASK_MODULES if GRAPH[name] & TASK_MODULES}
    assert offending == {}


def test_core_knows_no_step_and_ops_know_no_task():
    for name, deps in GRAPH.items():
        if name.startswith("fabfile.core"):
            assert not {d for d in deps if not d.startswith("fabfile.core")}, (name, deps)
        if name.startswith("fabfile.ops"):
            assert not deps & TASK_MODULES and not any(d.startswith("fabfile.lab") for d in deps), (name, deps)


def test_the_bootstrap_task_module_stays_thin():
    assert len((PACKAGE / "bootstrap.py").read_text().splitlines()) < 200


def test_the_chain_has_unique_names_preflight_first_and_verify_last():
    names = [s.name for s in CHAIN]
    aliases = [a for s in CHAIN for a in s.aliases]
    assert len(set(names + aliases)) == len(names + aliases)
    assert names[0] == "preflight" and names[-1] == "verify"
    assert [s.name for s in CHAIN if not s.optional] == ["preflight"]


def test_results_travel_typed_not_through_shared_dicts():
    """Issue 34: results travelled as HostResult.data["changes"|"notes"|"blocked_by"] and Run.state[...]
    (allreduce stored a string or a GroupResult there and branched on isinstance). Now HostResult has
    typed fields, and a step keeps a cluster-wide finding with Run.keep and reads it back typed (Run.kept)."""
    import dataclasses
    from fabfile.core.fanout import HostResult
    assert "data" not in {f.name for f in dataclasses.fields(HostResult)}
    offending = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("state", "_kept") and \
                    isinstance(node.value, ast.Name) and node.value.id == "run":
                offending.append(f"{name}:{node.lineno}")
    assert offending == []


def test_ops_see_the_run_through_its_typed_context_only():
    """Issue 34: 57 `run: Any` parameters reached into 24 attributes of Run. Now each is a RunContext
    (core/context.py), and a step uses of the run only what that Protocol names; Run provides all of it."""
    import inspect
    from fabfile.core.chain import Run
    from fabfile.core.context import RunContext
    members = {n for n in dir(RunContext) if not n.startswith("_")} | set(RunContext.__annotations__)
    used, untyped = set(), []
    for name, path in MODULES.items():
        if not name.startswith("fabfile.ops"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arg) and node.arg == "run" and node.annotation is not None and \
                    ast.unparse(node.annotation) in ("Any", "'Any'"):
                untyped.append(f"{name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "run":
                used.add(node.attr)
    assert untyped == []
    assert used - members == set(), "add these to core/context.RunContext first"
    init = "".join(inspect.getsource(c.__init__) for c in Run.__mro__ if "__init__" in vars(c) and c is not object)
    provided = {n for n in members if hasattr(Run, n) or f"self.{n} " in init or f"self.{n}:" in init}
    assert provided == members
