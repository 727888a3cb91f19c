"""Long-running commands that outlive the SSH session, and finding them again to stop them.

systemd-run makes the command a transient unit: it survives the session,
shows in `systemctl`, and its output goes to a log file. Hosts without
systemd get `nohup setsid` instead. `run.kill` lists what matches before
anything is killed, and kills only those PIDs (re-checked, in case a PID
was reused in between).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import List

from ..core import programs
from ..core.errors import HostError, InputError
from ..core.facts import parse_facts
from ..core.remote import Remote, last_line
from ..core.steps import Outcome

UNIT_PREFIX = "gpufab-run-"

#: Root runs it; $1 name, $2 log, $3 user, $4 command. Prints how=... and log=...
#: Root never opens the log: it is made and opened by the job itself, as the user (a link the user
#: planted at ~/train.log -> /etc/shadow then gets the user's own permissions, not root's). systemd
#: would open StandardOutput= files as root, so the job's shell redirects its own output instead.
#: The job's own shell loads netenv first: the library's load_netenv, its one line given as `netenv`.
START_SCRIPT = programs.text("detached-start.sh", netenv=programs.inline("load_netenv"))

#: $1 pattern. Prints `PID COMMAND` per match; the listing shell and its
#: ancestors (sudo, the SSH session) carry the pattern too and are left out,
#: as are processes already gone (the $(...) subshell).
LIST_SCRIPT = programs.text("detached-list.sh")

#: $1 signal, $2 pattern, then PIDs. Kills each PID still matching; reports each.
KILL_SCRIPT = programs.text("detached-kill.sh")

SIGNALS = ("TERM", "INT", "HUP", "KILL", "QUIT", "USR1", "USR2")


@dataclass(frozen=True)
class Match:
    pid: int
    command: str


def job_name(command: str, stamp: str) -> str:
    """The same unit name on every host of one run: `gpufab-run-20261121-073501-1a2b3c`."""
    return f"{UNIT_PREFIX}{stamp}-{hashlib.sha256(command.encode()).hexdigest()[:6]}"


def check_signal(value: str) -> str:
    name = value.upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise InputError(f"unknown signal {value!r} (one of {', '.join(SIGNALS)})", path="--signal")
    return name


def check_log(value: str) -> str:
    """`--log FILE`: a path (relative to the user's home, or absolute) without `..` or control characters."""
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise InputError(f"invalid log path {value!r}", path="--log")
    if ".." in value.split("/"):
        raise InputError(f"a log path may not climb with '..': {value!r}", path="--log")
    return value


def check_pattern(pattern: str) -> str:
    if not pattern.strip():
        raise InputError("an empty pattern would match every process", path="PATTERN")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InputError(f"invalid pattern {pattern!r}: {exc}", path="PATTERN") from None
    return pattern


def parse_matches(text: str) -> List[Match]:
    out = []
    for line in text.splitlines():
        pid, _, command = line.partition(" ")
        if pid.isdigit():
            out.append(Match(int(pid), command.strip()))
    return out


def parse_kill(text: str) -> "tuple[List[int], List[int], List[int]]":
    """(signalled, gone, still alive) PIDs from KILL_SCRIPT's output."""
    found: dict = {"signalled": [], "gone": [], "alive": []}
    for line in text.splitlines():
        word, _, pid = line.partition(" ")
        if word in found and pid.isdigit():
            found[word].append(int(pid))
    return found["signalled"], found["gone"], found["alive"]


# --------------------------------------------------------------------------- on the nodes


def start_detached(remote: Remote, name: str, log: str, command: str) -> Outcome:
    result = remote.script(START_SCRIPT, name, log, remote.user, command, sudo=True, warn=True)
    if result.exited != 0:
        raise HostError(f"could not start it: {last_line(result.stderr or result.stdout)}")
    facts = parse_facts(result.stdout)
    return Outcome([f"started ({facts.get('how')})"], [], facts.get("log"))


def list_matches(remote: Remote, pattern: str) -> Outcome:
    result = remote.script(LIST_SCRIPT, pattern, sudo=True, warn=True)
    if result.exited != 0:
        # pgrep's regex is POSIX ERE: `(?i)x` or `\d` pass Python's check but not pgrep's.
        raise HostError(f"pgrep rejected the pattern {pattern!r} (a POSIX extended regex): "
                        f"{last_line(result.stderr) or 'exit ' + str(result.exited)}")
    return Outcome([], [], parse_matches(result.stdout))


def kill_matches(remote: Remote, signal: str, pattern: str, pids: List[int]) -> Outcome:
    out = remote.script(KILL_SCRIPT, signal, pattern, *map(str, pids), sudo=True).stdout
    signalled, gone, alive = parse_kill(out)
    if alive:
        raise HostError(f"still running after SIG{signal}: {', '.join(map(str, alive))} (try --signal KILL)")
    return Outcome([f"SIG{signal} to {len(signalled)} processes"] if signalled else [], [])
