"""Running gpufab the way users do: the `inv` and `fab` commands, in the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cli(
    tool: str,
    *args: str,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 300,
    cwd: Optional[Path] = None,
    bin_dir: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """Run `inv ARGS` or `fab ARGS` from the repo root; returns the finished process.

    GPUFAB_INVENTORY is only set when the test says so.
    """
    full_env = {k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}
    full_env.update(env or {})
    return subprocess.run(
        [str(Path(bin_dir or BIN) / tool), *args],
        cwd=str(cwd or REPO),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Assert a run ended as bad input: exit 2, one stderr line, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, lines
    assert lines[0].startswith("gpufab: error: "), lines[0]
    return lines[0]
