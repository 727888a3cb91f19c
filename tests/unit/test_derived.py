"""What comes from each step's declaration (issue 34, the step contract).

- The report's columns stand in chain order, and within a step in the order it declares them:
  no hand-set numbers to keep unique across modules.
- The task modules' help (--skip's names, the defaults and settings options name) is
  fabfile/help_texts.py, generated from the declarations: it must be what they render now.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

from fabfile import help_texts
from fabfile.core import declared, helptext
from fabfile.core.chain import columns_of
from fabfile.core.inventory import parse_inventory
from fabfile.ops import scripts
from fabfile.ops.chain import CHAIN
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
