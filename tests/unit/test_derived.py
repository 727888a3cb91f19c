"""What comes from each step's declaration, and what adding a step costs (issue 34, the step contract).

- The report's columns stand in chain order, and within a step in the order it declares them:
  no hand-set numbers to keep unique across modules.
- The task modules' help (--skip's names, the defaults and settings options name) is
  fabfile/help_texts.py, generated from the declarations: it must be what they render now.
- A new step is one module in ops/ and one entry in CHAIN, then `scripts/generate`: in a copy of
  the package, tests/new_step/motd.py added so is in --skip's names, has its report
  column where its chain entry stands, is taken away by reset, is in the inventory's schema and
  checked there, and is in docs/settings.md; no other file differs.
"""

from __future__ import annotations

import ast
import difflib
import filecmp
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List

import jsonschema
import pytest
from invoke import Config

from fabfile import help_texts
from fabfile.core import declared, helptext
from fabfile.core.chain import columns_of
from fabfile.core.errors import InputError
from fabfile.core.inventory import Node, parse_inventory
from fabfile.ops import scripts
from fabfile.ops.chain import CHAIN
from fakes import FakeRemote
from helpers import REPO

#: The report's step columns with the real chain: preflight's two, then each step's in chain order.
TABLE = [("nic", "NIC"), ("gpus", "GPUs"), ("ulimit", "ulimit"), ("docker", "Docker"), ("images", "Images"),
         ("containers", "Containers"), ("mesh", "SSH mesh"), ("nfs", "Storage"), ("ray", "Ray")]


def test_the_report_columns_stand_in_chain_order_and_as_each_step_declares_them():
    assert [(c.key, c.title) for _, c in columns_of(CHAIN)] == TABLE
    assert [c.key for _, c in columns_of(CHAIN)] == [c.key for s in CHAIN for c in s.columns]


def test_your_steps_column_stands_where_the_first_of_your_steps_does(tmp_path):
    text = ("nodes:\n  - {name: node1, public: 203.0.113.1, private: 10.0.0.1}\n"
            "steps:\n  - {name: warm, command: 'true', after: docker}\n  - {name: last, command: 'true'}\n")
    chain = scripts.with_user_steps(CHAIN, parse_inventory(text, str(tmp_path / "hosts.yaml")))
    owners, columns = zip(*columns_of(chain))
    keys = [c.key for c in columns]
    assert keys == ["nic", "gpus", "ulimit", "docker", "steps", "images", "containers", "mesh", "nfs", "ray"]
    assert owners[keys.index("steps")] == ["warm", "last"]  # one column for all of them


def test_the_help_texts_are_what_the_declarations_render():
    path = REPO / "fabfile" / "help_texts.py"
    current = path.read_text()
    assert current == helptext.module_text(current, CHAIN, declared.declared()), "regenerate: scripts/generate"
    assert help_texts.OPTIONAL == tuple(s.name for s in CHAIN if s.optional)


def _option_calls(path: Path) -> List[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr == "option"
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "help_texts"]


def test_every_option_named_after_a_setting_names_a_declared_one():
    """A misspelt name would only say UNKNOWN in its help: held here, where the reader sees which."""
    names = {s.name for s in declared.declared()}
    calls = {(p.name, c.args[0].value) for p in sorted((REPO / "fabfile").glob("*.py")) for c in _option_calls(p)}
    assert len(calls) > 20
    assert {(module, name) for module, name in calls if name not in names} == set()
    assert help_texts.option("no_such_setting", "words") == f"words (no_such_setting: {help_texts.UNKNOWN})"


def test_an_option_says_its_settings_default_and_where_else_it_is_given():
    assert help_texts.option("nofile", "open files per process") == "open files per process (default 65536; var nofile)"
    assert help_texts.option("workers", "hosts asked at once") == "hosts asked at once (default 32; config workers)"
    # A default that is a phrase gets a colon; none is not stated.
    assert help_texts.option("ray_dashboard_host", "x") == "x (default: the head's private address; var ray_dashboard_host)"
    assert help_texts.option("pip_proxy") == "an HTTP proxy for the package index (var pip_proxy)"
    assert help_texts.option("nic", "n") == "n (default: found per node; node var nic)"


