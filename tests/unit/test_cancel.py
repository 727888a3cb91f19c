"""core.cancel's END_SCRIPT on this machine: a fake sshd, its session shell, the tagged tree."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from fabfile.core import cancel


def _alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


@pytest.fixture
def session(tmp_path):
    """`sshd` (a copy of sh, so its comm is sshd) runs a session shell with one tagged command."""
    sshd = tmp_path / "sshd"
    shutil.copy("/bin/sh", sshd)
    command = cancel.tagged(
        "sleep 7301 & sh -c 'sleep 7302; true' & setsid -f sleep 7303 </dev/null >/dev/null 2>&1; wait", "abc123.7")
    proc = subprocess.Popen([str(sshd), "-c", f"sh -c {command!r} & wait"])
    deadline = time.monotonic() + 5
    while not all(_alive(f"sleep {n}") for n in (7301, 7302, 7303)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield proc
    subprocess.run(["pkill", "-f", "sleep 730[123]"])
    proc.wait(timeout=5)


def end(tag: str) -> str:
    return subprocess.run(["sh", "-c", cancel.END_SCRIPT, "gpufab", tag], capture_output=True, text=True,
                          timeout=10).stdout.strip()


def test_another_commands_tag_ends_nothing(session):
    assert end("abc123.70") == "0" and end("abc123.7.") == "0" and end("ffff.") == "0"
    assert all(_alive(f"sleep {n}") for n in (7301, 7302, 7303))


@pytest.mark.parametrize("tag", ["abc123.7", "abc123."])
def test_the_commands_tree_ends_and_a_daemon_it_started_stays(session, tag):
    assert int(end(tag)) >= 3  # the session shell, its sleeps, the inner sh
    assert not _alive("sleep 7301") and not _alive("sleep 7302")
    assert _alive("sleep 7303")  # double-forked away on purpose: not the command's to end


def test_a_tag_is_checked_before_it_reaches_a_shell():
    with pytest.raises(ValueError):
        cancel.end_command(None, "abc; reboot", is_root=True, password=None)


def test_tags_are_unique_within_a_run_and_share_its_prefix():
    tags = cancel.Tags()
    first, second = tags.next(), tags.next()
    assert first != second and first.startswith(tags.prefix) and second.startswith(tags.prefix)
    assert cancel.tagged("id", first) == f"GPUFAB_RUN={first}; export GPUFAB_RUN; id"


def test_setup_commands_and_fact_reads_are_bounded_even_when_the_user_set_no_timeout():
    from fabfile.core.connection import DEFAULT_STEP_TIMEOUT, FACT_TIMEOUT, Session
    from fabfile.core.inventory import Inventory, Node
    from fabfile.core.steps import remote_for

    inv = Inventory(nodes=(Node("n1", "10.0.0.1", None),))
    unset = Session(inv)
    assert unset.command_timeout is None  # `exec` and `launch` run what the user asked, for as long as it takes
    assert remote_for(unset, inv.nodes[0]).timeout == DEFAULT_STEP_TIMEOUT == 1800
    assert unset.fact_timeout == FACT_TIMEOUT == 60
    tight = Session(inv, command_timeout=5)
    assert remote_for(tight, inv.nodes[0]).timeout == 5 and tight.fact_timeout == 5
    assert Session(inv, command_timeout=7200).fact_timeout == 60
