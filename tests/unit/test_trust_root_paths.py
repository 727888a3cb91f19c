"""Issue 32, item 4: root never opens, chowns or runs a path that the SSH user can plant.

Anything running as the SSH user (a Ray task) can put a link at `~/train.log`
pointing to /etc/shadow, or replace a step's files in its home. The remote
programs are run here for real, as root, with `nobody` standing for the SSH
user, against a victim file that only root may write.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fabfile.core.errors import InputError
from fabfile.ops import detached, netenv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the remote programs as root, as on a node")


def home_of_nobody(tmp: Path) -> Path:
    """A directory `nobody` owns, reachable by it (/tmp is 1777): the SSH user's home for the test."""
    home = tmp / "home"
    home.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    return home


@pytest.fixture
def world():
    top = Path(tempfile.mkdtemp(prefix="gpufab-trust-"))
    top.chmod(0o755)
    victim = top / "shadow"
    victim.write_text("root:$6$secret\n")
    victim.chmod(0o600)
    yield top, home_of_nobody(top), victim
    subprocess.run(["rm", "-rf", str(top)], check=False)


def start(log: str, command: str = "echo job-output") -> subprocess.CompletedProcess:
    script = detached.START_SCRIPT.replace("[ -d /run/systemd/system ]", "false")
    assert "systemd/system" not in script
    return subprocess.run(["sh", "-c", script, "gpufab", "gpufab-run-test", log, "nobody", command],
                          capture_output=True, text=True, timeout=30)


def test_a_log_link_to_a_root_file_is_neither_chowned_nor_written(world):
    top, home, victim = world
    (home / "train.log").symlink_to(victim)
    done = start(str(home / "train.log"))
    time.sleep(0.5)
    assert done.returncode == 1 and "cannot open" in done.stderr
    assert victim.stat().st_uid == 0 and victim.read_text() == "root:$6$secret\n"


def test_the_job_opens_its_own_log_as_the_user(world):
    top, home, victim = world
    log = home / "logs/train.log"
    done = start(str(log), "echo job-output; id -un")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "nobody" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    assert log.read_text() == "job-output\nnobody\n"
    assert log.stat().st_uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.parametrize("value", ["../../etc/cron.d/x", "logs/../../x", "", "a\nb"])
def test_a_log_path_that_climbs_or_breaks_lines_is_refused(value):
    with pytest.raises(InputError, match="--log"):
        detached.check_log(value)


def test_secrets_env_is_root_s_so_the_user_cannot_change_what_root_s_shells_source():
    f = netenv.secrets_file({"HF_TOKEN": "x"}, "ubuntu")
    assert (f.owner, f.group, f.mode) == ("root", "ubuntu", 0o640)
    assert netenv.secrets_file({"HF_TOKEN": "x"}, "root").mode == 0o600
