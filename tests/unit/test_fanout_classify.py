"""A host powered off mid-run: whichever way paramiko notices, the reason says the connection was lost."""

from __future__ import annotations

import pytest
from paramiko.ssh_exception import SSHException

from fabfile.core.fanout import UNREACHABLE, classify


@pytest.mark.parametrize("exc", [SSHException("SSH session not active"), OSError("Socket is closed")])
def test_a_command_on_a_connection_already_gone_is_a_lost_connection(exc):
    status, _, reason = classify(exc)
    assert status == UNREACHABLE and reason == f"connection lost ({exc})"


def test_other_ssh_errors_keep_their_own_words():
    assert classify(SSHException("Error reading SSH protocol banner"))[2] == "SSH error: Error reading SSH protocol banner"
