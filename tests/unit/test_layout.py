"""The shape of the package, read from its source with `ast` so that it stays that way.

core knows no step; ops modules know no task; task modules import no other
task module; nothing imports in a circle (function-level imports count too);
steps are siblings: a step imports core and the shared layer (ops/shared),
never another step, and the shared layer imports no step.
"""

import ast
import re
from pathlib import Path
from typing import Dict, Optional, Set

import pytest

from fabfile.core import programs
from fabfile.core.files import TEMPLATES
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
#: The task modules' help texts, generated from the declarations (core/helptext.py): data, not a task.
HELP_TEXTS = "fabfile.help_texts"
TASK_MODULES = {name for name, path in MODULES.items()
                if path.parent == PACKAGE and path.name != "__init__.py" and name != HELP_TEXTS}


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


def test_the_help_texts_import_nothing():
    """Every task module reads them at import: `--list` would load whatever they loaded."""
    assert [n for n in syntax_nodes(MODULES[HELP_TEXTS]) if isinstance(n, (ast.Import, ast.ImportFrom))] == []


def test_core_knows_no_step_and_ops_know_no_task():
    for name, deps in GRAPH.items():
        if name.startswith("fabfile.core"):
            assert not {d for d in deps if not d.startswith("fabfile.core")}, (name, deps)
        if name.startswith("fabfile.ops"):
            assert not deps & TASK_MODULES and not any(d.startswith("fabfile.lab") for d in deps), (name, deps)


#: The layer the steps share (facts, paths, helpers; no step), and the one ops module that lists every step.
SHARED = "fabfile.ops.shared"
CHAIN_MODULE = "fabfile.ops.chain"


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def step_of(name: str) -> str:
    """The step (or check) a module is part of: `fabfile.ops.storage.nfs` -> `fabfile.ops.storage`, a step's package."""
    return ".".join(name.split(".")[:3])


def sibling_imports(graph: Dict[str, Set[str]]) -> Dict[str, list]:
    """Per ops module, what it imports that it may not: a shared module anything but core and the shared
    layer; any other ops module another step's (its own package's modules and the shared layer are its own)."""
    offending = {}
    for name, deps in graph.items():
        if not name.startswith("fabfile.ops.") or name == CHAIN_MODULE:
            continue
        if _within(name, SHARED):
            bad = {d for d in deps if not _within(d, "fabfile.core") and not _within(d, SHARED)}
        else:
            bad = {d for d in deps if _within(d, "fabfile.ops") and not _within(d, SHARED) and step_of(d) != step_of(name)}
        if bad:
            offending[name] = sorted(bad)
    return offending


def test_steps_are_siblings_importing_core_and_the_shared_layer_never_each_other():
    """Issue 34: ops modules imported each other as a stack (reset all of them, preflight the doctor,
    the fleet, allreduce and ray). Only ops/chain.py, the chain's list, imports the steps now."""
    assert sibling_imports(GRAPH) == {}


def test_the_sibling_rule_catches_a_step_importing_a_step_and_a_shared_module_importing_one():
    graph = {
        "fabfile.ops.fetch": {"fabfile.core.chain", "fabfile.ops.shared.ports", "fabfile.ops.netenv"},
        "fabfile.ops.storage.sshfs": {"fabfile.ops.storage.nfs", "fabfile.ops.shared.share"},
        "fabfile.ops.shared.nic": {"fabfile.ops.shared.infiniband", "fabfile.ops.netenv"},
        "fabfile.ops.chain": {"fabfile.ops.fetch", "fabfile.ops.netenv"},
        "fabfile.ops.reset": {"fabfile.core.declared", "fabfile.ops.docker.nvidia_toolkit"},
    }
    assert sibling_imports(graph) == {"fabfile.ops.fetch": ["fabfile.ops.netenv"],
                                      "fabfile.ops.shared.nic": ["fabfile.ops.netenv"],
                                      "fabfile.ops.reset": ["fabfile.ops.docker.nvidia_toolkit"]}


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


# --------------------------------------------------------------------------- remote programs are files

#: A line that only shell would hold (a keyword, `$(`, `$1`, `"$x"`, `&&`/`||`, a redirection, a pipe into a text tool).
SHELL_LINE = re.compile(r"^\s*(set -[euxo]|fi\b|done\b|esac\b|then\b|else\b)|; (then|do)\b|\b(then|do)\s*$|\$\(|\$[1-9@#]"
                        r"|\"\$\w|^\s*(if|for|while|case) |\|\||&&|[12]?>/dev/null|\| *(grep|sed|awk|cut|tr|head|tail)\b")
