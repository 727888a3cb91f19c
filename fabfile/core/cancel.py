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

TAG_VARIABLE = "GPUFAB_RUN"
_TAG_RE = re.compile(r"^[0-9a-f]+(\.[0-9]+)?$")

#: $1: the tag, or a run's tag prefix ending in a dot. Ends the trees rooted
#: at sshd's session shells that carry it: TERM, then KILL after 2 s.
#: Prints how many processes it signalled.
END_SCRIPT = r"""
tag=$1
pattern="^GPUFAB_RUN=$(printf %s "$tag" | sed 's/[.]/[.]/g')"
case $tag in *.) ;; *) pattern="$pattern\$" ;; esac
tagged=$(grep -lzE "$pattern" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
[ -n "$tagged" ] || { echo 0; exit 0; }
pids=$(ps -e -o pid=,ppid=,comm= | awk -v tagged="$tagged" -v me="$$" '
  function walk(p,   k, i, n) { print p; n = split(kids[p], k, " "); for (i = 1; i <= n; i++) walk(k[i]) }
  BEGIN { n = split(tagged, t, "[ \n]+"); for (i = 1; i <= n; i++) if (t[i] != "") tag[t[i]] = 1 }
  { parent[$1] = $2; comm[$1] = $3; kids[$2] = kids[$2] " " $1 }
  END {
    for (p in tag) {
      if (p == me) continue
      if (comm[parent[p]] ~ /^sshd/) walk(p)
      else if (!(parent[p] in tag) && comm[parent[parent[p]]] ~ /^sshd/) root[parent[p]] = 1
    }
    for (p in root) walk(p)
  }')
[ -n "$pids" ] || { echo 0; exit 0; }
kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt 20 ] && kill -0 $pids 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -KILL $pids 2>/dev/null
echo $pids | wc -w
"""


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
