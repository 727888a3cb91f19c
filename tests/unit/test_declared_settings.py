"""Declared settings: a key nothing reads is an error with the nearest known name (issue 34, first item).

`vars: {ray_verison: 2.9.0}` was accepted and Ray stayed on its default. The
declarations are checked against the code that reads settings (every name read
is declared, every declared name is read), and the CLI refuses a misspelt key
in vars, a node's vars or a config file, exit 2, before any host is touched.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fabfile.core import declared
from fabfile.core.errors import InputError
from fabfile.core.inventory import parse_inventory

from helpers import REPO
from inprocess import run_cli
from sources import syntax_nodes

NODE = "nodes:\n  - name: a\n    public: 198.18.0.11\n    private: 198.19.0.11\n"
NAMES = {s.name: s for s in declared.declared()}


def names_read_by_the_code() -> set:
    """Setting names the code reads: `setting(config, inv, "x")`, `gpufab_setting(config, "x")`, a step's
    `get("x")` (its reader over `setting`), and `node.vars.get("x")` / `inv.vars.get("x")`."""
    found = set()
    for path in (REPO / "fabfile").rglob("*.py"):
        if "lab" in path.relative_to(REPO / "fabfile").parts:
            continue
        for node in syntax_nodes(path):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func, args = node.func, node.args
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            arg = None
            if name == "setting" and len(args) >= 3:
                arg = args[2]
            elif name == "gpufab_setting" and len(args) >= 2:
                arg = args[1]
            elif name == "get" and isinstance(func, ast.Name):
                arg = args[0]
            elif name == "get" and isinstance(func.value, ast.Attribute) and func.value.attr == "vars":
                arg = args[0]
            elif isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Attribute) \
                    and func.value.attr == "vars":
                arg = args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id.endswith("_VAR"):
                found.add(arg.id)
    return found


def test_every_setting_the_code_reads_is_declared_and_every_declared_one_is_read():
    from fabfile.core.chain import SKIP_VAR
    from fabfile.core.connection import PASSWORD_FILE_VAR
    read = names_read_by_the_code()
    read = {SKIP_VAR if n == "SKIP_VAR" else PASSWORD_FILE_VAR if n == "PASSWORD_FILE_VAR" else n for n in read}
    # The doctor's `get("Product Name")` reads nvidia-smi -q, not a setting.
    read = {n for n in read if " " not in n and n[0].islower()}
    assert sorted(read - set(NAMES)) == [], "read but not declared"
    assert sorted(set(NAMES) - read) == [], "declared but read nowhere"


def test_each_setting_has_one_owner_a_doc_and_a_place():
    for s in NAMES.values():
        assert s.owner and s.doc and s.where and set(s.where) <= {declared.CLUSTER, declared.NODE, declared.CONFIG}
    with pytest.raises(RuntimeError, match="declared by ops.ray and by elsewhere"):
        declared.declare("elsewhere", declared.Setting("ray_version", "another doc"))


@pytest.mark.parametrize("text, message", [
    ("vars:\n  ray_verison: 2.9.0\n", r"hosts.yaml:6: unknown setting 'ray_verison' in the inventory's vars "
                                       r"\(did you mean 'ray_version'\?\)"),
    ("vars:\n  storag: nfs\n", r"hosts.yaml:6: unknown setting 'storag' .*\(did you mean 'storage'\?\)"),
    ("vars:\n  privat_ranges: [10.0.0.0/8]\n", r"\(did you mean 'private_ranges'\?\)"),
    ("vars:\n  zzz: 1\n", r"unknown setting 'zzz' in the inventory's vars \(docs/settings.md lists them all\)"),
    ("    vars:\n      nick: eth1\n", r"hosts.yaml:6: unknown setting 'nick' in a node's vars \(did you mean 'nic'\?\)"),
    ("    vars:\n      nofile: 1024\n", r"hosts.yaml:6: setting 'nofile' is not read from a node's vars: "
                                       r"give it in the inventory's vars"),
    ("vars:\n  nic: eth1\n", r"setting 'nic' is not read from the inventory's vars: give it in a node's vars"),
    ("vars:\n  workers: 4\n", r"setting 'workers' is not read from the inventory's vars: "
                              r"give it in a config file's gpufab: section"),
])
def test_a_key_nothing_reads_is_named_with_its_line_and_the_nearest_known_one(text, message):
    with pytest.raises(InputError, match=message):
        parse_inventory(NODE + text, "hosts.yaml")


def test_settings_given_where_they_are_read_are_accepted():
    inv = parse_inventory(NODE + "    vars: {nic: eth1, gpus: 8, slots: 4, train_python: /opt/py}\n"
                          "vars: {ray_version: 2.9.0, storage: nfs, nofile: 1024, sudo_password_file: /p}\n",
                          "hosts.yaml")
    assert inv.vars["ray_version"] == "2.9.0" and inv.nodes[0].vars["nic"] == "eth1"


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"[a-z][a-z_]{0,23}", fullmatch=True) | st.sampled_from(sorted(NAMES)))
def test_any_name_is_accepted_exactly_where_it_is_declared(name):
    for place, text in ((declared.CLUSTER, f"vars:\n  {name}: 1\n"), (declared.NODE, f"    vars:\n      {name}: 1\n")):
        known = name in NAMES and place in NAMES[name].where
        try:
            parse_inventory(NODE + text, "hosts.yaml")
            accepted = True
        except InputError as exc:
            # A value check of a name read there; not a name refused (`no:` is YAML's false, never a name).
            accepted = not any(m in str(exc) for m in ("unknown setting", "is not read from", "invalid variable name",
                                                       "is not a name"))
        assert accepted == known, (name, place)


def cli(args, tmp_path, **env):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return run_cli(args[0], *args[1:], cwd=tmp_path, timeout=60, env={"HOME": str(home), **env})


def test_the_cli_refuses_a_misspelt_key_in_one_line_with_exit_2_and_touches_nothing(tmp_path):
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(NODE.replace("198.18.0.11", "198.18.250.1") + "vars:\n  ray_verison: 2.9.0\n")
    (tmp_path / "home").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = cli(["gpufab", "bootstrap"], tmp_path, GPUFAB_INVENTORY=str(inventory))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"gpufab: error: {inventory}:6: unknown setting 'ray_verison' in the inventory's vars "
                           "(did you mean 'ray_version'?)\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no report, no failed-hosts file, no known_hosts


def test_a_misspelt_key_in_gpufab_yaml_names_the_file(tmp_path):
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(NODE.replace("198.18.0.11", "198.18.250.1"))
    (tmp_path / "gpufab.yaml").write_text("gpufab:\n  workres: 4\n")
    proc = cli(["gpufab", "limits.setup"], tmp_path, GPUFAB_INVENTORY=str(inventory))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"gpufab: error: {tmp_path / 'gpufab.yaml'}: unknown setting 'workres' in a config "
                           "file's gpufab: section (did you mean 'workers'?)\n")


def test_docs_settings_page_is_the_declarations_table():
    page = (REPO / "docs" / "settings.md").read_text()
    marker = "<!-- generated from the declarations: inv inventory.settings -->\n"
    assert page.split(marker, 1)[1] == declared.reference_table(), "regenerate: inv inventory.settings"
    assert Path(REPO / "docs" / "settings.md").exists()


def test_the_example_inventory_and_the_labs_hold_declared_settings_only():
    from fabfile.core.inventory import load_inventory
    from fabfile.lab import plan
    example = load_inventory(str(REPO / "inventory" / "example.yaml"))
    assert set(example.vars) <= set(NAMES)
    lab = plan.lab_inventory(plan.plan_hosts(3), "/k", "/kh", {"node1": "hgx-h100"}, "AB" * 20)
    assert parse_inventory(lab, "lab.yaml").nodes[0].vars == {"train_python": "/usr/local/bin/python-gpu"}
