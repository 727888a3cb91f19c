"""Running gpufab the way users do: the `inv` and `fab` commands, in the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cli(
    tool: str,
    *args: str,
    env: Optional[Dict[str, str]] = None,
    timeout: float = 300,
    cwd: Optional[Path] = None,
) -> subprocess.CompletedProcess:
    """Run `inv ARGS` or `fab ARGS` from the repo root; returns the finished process."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("GPUFAB_INVENTORY", None) if env is None or "GPUFAB_INVENTORY" not in env else None
    return subprocess.run(
        [str(BIN / tool), *args],
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
