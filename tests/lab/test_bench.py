"""The benchmark command works end to end and leaves nothing behind.

It is the one command that reproduces bench/RESULTS.md; a smoke run here
(2 targets, one round) keeps it from rotting. The numbers are not checked:
performance claims come from the benchmark itself, never from timed tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import REPO, cli


def test_bench_run_measures_every_tool_and_removes_its_targets(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--sizes", "2", "--big", "3", "--runs", "1", "--repeat", "2",
         "--skip", "bootstrap,allreduce,startup", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for tool in ("gpufab exec", "Fabric ThreadingGroup", "asyncssh + gather", "parallel-ssh", "Ansible ad-hoc (-f N, default",
                 "Ansible ad-hoc (-f N, -m raw)",
                 "pyinfra exec"):
        assert re.search(rf"^\| {re.escape(tool)}.*\| \d+\.\d\d \(\d+\.\d\d×\)", text, re.M), tool
    assert re.search(r"^\| gpufab +\| \d+\.\d", text, re.M)  # warm-connection table
    assert "## 3 hosts" in text and "Machine:" in text and "Command: `bench/run.py" in text
    # torn down: no veth, no bench user, no sshd on the bench port, no state dir
    assert subprocess.run(["ip", "link", "show", "gfbench0"], capture_output=True).returncode != 0
    assert subprocess.run(["id", "gpufab-bench"], capture_output=True).returncode != 0
    assert subprocess.run(["pgrep", "-f", "gpufab-bench/sshd_config"], capture_output=True).returncode != 0
    assert not os.path.exists("/run/gpufab-bench")


def test_bench_compares_a_first_bootstrap_with_a_baseline_commit(lab, tmp_path):
    """The bootstrap benchmark end to end on 1 lab host: this tree and a baseline checked out in a worktree."""
    out = tmp_path / "RESULTS.md"
    try:
        proc = subprocess.run(
            [sys.executable, "bench/run.py", "--skip", "fanout,warm,allreduce,startup", "--boot-sizes", "1",
             "--baseline", "HEAD", "--out", str(out)],
            cwd=REPO, capture_output=True, text=True, timeout=1500,
        )
    finally:  # the bench leaves no lab up: the session's 3 hosts again for the modules after this one
        up = cli("inv", "lab.up", "--nodes", "3", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert up.returncode == 0, up.stdout + up.stderr
    text = out.read_text()
    assert "## `inv bootstrap` on the nspawn lab: this tree against HEAD" in text
    rows = re.findall(r"^\| (baseline|this tree) +\| 1 +\| ([\d.]+) +\| ([\d.]+) +\| \d+% +\| (\d+) ", text, re.M)
    assert [r[0] for r in rows] == ["baseline", "this tree"], text
    assert all(float(first) > float(again) > 0 for _, first, again, _ in rows), rows
    # Per step, with the steps both ran (this tree's own, fetch and wheels among them).
    assert re.search(r"^\| wheels +\| [\d.]+ \(ends [\d.]+\) +\| [\d.]+ \(ends [\d.]+\) +\|$", text, re.M), text
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout
    assert "gpufab-baseline" not in worktrees
