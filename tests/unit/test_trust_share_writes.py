"""Issue 32, item 3: root's writes into the share never go through a name another node planted.

The share is written by every node; between root's `rm -f` and its write, a
worker can plant a symlink, a FIFO or a device under the same name. A fake
`rm` on PATH plants one right after removing, which is that race won every time.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from fabfile.ops import storage


def run_racing(tmp_path, plant: str) -> subprocess.CompletedProcess:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "rm").write_text(f"#!/bin/sh\n/bin/rm \"$@\"\ncd {share} && {plant}\n")
    (bin_dir / "rm").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", storage.token_command(str(share), "tok3n")], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_token_is_written_when_nobody_races(tmp_path):
    done = run_racing(tmp_path, "true")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "share/.gpufab-verify").read_text() == "tok3n"
    assert (tmp_path / "share/.gpufab-bench-head").stat().st_size == storage.BENCH_MIB << 20


def test_a_fifo_planted_after_the_removal_fails_the_write_instead_of_taking_it(tmp_path):
    done = run_racing(tmp_path, "mkfifo .gpufab-verify")
    assert done.returncode != 0
    assert (tmp_path / "share/.gpufab-verify").is_fifo()


def test_a_symlink_planted_after_the_removal_is_never_followed(tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    done = run_racing(tmp_path, f"ln -s {victim} .gpufab-verify; ln -s {victim} .gpufab-bench-head")
    assert done.returncode != 0
    assert victim.read_text() == "root:secret\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_planted_after_the_removal_is_never_written(tmp_path):
    done = run_racing(tmp_path, "mknod .gpufab-verify c 1 3")  # /dev/null's numbers
    assert done.returncode != 0
