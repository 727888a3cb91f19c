"""Ending on the node what gpufab started there, when the run is stopped or a command times out.

Closing an SSH channel does not end its command: without a pty, sshd sends
no hangup, so `apt-get install` or `sleep 120` goes on after Ctrl-C or after
a timeout gave up on it. Every command gpufab starts therefore carries a tag
in its environment (`GPUFAB_RUN=<run>.<n>`, exported first, so every process
the login shell starts has it). Ending it means: find the login shells sshd
started whose processes carry that tag, and end each one's whole process tree, the processes run under sudo
included. A daemon the command started on purpose (it double-forked away,
or systemd started it) is not in that tree and keeps running.
"""

from __future__ import annotations

import itertools
import re
import secrets
import shlex
import socket
from typing import Any, Optional

from . import programs

TAG_VARIABLE = "GPUFAB_RUN"
_TAG_RE = re.compile(r"^[0-9a-f]+(\.[0-9]+)?$")

#: $1: the tag, or a run's tag prefix ending in a dot. Ends the trees rooted
#: at sshd's session shells that carry it: TERM, then KILL after 2 s.
#: Prints how many processes it signalled.
END_SCRIPT = programs.text("end-tagged.sh")


class Tags:
    """One run's tags: `<run>.<n>`, a new n for every command."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.run}.{next(self._counter)}"

    @property
    def prefix(self) -> str:
        return f"{self.run}."


def tagged(command: str, tag: str) -> str:
    """`command` with the tag in its environment (a POSIX login shell is assumed, as Fabric does)."""
    return f"{TAG_VARIABLE}={tag}; export {TAG_VARIABLE}; {command}"


def end_command(transport: Any, tag: str, *, is_root: bool, password: Optional[str],
                timeout: float = 4.0) -> Optional[int]:
    """End the processes of `tag` (one command's, or a run's prefix) over a new channel of `transport`.

    As root where possible: sudo'd processes are root's. Returns how many
    processes were signalled, or None when it could not be done in time.
    """
    if not _TAG_RE.match(tag.rstrip(".")):
        raise ValueError(f"not a gpufab tag: {tag!r}")
    script = f"sh -c {shlex.quote(END_SCRIPT)} gpufab {shlex.quote(tag)}"
    if is_root:
        command, stdin = script, b""
    elif password is not None:
        command, stdin = f"sudo -S -p '' {script} 2>/dev/null || {script}", (password + "\n").encode()
    else:
        command, stdin = f"sudo -n {script} 2>/dev/null || {script}", b""
    try:
        channel = transport.open_session(timeout=timeout)
    except Exception:  # noqa: BLE001 - a dead link has nothing left to end
        return None
    try:
        channel.settimeout(timeout)
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out = channel.makefile("rb").read().decode("utf-8", "replace").split()
        return int(out[-1]) if out and out[-1].isdigit() else None
    except (socket.timeout, OSError, EOFError):
        return None
    except Exception:  # noqa: BLE001 - best effort: the run is stopping anyway
        return None
    finally:
        channel.close()