#: A line that only a Python program would hold.
PYTHON_LINE = re.compile(r"^\s*(import \w|from [\w.]+ import|def \w+\(|print\()")

def _string_text(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def programs_in_strings(path: Path) -> Dict[str, str]:
    """`path:holder` -> `shell`/`python` for each multi-line string literal (docstrings aside) that is a program."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    docstrings = {n.body[0].value for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    found: Dict[str, str] = {}
    for node in ast.walk(tree):
        text = _string_text(node)
        if text is None or node in docstrings or isinstance(parents.get(node), ast.JoinedStr) or "\n" not in text.strip():
            continue
        lines = text.splitlines()
        kind = ("python" if any(PYTHON_LINE.search(line) for line in lines)
                else "shell" if any(SHELL_LINE.search(line) for line in lines) else None)
        if kind is None:
            continue
        holder, up = None, node
        while up in parents:
            up = parents[up]
            if isinstance(up, ast.Assign) and holder is None:
                holder = ",".join(getattr(t, "id", getattr(t, "attr", "?")) for t in up.targets)
            if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)):
                holder = holder or up.name
                break
        found.setdefault(f"{path.relative_to(ROOT).as_posix()}:{holder or '?'}", kind)
    return found


def test_no_multi_line_program_in_a_python_string():
    """Issue 34: programs lived in Python strings. gpufab's are in templates/remote/ (shell on lib.sh), the
    lab's in templates/lab/ (its units, the base's setup, the GPU host's python wrapper); none may come back."""
    found: Dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found.update(programs_in_strings(path))
    assert found == {}, f"programs in Python strings: put them in templates/remote/ (the lab's in templates/lab/): {found}"


def test_the_program_finder_finds_shell_and_python(tmp_path, monkeypatch):
    sample = tmp_path / "sample.py"
    sample.write_text('"""A docstring\nwith | two lines && more."""\nA = r"""\nif [ -f "$1" ]; then\n  echo yes\nfi\n"""\n'
                      'B = """\nimport sys\nprint(sys.argv)\n"""\nC = """\nplain text\non two lines\n"""\n'
                      'def f():\n    return f"""\nx=$(cat {A})\ny=1\n"""\n')
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # names relative to the sample's directory
    found = programs_in_strings(sample)
    assert found == {"sample.py:A": "shell", "sample.py:B": "python", "sample.py:f": "shell"}


#: Templates no unit test can run here, and why; each is still compiled or checked below.
NOT_RUN_HERE = {
    "allreduce/allreduce.py": "needs torch and GPUs (or gloo peers): compiled here, run by tests/lab/test_allreduce.py",
}


def inlined(function: str, started: str) -> bool:
    """A one-line library function run as `programs.inline` splices it into a job's command line."""
    try:
        return programs.inline(function) in started
    except ValueError:
        return False


def test_every_template_is_rendered_or_executed_by_a_unit_test(request):
    """Runs last (tests/unit/conftest.py): the templates the whole unit run rendered or started."""
    unit = {p.name for p in (ROOT / "tests" / "unit").glob("test_*.py")}
    ran = {Path(str(item.fspath)).name for item in request.session.items}
    if unit - ran:
        pytest.skip("meaningful only when the whole of tests/unit runs")
    registry = next(p for p in request.config.pluginmanager.get_plugins() if hasattr(p, "STARTED"))
    started = "\0".join(a if isinstance(a, str) else a.decode(errors="replace") for a in registry.STARTED)
    functions = dict(programs.library())
    missing = []
    for path in sorted(p for p in TEMPLATES.rglob("*") if p.is_file()):
        name = path.relative_to(TEMPLATES).as_posix()
        if name in registry.RENDERED or str(path) in started:
            continue
        if name == f"remote/{programs.LIBRARY}":
            unrun = [f for f, body in functions.items() if body not in started and not inlined(f, started)]
            if unrun:
                missing.append(f"{name} ({', '.join(unrun)})")
            continue
        body = programs.source(path.name) if name.startswith("remote/") else path.read_text()
        if body.strip() and body in started:
            continue
        if name in NOT_RUN_HERE:
            compile(body, name, "exec")
            continue
        missing.append(name)
    assert missing == [], f"not rendered nor run by any unit test: {missing}"
