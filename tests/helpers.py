"""Running gpufab the way users do: the `inv` and `fab` commands, in the repo."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cli(
    tool: str,
    *args: str,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 300,
    cwd: Optional[Path] = None,
    bin_dir: Optional[str] = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run `inv ARGS` or `fab ARGS` from the repo root; returns the finished process.

    GPUFAB_INVENTORY is only set when the test says so. `prefix` goes before
    the command (UNPRIVILEGED: run as root would without its power over file modes).
    """
    full_env = {k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}
    full_env.update(env or {})
    return subprocess.run(
        [*prefix, str(Path(bin_dir or BIN) / tool), *args],
        cwd=str(cwd or REPO),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


#: Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: a mode-000 file is unreadable to it, as to a user.
UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def interrupt_when(args: Sequence[str], env: Dict[str, str], marker: str, count: int,
                   timeout: float = 60) -> Tuple[subprocess.CompletedProcess, float]:
    """Run `inv ARGS`, press Ctrl-C once `marker` has shown `count` times; the finished run and
    the seconds it took to end after the Ctrl-C."""
    full_env = {k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}
    full_env.update(env)
    proc = subprocess.Popen([str(BIN / "inv"), *args], cwd=str(REPO), env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen, deadline = "", time.monotonic() + 60
    while seen.count(marker) < count and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert seen.count(marker) == count, seen
    pressed = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, seen + out, err), time.monotonic() - pressed


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Assert a run ended as bad input: exit 2, one stderr line, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpufab: error: "), lines[0]
    return lines[0]


def unit_directives(text: str) -> Dict[str, Dict[str, List[str]]]:
    """A systemd unit file as systemd reads it: section -> key -> its values in order (a line that ends in
    a backslash goes on in the next, the backslash read as a space)."""
    out: Dict[str, Dict[str, List[str]]] = {}
    section, pending = "", ""
    for raw in text.splitlines():
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending, line = "", line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"not a unit file line: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def exec_shell(value: str) -> str:
    """The shell of an `Exec...=/bin/sh -c '...'` value, as systemd hands it to sh (`$$` and `%%` as `$`, `%`)."""
    words = shlex.split(value)
    assert words[:2] == ["/bin/sh", "-c"] and len(words) == 3, words
    return words[2].replace("$$", "$").replace("%%", "%")


def stubs(tmp: Path, **commands: str) -> Dict[str, str]:
    """An environment whose PATH has `commands` (name -> shell body) before the system's."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in commands.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
