"""`gpufab`, `inv` and `fab` run inside the test process, as a fresh process would run them.

Starting Python, Fabric and paramiko costs about half a second a command; a unit test that
asserts on a command's output, exit status and files needs none of it. `run_cli` takes the
same arguments as `helpers.cli` and gives back the same `CompletedProcess`: the console
script's entry point is called with that argv, under that environment, working directory and
an empty stdin; stdout and stderr are captured and decoded as `subprocess.run(text=True)`
decodes them; `sys.exit` becomes the exit status, and an exception that escapes is printed as
Python prints it (a traceback on stderr, status 1), so "no traceback" is still asserted.

What a fresh process would do again is done again: `fabfile/__init__.py` (its config-file
hook and its ssh-config check of `sys.argv`) and the root `tasks.py` are executed anew for
the run, then the test's own modules are put back. The submodules stay loaded: none keeps
state across runs (settings are read per run), but Invoke consumes each task's `help` dict
as it builds the task's flags (`Task.arg_opts` pops them), so those are put back too.

A test about the process itself (start-up time, the modules it loads, the console script,
signals) keeps a real one: `helpers.cli`. Commands run without root's power over file modes
share one such process, `Unprivileged`.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

from invoke import Task

from helpers import BIN, REPO, UNPRIVILEGED

#: Fresh for each run, as in a new process (the step modules below them are shared).
FRESH = ("fabfile", "tasks")


def _entry(tool: str) -> Callable[[], None]:
    if tool == "gpufab":
        from fabfile.cli import main

        return main
    if tool == "inv":
        from invoke import Program, __version__

        return Program(name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=__version__).run
    if tool == "fab":
        from fabric.main import make_program

        return make_program().run
    raise ValueError(f"no in-process entry point for {tool!r}")


def _tasks() -> List[Task]:
    """Every task object of gpufab's modules loaded so far."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "fabfile" and module is not None:
            for value in vars(module).values():
                if isinstance(value, Task):
                    found[id(value)] = value
    return list(found.values())


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    data = stream.buffer.getvalue()  # type: ignore[attr-defined]
    # subprocess.run(text=True): the locale's encoding, universal newlines.
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _environment(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """What `helpers.cli` gives the command: this environment less GPUFAB_INVENTORY, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}
    full_env.update(env or {})
    return full_env


def run_cli(tool: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300,
            cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`helpers.cli(tool, *args, env=..., cwd=...)`, in this process. `timeout` ends the whole
    test session (with every thread's stack) rather than hang it."""
    return _run(tool, list(args), _environment(env), str(cwd or REPO), timeout)


def _run(tool: str, args: List[str], full_env: Dict[str, str], cwd: str,
         timeout: float) -> subprocess.CompletedProcess:
    argv = [str(BIN / tool), *args]
    entry = _entry(tool)

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_help = [(task, dict(task.help)) for task in _tasks()]
    saved_modules = {name: sys.modules.pop(name) for name in FRESH if name in sys.modules}
    before = set(sys.modules)
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    stdin = open(os.devnull)
    code: object = 0
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        os.environ.clear()
        os.environ.update(full_env)
        os.chdir(cwd)
        sys.argv = argv
        sys.stdin, sys.stdout, sys.stderr = stdin, out, err
        try:
            entry()
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # what the interpreter does with an exception nobody caught
            traceback.print_exc()
            code = 1
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        stdin.close()
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for name in FRESH:
            sys.modules.pop(name, None)
        sys.modules.update(saved_modules)
        for task, help_texts in saved_help:
            task.help.clear()
            task.help.update(help_texts)
        # A module first imported during the run hangs under the test's package objects too.
        for name in set(sys.modules) - before:
            parent, _, leaf = name.rpartition(".")
            if parent in sys.modules and sys.modules[name] is not None and not hasattr(sys.modules[parent], leaf):
                setattr(sys.modules[parent], leaf, sys.modules[name])
    return subprocess.CompletedProcess(argv, code, _text(out), _text(err))


class Unprivileged:
    """One process without root's power over file modes (`helpers.UNPRIVILEGED`), shared by the
    commands that need it: each runs in it as `run_cli` runs one here. Not root: a plain process."""

    def __init__(self) -> None:
        prefix = UNPRIVILEGED if os.geteuid() == 0 else ()
        self.proc = subprocess.Popen([*prefix, sys.executable, __file__], cwd=str(REPO), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def cli(self, tool: str, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300,
            cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"tool": tool, "args": list(args), "env": _environment(env), "cwd": str(cwd or REPO),
                   "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the unprivileged process ended ({self.proc.wait()})"
        done = json.loads(answer)
        return subprocess.CompletedProcess(done["args"], done["returncode"], done["stdout"], done["stderr"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _serve() -> None:
    """`Unprivileged`'s side: one JSON request a line on stdin, one JSON answer a line on stdout."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    for line in sys.stdin:
        request = json.loads(line)
        done = _run(request["tool"], request["args"], request["env"], request["cwd"], request["timeout"])
        answers.write(json.dumps({"args": done.args, "returncode": done.returncode, "stdout": done.stdout,
                                  "stderr": done.stderr}) + "\n")
        answers.flush()
    os._exit(0)  # nothing left to flush or close: skip the interpreter's teardown


if __name__ == "__main__":
    _serve()
