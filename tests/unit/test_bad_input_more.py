"""Issue 32's bad input: what still ended in a traceback, a hang, a wrong acceptance or an unclear line.

As in test_bad_input: the parsers are called in-process (with hypothesis where the
input space is wide); a command is run only where the behaviour is the command's own,
always with a throwaway HOME and no address outside 198.18.0.0/15 and loopback.
"""

from __future__ import annotations

import pytest
from fabric import Config

from fabfile.cli import GpufabConfig
from fabfile.core.errors import InputError, number_option
from fabfile.core.inventory import parse_inventory
from fabfile.core.settings import gpufab_setting, read_config_file

from helpers import cli, one_error_line

NODE = "nodes:\n  - name: a\n    public: 198.18.0.11\n    private: 198.19.0.11\n"


# --------------------------------------------------------------------------- YAML nesting


@pytest.mark.parametrize("text", [
    NODE + "vars:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300)) + "  " * 301 + "x\n",
    NODE + "vars:\n  x: " + "[" * 3000 + "\n",
    "[" * 3000 + "]" * 3000 + "\n",
])
def test_deeply_nested_inventories_are_refused_not_a_recursion_error(text):
    with pytest.raises(InputError, match=r"hosts.yaml:\d+: nested more than 50 levels deep"):
        parse_inventory(text, "hosts.yaml")


# --------------------------------------------------------------------------- gpufab.yaml, invoke.yaml, GPUFAB_*


def project_config(tmp_path, text):
    """gpufab's config with `text` as the project's gpufab.yaml (the user's and the system's files left out)."""
    (tmp_path / "gpufab.yaml").write_text(text)
    config = GpufabConfig(project_location=str(tmp_path), lazy=True)
    config.load_project()
    return config


@pytest.mark.parametrize("key,value,message", [
    ("workers", "abc", "gpufab.workers: not a whole number: 'abc'"),
    ("workers", "1.5", "gpufab.workers: not a whole number: 1.5"),
    ("dead_after", "soon", "gpufab.dead_after: not a number: 'soon'"),
    ("connect_timeout", ".nan", "gpufab.connect_timeout: not a finite number: nan"),
    ("command_timeout", "-3", "gpufab.command_timeout: must be positive: -3"),
    ("known_hosts", "[a]", "gpufab.known_hosts: not a file path: ['a']"),
    ("inventory", "{a: 1}", "gpufab.inventory: not a file path: {'a': 1}"),
])
def test_settings_of_the_wrong_type_are_named_with_their_file(tmp_path, key, value, message):
    config = project_config(tmp_path, f"gpufab:\n  {key}: {value}\n")
    with pytest.raises(InputError) as raised:
        gpufab_setting(config, key)
    assert str(raised.value) == f"{tmp_path / 'gpufab.yaml'}: {message}"


def test_good_settings_read_as_before(tmp_path):
    config = project_config(tmp_path, "gpufab:\n  workers: 8\n  dead_after: 2.5\n  known_hosts: ~/kh\n  nofile: x\n")
    assert [gpufab_setting(config, k) for k in ("workers", "dead_after", "known_hosts", "nofile")] == [8, 2.5, "~/kh", "x"]
    assert gpufab_setting(config, "command_timeout", 7) == 7


@pytest.mark.parametrize("text,message", [
    ("gpufab: [unclosed\n", r"gpufab.yaml:2: not valid YAML: expected ',' or '\]'"),
    ("- a\n- b\n", "gpufab.yaml: a config file must be a mapping"),
    ("gpufab: 5\n", "gpufab.yaml: 'gpufab' must be a mapping of settings"),
    ("run: 5\n", "gpufab.yaml: 'run' must be a mapping, as Invoke and Fabric have it"),
    ("run:\n  echo: {a: 1}\n", "gpufab.yaml: 'run.echo' must be a single value"),
    ("gpufab:\n  x: " + "[" * 3000 + "\n", "gpufab.yaml:2: nested more than 50 levels deep"),
])
def test_config_files_that_invoke_cannot_merge_are_named(tmp_path, text, message):
    (tmp_path / "gpufab.yaml").write_bytes(text.encode())
    with pytest.raises(InputError, match=message):
        read_config_file(str(tmp_path / "gpufab.yaml"), Config.global_defaults())


def test_a_config_file_with_its_settings_commented_out_sets_none(tmp_path):
    (tmp_path / "gpufab.yaml").write_text("gpufab:\n  # workers: 8\n")
    assert read_config_file(str(tmp_path / "gpufab.yaml"), Config.global_defaults()) == {"gpufab": {}}


@pytest.mark.parametrize("name,value,message", [
    ("GPUFAB_CONNECT_TIMEOUT", "nan", "not a finite number: 'nan'"),
    ("GPUFAB_DEAD_AFTER", "nan", "not a finite number: 'nan'"),
    ("GPUFAB_COMMAND_TIMEOUT", "inf", "not a finite number: 'inf'"),
    ("GPUFAB_KNOWN_HOSTS", "", "not a file path: ''"),
])
def test_gpufab_variables_that_no_timer_or_file_takes_are_refused(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError) as raised:
        GpufabConfig(lazy=True).load_shell_env()
    assert str(raised.value) == f"{name}: {message}"


def test_a_timeout_option_of_inf_is_refused():
    with pytest.raises(InputError, match="--timeout: invalid value 'inf'"):
        number_option("inf", "--timeout", float)


def test_inv_names_a_broken_project_invoke_yaml(tmp_path):
    """The project's invoke.yaml is read by Invoke after it imports the tasks: one line, not Invoke's traceback."""
    (tmp_path / "tasks.py").write_text("from fabfile import ns  # noqa: F401\n")
    (tmp_path / "invoke.yaml").write_text("gpufab:\n  workers: [8\n")
    line = one_error_line(cli("inv", "exec", "true", cwd=tmp_path, timeout=60,
                              env={"HOME": str(tmp_path), "GPUFAB_INVENTORY": str(tmp_path / "none.yaml")}))
    assert line.startswith(f"gpufab: error: {tmp_path / 'invoke.yaml'}:3: not valid YAML")


def test_gpufab_names_a_setting_of_the_wrong_type_in_its_gpufab_yaml(tmp_path):
    (tmp_path / "gpufab.yaml").write_text("gpufab:\n  dead_after: soon\n")
    line = one_error_line(cli("gpufab", "-H", "127.0.0.1:1", "exec", "true", cwd=tmp_path, timeout=60,
                              env={"HOME": str(tmp_path)}))
    assert line == f"gpufab: error: {tmp_path / 'gpufab.yaml'}: gpufab.dead_after: not a number: 'soon'"
