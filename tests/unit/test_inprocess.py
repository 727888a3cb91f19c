"""tests/inprocess.py, which most CLI tests use instead of a process, answers as the process does."""

from __future__ import annotations

import importlib
import os
import sys

from helpers import cli
from inprocess import run_cli


def test_a_command_in_process_prints_and_exits_as_the_console_script_does(tmp_path):
    env = {"HOME": str(tmp_path)}
    real = cli("gpufab", "--help", "bootstrap", env=env, cwd=tmp_path)
    assert real.returncode == 0 and "--skip" in real.stdout, real.stderr
    # Twice: Invoke consumes a task's help texts as it builds its flags; the second run still has them.
    for _ in range(2):
        done = run_cli("gpufab", "--help", "bootstrap", env=env, cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (real.returncode, real.stdout, real.stderr)


def test_a_run_leaves_the_tests_modules_environment_and_directory_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUFAB_INVENTORY", "/nowhere.yaml")
    package, cwd, argv = sys.modules["fabfile"], os.getcwd(), sys.argv[:]
    bootstrap = importlib.import_module("fabfile.bootstrap").bootstrap
    helps = dict(bootstrap.help)
    done = run_cli("fab", "-H", "a:b:c]", "exec", "true", env={"HOME": str(tmp_path)})
    assert done.returncode == 2 and done.stderr.startswith("gpufab: error: --hosts: invalid"), done.stderr
    assert sys.modules["fabfile"] is package and os.getcwd() == cwd and sys.argv == argv
    assert os.environ["GPUFAB_INVENTORY"] == "/nowhere.yaml" and os.environ.get("HOME") != str(tmp_path)
    assert bootstrap.help == helps
