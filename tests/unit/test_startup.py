"""Start-up: `gpufab --list` and a task's --help load the task tree, not the steps' code.

Each task module imports its ops module inside the task, so listing the tasks
or reading one's help never loads a step, a template engine or a table
printer. The figures are in bench/RESULTS.md ("Start-up"); this file proves
what is and is not imported, and that the help texts, read from the generated
fabfile/help_texts.py (tests/unit/test_derived.py holds it to the declarations),
still say the defaults the code uses.
"""

from __future__ import annotations

import functools
import importlib
import json
import subprocess
import sys

import pytest

from fabfile.ops import allreduce as ar_ops
from fabfile.ops import limits as limits_ops
from fabfile.ops import netenv as netenv_ops
from fabfile.ops.shared import share as share_ops
from fabfile.ops import ray as ray_ops
from fabfile.ops import scripts as scripts_ops
from fabfile.ops.chain import CHAIN
from helpers import REPO

# Task modules by path: `fabfile.bootstrap` as an attribute is the task of that name.
allreduce, bootstrap, launch, limits, netenv, nfs, ray, script, storage = (
    importlib.import_module(f"fabfile.{m}")
    for m in ("allreduce", "bootstrap", "launch", "limits", "netenv", "nfs", "ray", "script", "storage"))

#: Loaded only by the task that needs it.
HEAVY = ("fabfile.ops", "jinja2", "tabulate", "dotenv", "matplotlib")

#: The runs probed: each is forked from one process that has loaded only the libraries every run loads.
PROBED = [("--list",), ("--help", "bootstrap"), ("--help", "ray.setup"), ("--complete", "--", "gpufab", "ray.")]

PROBE = """
import importlib, json, os, sys, traceback
import fabric.main, invoke, paramiko  # what every gpufab run loads first, once for all the runs below
package = sys.argv[1]  # fabfile: fab/inv in the clone; gpufab: the gpufab command (the editable install here)
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in {package, "jinja2", "tabulate", "dotenv", "matplotlib"})
assert loaded() == [], loaded()
found = {}
for args in json.loads(sys.argv[2]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a gpufab run from here on, with nothing of gpufab's loaded yet
        os.close(read)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.argv, code = ["gpufab", *args], 0
        try:
            importlib.import_module(package + ".cli").main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        os.write(write, json.dumps(loaded()).encode())
        sys.stderr.flush()
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        modules = json.loads(pipe.read())
    found[" ".join(args)] = (os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), modules)
print(json.dumps(found))
"""


@functools.lru_cache(maxsize=None)
def probed(package: str = "fabfile") -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, package, json.dumps(PROBED)], cwd=str(REPO), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout), "stderr": done.stderr}


def loaded_by(*args: str, package: str = "fabfile") -> list:
    found = probed(package)
    code, modules = found[" ".join(args)]
    assert code == 0, found["stderr"]
    return modules


@pytest.mark.parametrize("args", PROBED[:3])
def test_listing_and_help_load_no_step(args):
    modules = loaded_by(*args)
    assert "fabfile.bootstrap" in modules  # the probe saw the task tree load
    assert [m for m in modules if m.startswith(HEAVY)] == []


def test_complete_loads_no_step():
    assert [m for m in loaded_by("--complete", "--", "gpufab", "ray.") if m.startswith(HEAVY)] == []


def test_the_gpufab_command_lists_with_the_same_modules_under_its_installed_name():
    """`.venv/bin/gpufab` imports the package as gpufab: the same modules as fabfile in the clone, and only those."""
    modules = loaded_by("--list", package="gpufab")
    assert "gpufab.bootstrap" in modules and not [m for m in modules if m.startswith("fabfile")]
    assert [m.replace("gpufab", "fabfile", 1) for m in modules] == list(loaded_by("--list"))


# The defaults the help texts state, against the constants the tasks use.
HELP_DEFAULTS = [
    (allreduce.allreduce, "sizes", "default " + ar_ops.DEFAULT_SIZES),
    (allreduce.allreduce, "iters", "default " + str(ar_ops.DEFAULT_ITERS)),
    (allreduce.allreduce, "timeout", "default " + f"{ar_ops.DEFAULT_TIMEOUT:g}"),
    (bootstrap.bootstrap, "nofile", "default " + str(limits_ops.DEFAULT_NOFILE)),
    (bootstrap.bootstrap, "timeout", "default " + str(ray_ops.DEFAULT_WAIT)),
    (limits.setup, "nofile", "default " + str(limits_ops.DEFAULT_NOFILE)),
    (launch.launch, "master_port", "default " + str(netenv_ops.DEFAULT_MASTER_PORT)),
    (netenv.setup, "master_port", "default " + str(netenv_ops.DEFAULT_MASTER_PORT)),
    (nfs.setup, "path", "default " + share_ops.DEFAULT_EXPORT),
    (storage.setup, "path", "default " + share_ops.DEFAULT_EXPORT),
    (ray.install, "version", "default " + ray_ops.DEFAULT_VERSION),
    (ray.install, "venv", "default " + ray_ops.DEFAULT_VENV),
    (ray.setup, "timeout", "default " + str(ray_ops.DEFAULT_WAIT)),
    (ray.wait, "timeout", "default " + str(ray_ops.DEFAULT_WAIT)),
    (script.run, "timeout", "default " + str(scripts_ops.DEFAULT_TIMEOUT)),
]


@pytest.mark.parametrize("task,option,says", HELP_DEFAULTS, ids=[f"{t.name}-{o}" for t, o, _ in HELP_DEFAULTS])
def test_help_states_the_default_the_code_uses(task, option, says):
    assert says in task.help[option], task.help[option]


def test_bootstrap_skip_help_names_every_optional_step_in_chain_order():
    names = ", ".join(s.name for s in CHAIN if s.optional)
    assert f"({names}," in bootstrap.bootstrap.help["skip"]
