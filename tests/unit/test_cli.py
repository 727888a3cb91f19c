"""The `gpufab` command from any directory: its task tree, config levels and default inventory.

(The wheel's contents and its `gpufab` package unpacked outside the checkout:
tests/unit/test_wheel.py; the wheel installed into a fresh venv, and `gpufab`
against lab hosts: tests/lab/test_install.py.)
"""

from __future__ import annotations


import pytest

from fabfile.cli import make_program
from fabfile.core.cluster import default_inventory
from fabfile.core.connection import fab_ssh_config_paths
from helpers import one_error_line
from inprocess import run_cli

MAPPING = "Public IP      Private IP\n198.18.0.250   10.9.0.1\n198.18.0.251   10.9.0.2\n"


@pytest.fixture
def elsewhere(tmp_path):
    """An empty working directory and a HOME of its own, outside the repository."""
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    (home / ".ssh").mkdir(parents=True)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    return cwd, home, env


def gpufab(*args, cwd, env, **kw):
    return run_cli("gpufab", *args, cwd=cwd, env=env, **kw)


def test_gpufab_lists_the_same_tasks_as_inv_from_an_empty_directory(elsewhere):
    cwd, _, env = elsewhere
    listed = gpufab("--list", cwd=cwd, env=env)
    assert listed.returncode == 0, listed.stderr
    ours = {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.startswith("  ")}
    inv = run_cli("inv", "--list")
    theirs = {line.split()[0] for line in inv.stdout.splitlines()[1:] if line.startswith("  ")}
    assert ours == theirs and {"bootstrap", "exec", "storage.setup", "inventory.import"} <= ours
    assert list(cwd.iterdir()) == []


def test_import_outside_a_project_writes_the_user_config_inventory(elsewhere):
    cwd, home, env = elsewhere
    (cwd / "m.txt").write_text(MAPPING)
    proc = gpufab("inventory.import", "m.txt", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = home / ".config" / "gpufab" / "hosts.yaml"
    assert f"{written}: written" in proc.stdout
    assert "rental1" in written.read_text()
    assert "Host rental0" in (home / ".ssh" / "config").read_text()
    assert sorted(p.name for p in cwd.iterdir()) == ["m.txt"]
    shown = gpufab("inventory.show", cwd=cwd, env=env)
    assert shown.returncode == 0 and "198.18.0.251" in shown.stdout, shown.stdout + shown.stderr


def test_a_project_directory_keeps_its_own_inventory(elsewhere):
    cwd, home, env = elsewhere
    (cwd / "inventory").mkdir()
    (cwd / "m.txt").write_text(MAPPING)
    proc = gpufab("inventory.import", "m.txt", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (cwd / "inventory" / "hosts.yaml").exists()
    assert not (home / ".config" / "gpufab").exists()


@pytest.mark.parametrize("level", ["project", "user"])
def test_config_follows_invokes_levels_under_the_gpufab_prefix(elsewhere, level):
    cwd, home, env = elsewhere
    (cwd / "m.txt").write_text(MAPPING)
    assert gpufab("inventory.import", "m.txt", "--output", "mine.yaml", cwd=cwd, env=env).returncode == 0
    where = cwd / "gpufab.yaml" if level == "project" else home / ".gpufab.yaml"
    where.write_text(f"gpufab:\n  inventory: {cwd / 'mine.yaml'}\n")
    shown = gpufab("inventory.show", cwd=cwd, env=env)
    assert shown.returncode == 0 and "198.18.0.250" in shown.stdout, shown.stdout + shown.stderr
    where.unlink()
    missing = one_error_line(gpufab("inventory.show", cwd=cwd, env=env))
    assert f"{home}/.config/gpufab/hosts.yaml: inventory file not found" in missing


def test_the_default_inventory_is_the_projects_else_the_users(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert default_inventory() == str(tmp_path / "h" / ".config" / "gpufab" / "hosts.yaml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/x")
    assert default_inventory() == "/x/gpufab/hosts.yaml"
    (tmp_path / "inventory").mkdir()
    assert default_inventory() == "inventory/hosts.yaml"


@pytest.mark.parametrize("argv,expected", [
    (["-H", "h", "exec", "true"], (["~/.ssh/config", "/etc/ssh/ssh_config"], False)),
    (["-S", "/x/cfg", "exec", "true"], (["/x/cfg"], True)),
    (["-S/x/cfg", "exec"], (["/x/cfg"], True)),
    (["--ssh-config=/x/cfg", "exec"], (["/x/cfg"], True)),
    (["--ssh-config", "/x/cfg", "exec"], (["/x/cfg"], True)),
    (["-F", "json", "--list"], (["~/.ssh/config", "/etc/ssh/ssh_config"], False)),
    (["exec", "--", "-S", "/x/cfg"], (["~/.ssh/config", "/etc/ssh/ssh_config"], False)),
])
def test_the_ssh_configs_fab_will_open_are_read_from_its_flags(argv, expected):
    assert fab_ssh_config_paths(argv) == expected


def test_a_bare_remainder_becomes_gpufabs_own_exec():
    program = make_program()
    program.create_config()
    program.parse_core(["gpufab", "-H", "h1,h2", "--", "uname -a"])
    assert program.core.unparsed == ["exec", "uname -a"] and not program.core.remainder


def test_gpufab_variables_set_its_settings_and_bad_ones_are_one_line(elsewhere):
    cwd, home, env = elsewhere
    (cwd / "hosts_dir").mkdir()
    line = one_error_line(gpufab("-H", "198.18.0.250", "exec", "true", cwd=cwd,
                                 env={**env, "GPUFAB_KNOWN_HOSTS": str(cwd / "hosts_dir")}, timeout=60))
    assert f"{cwd / 'hosts_dir'}: known_hosts is a directory, not a file" in line
    for name, value, message in [("GPUFAB_WORKERS", "abc", "not a whole number: 'abc'"),
                                 ("GPUFAB_CONNECT_TIMEOUT", "-1", "must be positive: '-1'")]:
        line = one_error_line(gpufab("-H", "198.18.0.250", "exec", "true", cwd=cwd, env={**env, name: value}))
        assert f"gpufab: error: {name}: {message}" == line


def test_lab_tasks_leave_the_installed_tool_only(monkeypatch):
    from fabfile import cli as gpufab_cli

    assert "lab.up" in gpufab_cli.make_program().namespace.task_names
    monkeypatch.setattr(gpufab_cli, "in_checkout", lambda: False)
    names = gpufab_cli.make_program().namespace.task_names
    assert "lab.up" not in names and "bootstrap" in names and "storage.setup" in names and "pyenv.check" in names