# --------------------------------------------------------------------------- adding a step

NEW_STEP = REPO / "tests" / "new_step" / "motd.py"
#: The copy's package, imported in this process beside the real one (its registries are its own).
COPY = "stepcopy"
NODES = (Node("node1", "198.18.0.11", private="198.19.0.11", role="head", nid=0),
         Node("node2", "198.18.0.12", private="198.19.0.12", nid=1))


def _files(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _changed(root: Path) -> List[str]:
    """Files of the copy's package that differ from the repository's, or that only one of them has."""
    ours, theirs = _files(root / "fabfile"), _files(REPO / "fabfile")
    both = sorted(set(ours) & set(theirs))
    return sorted(set(ours) ^ set(theirs)) + [f for f in both
                                              if not filecmp.cmp(root / "fabfile" / f, REPO / "fabfile" / f, shallow=False)]


@pytest.fixture
def with_motd(tmp_path, monkeypatch):
    """A copy of the repository's package with the new step added as docs/development.md says, and generated."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "fabfile", root / "fabfile", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "templates").symlink_to(REPO / "templates")
    (root / "docs").mkdir()
    shutil.copy(REPO / "docs" / "settings.md", root / "docs")
    (root / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "generate", root / "scripts")
    # 1. the module; 2. its entry in the chain (the import, and its place: after tools).
    shutil.copy(NEW_STEP, root / "fabfile" / "ops" / "motd.py")
    chain = root / "fabfile" / "ops" / "chain.py"
    text = chain.read_text()
    added = text.replace(" mesh, netenv,", " mesh, motd, netenv,", 1).replace("    tools.STEP,\n", "    tools.STEP,\n    motd.STEP,\n", 1)
    assert added.count("motd") == 2
    chain.write_text(added)
    # 3. what is generated from the declarations, by the repository's own command.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPUFAB_INVENTORY")}
    done = subprocess.run([str(root / "scripts" / "generate")], cwd=str(root), capture_output=True, text=True,
                          env={**env, "PYTHON": sys.executable}, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    # The copy as a package of its own name, in this process: `fabfile` is the repository's.
    (root / COPY).symlink_to(root / "fabfile")
    monkeypatch.syspath_prepend(str(root))
    for name in ("_load_yaml", "_load_yml"):  # the package's import sets Invoke's config loaders
        monkeypatch.setattr(Config, name, getattr(Config, name))
    try:
        yield root, (lambda module: importlib.import_module(f"{COPY}.{module}"))
    finally:
        for name in [m for m in sys.modules if m == COPY or m.startswith(COPY + ".")]:
            del sys.modules[name]


def test_a_new_step_is_one_module_and_one_chain_entry_and_nothing_else_changes(with_motd):
    root, copy = with_motd
    # Nothing else had to change: the module, the chain and what scripts/generate writes.
    assert _changed(root) == ["ops/motd.py", "help_texts.py", "ops/chain.py"]
    diff = [line for line in difflib.unified_diff((REPO / "fabfile/ops/chain.py").read_text().splitlines(),
                                                  (root / "fabfile/ops/chain.py").read_text().splitlines(), n=0, lineterm="")
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(diff) == 3 and diff[-1] == "+    motd.STEP,"  # the import line, and the entry
    for generated, marker in (("fabfile/help_texts.py", helptext.MARKER),
                              ("docs/settings.md", "<!-- generated from the declarations: inv inventory.settings -->\n")):
        before, after = (REPO / generated).read_text(), (root / generated).read_text()
        assert after != before and after.split(marker)[0] == before.split(marker)[0], generated

    chain, motd = copy("ops.chain").CHAIN, copy("ops.motd")
    # --skip and --only take it, and bootstrap's help names it where the chain has it.
    bootstrap = copy("bootstrap").bootstrap
    assert "tools, motd, allreduce, verify, or one of the inventory's steps:)" in bootstrap.help["skip"]
    assert "ray, tools, motd, allreduce, your steps, verify" in bootstrap.__doc__
    select = copy("core.chain").select_steps
    assert "motd" not in [s.name for s in select(chain, "motd", None, None)]
    assert [s.name for s in select(chain, None, "motd", None)] == ["preflight", "motd"]

    # The report: its column where its chain entry stands (after Ray's: tools has none), its cell.
    Run, Progress, HostResult = copy("core.chain").Run, copy("core.progress").Progress, copy("core.fanout").HostResult
    session = SimpleNamespace(connection=lambda n: SimpleNamespace(user="root"), sudo_password=lambda: None, step_timeout=30)
    run = Run(session, copy("core.inventory").Inventory(NODES), NODES, [motd.STEP], {}, Progress(out=io.StringIO()),
              False, None)
    run.record("motd", [HostResult(NODES[0], "changed", value="cluster A"), HostResult(NODES[1], "ok", value="cluster A")])
    report = copy("core.reporting").build_report(run, chain, "hosts.yaml", [], None)
    steps_columns = report.columns[5:-1]
    assert steps_columns == [*TABLE, ("motd", "MOTD")]
    assert [row["motd"] for row in report.nodes] == ["set", "set"] and report.nodes[0]["docker"] == "skipped"

    # Reset takes its file away (and the directory it made, left empty), as any step's.
    reset = copy("ops.reset")
    assert motd.MOTD_FILE in copy("core.declared").owned().files
    plan = reset.plan(reset.parse_facts(f"file {motd.MOTD_FILE}\nparent /etc/motd.d 90-gpufab\n"))
    assert plan == [(f"removed {motd.MOTD_FILE}", f"rm -f -- {motd.MOTD_FILE}"),
                    ("removed the empty /etc/motd.d", "rmdir -- /etc/motd.d")]

    # Its setting: read from the inventory, checked there, in the schema for editors and in the reference.
    hosts = "nodes:\n  - {name: node1, public: 198.18.0.11}\nvars:\n  motd: cluster A, ask ops\n"
    assert copy("core.inventory").parse_inventory(hosts, "hosts.yaml").vars == {"motd": "cluster A, ask ops"}
    with pytest.raises(InputError, match="unknown setting 'motd'"):  # the repository's own package: no such step
        parse_inventory(hosts, "hosts.yaml")
    with pytest.raises(copy("core.errors").InputError, match=r"hosts.yaml:4: unknown setting 'motd_text' .*'motd'"):
        copy("core.inventory").parse_inventory(hosts.replace("motd:", "motd_text:"), "hosts.yaml")
    schema = copy("core.schema").inventory_schema()
    jsonschema.validate({"nodes": [{"name": "node1", "public": "198.18.0.11"}], "vars": {"motd": "cluster A"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"nodes": [{"name": "node1", "public": "198.18.0.11"}], "vars": {"motd": "a; reboot"}}, schema)
    row = "| `motd` | vars, config | text | none | a line every login on the nodes shows | `ops.motd` |"
    assert row in (root / "docs" / "settings.md").read_text().splitlines()

    # And it is a step like the others: first run writes its file, the second finds nothing to do.
    remote = FakeRemote()
    first = motd.apply(remote, motd.MotdSettings("cluster A"))
    assert first.changes and remote.files[motd.MOTD_FILE].content == "cluster A\n"
    assert motd.apply(remote, motd.MotdSettings("cluster A")).changes == []
    assert motd.check(remote, motd.MotdSettings("cluster A")).value == "cluster A"
    assert json.loads(report.to_json())["columns"][-2] == ["motd", "MOTD"]


def test_the_step_docs_development_md_shows_is_true_to_its_module():
    """Every code line of "Adding a step" is a line of ops/limits.py or ops/chain.py, as written there."""
    page = (REPO / "docs" / "development.md").read_text()
    section = page.split("## Adding a step", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert blocks, "no code in Adding a step"
    source = {line.strip() for f in ("limits.py", "chain.py") for line in (REPO / "fabfile" / "ops" / f).read_text().splitlines()}
    shown = [line.strip() for b in blocks for line in b.splitlines() if line.strip() and line.strip() != "..."]
    assert [line for line in shown if line not in source] == []
