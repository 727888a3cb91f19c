"""Run one function on many hosts at once, bounded, and never let one host stop the rest.

Fabric's ThreadingGroup starts a thread per host with no bound and raises a
GroupException on the first failure; here a fixed-size pool runs the hosts, every
exception is turned into that host's result, and the caller gets one
`HostResult` per host in inventory order plus an exit code.
"""

from __future__ import annotations

import shlex
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Sequence, TextIO

from invoke.exceptions import AuthFailure, CommandTimedOut, UnexpectedExit
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)

from .connection import NodeConnection, Session
from .errors import EXIT_INTERRUPTED, ConnectionLost, HostError, Interrupted
from .files import UnsafeValue
from .inventory import Node

OK = "ok"
CHANGED = "changed"
FAILED = "failed"
UNREACHABLE = "unreachable"
#: The step could not do its job here and did nothing (a shared directory no backend can
#: provide): not a failure of the host, and never shown as `ok`.
SKIPPED = "skipped"

#: Exit code reported for a host that could not be reached (as ssh(1) does).
EXIT_UNREACHABLE = 255
#: Exit code reported for a command that ran past its timeout (as timeout(1) does).
EXIT_TIMEOUT = 124


@dataclass
class HostResult:
    node: Node
    status: str
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    reason: str = ""
    seconds: float = 0.0
    #: What the step changed on this host, and what it noted (the report's cell, one line each).
    changes: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: The earlier step whose failure kept this one from running here (SKIPPED), else "".
    blocked_by: str = ""
    #: What the step found or did on this host, as the step's own typed record.
    value: Any = None

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, UNREACHABLE)


#: What paramiko raises when a command starts on a connection already gone (a host powered off mid-run).
DEAD_TRANSPORT = ("SSH session not active", "Socket is closed")


def classify(exc: BaseException, connect_timeout: Optional[float] = None,
             known_hosts: Optional[str] = None) -> "tuple[str, int, str]":
    """(status, exit code, one-line reason) for an exception raised on a host."""
    if isinstance(exc, HostError):
        return FAILED, 1, exc.reason
    if isinstance(exc, UnsafeValue):
        return FAILED, 1, str(exc)
    if isinstance(exc, Interrupted):
        return FAILED, EXIT_INTERRUPTED, str(exc)
    if isinstance(exc, ConnectionLost):
        return UNREACHABLE, EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, AuthFailure):
        return FAILED, 1, "wrong sudo password"
    if isinstance(exc, UnexpectedExit):
        code = exc.result.exited
        if code == -1:  # no exit status: the channel closed under the command
            return UNREACHABLE, EXIT_UNREACHABLE, "connection lost during the command"
        return FAILED, code if code else 1, f"exit code {code}"
    if isinstance(exc, CommandTimedOut):
        return FAILED, EXIT_TIMEOUT, f"command timed out after {exc.timeout:g}s"
    if isinstance(exc, BadHostKeyException):
        # Rented addresses are reused: the usual cause is a new machine behind an old IP.
        fix = f"ssh-keygen -f {shlex.quote(known_hosts)}" if known_hosts else "ssh-keygen"
        return UNREACHABLE, EXIT_UNREACHABLE, (
            f"host key mismatch for {exc.hostname}: the host's key is not the one in known_hosts; if this address "
            f"now belongs to a new machine, forget the old key with: {fix} -R {shlex.quote(exc.hostname)}"
        )
    if isinstance(exc, AuthenticationException):
        return UNREACHABLE, EXIT_UNREACHABLE, f"SSH authentication failed ({exc})"
    if isinstance(exc, NoValidConnectionsError):
        return UNREACHABLE, EXIT_UNREACHABLE, "connection refused"
    if isinstance(exc, ConnectionRefusedError):
        return UNREACHABLE, EXIT_UNREACHABLE, "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        after = f" after {connect_timeout:g}s" if connect_timeout else ""
        return UNREACHABLE, EXIT_UNREACHABLE, f"connection timed out{after}"
    if isinstance(exc, socket.gaierror):
        return UNREACHABLE, EXIT_UNREACHABLE, f"cannot resolve host name ({exc.strerror})"
    if str(exc) in DEAD_TRANSPORT:  # paramiko, on a connection that dropped before this command
        return UNREACHABLE, EXIT_UNREACHABLE, f"connection lost ({exc})"
    if isinstance(exc, OSError):
        return UNREACHABLE, EXIT_UNREACHABLE, exc.strerror or str(exc)
    if isinstance(exc, SSHException):
        return UNREACHABLE, EXIT_UNREACHABLE, f"SSH error: {exc}"
    return FAILED, 1, f"{type(exc).__name__}: {exc}"


HostFn = Callable[[NodeConnection, Node], HostResult]


def fan_out(session: Session, nodes: Sequence[Node], fn: HostFn, *, workers: Optional[int] = None,
            on_result: Optional[Callable[[HostResult], None]] = None) -> List[HostResult]:
    """Run `fn(connection, node)` on every node with at most `workers` at once.

    Results come back in the order of `nodes`, whatever order hosts finish in;
    `on_result` sees each one as soon as its host is done (live progress).
    """
    limit = max(1, min(workers or session.workers, len(nodes) or 1))

    def one(node: Node) -> HostResult:
        start = time.monotonic()
        try:
            result = fn(session.connection(node), node)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result
            status, code, reason = classify(exc, session.connect_timeout, session.known_hosts)
            # What the command printed before failing; a sudo prompt is not that.
            partial = None if isinstance(exc, AuthFailure) else getattr(exc, "result", None)
            stdout = getattr(partial, "stdout", "") or ""
            stderr = getattr(partial, "stderr", "") or ""
            result = HostResult(node, status, code, stdout, stderr, reason)
            if isinstance(exc, HostError):
                result.changes = list(exc.changes)
                result.value = exc.value
        result.seconds = time.monotonic() - start
        # After Ctrl-C the run has ended; a host's late result is not news.
        if on_result is not None and not session.stopping.is_set():
            on_result(result)
        return result

    pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="gpufab")
    try:
        results = list(pool.map(one, nodes))
    except KeyboardInterrupt:
        # Ctrl-C reaches this thread only: stop the hosts' threads within seconds (their
        # commands return as the connections close), not when every command has ended.
        session.interrupt()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def worst_exit_code(results: Iterable[HostResult]) -> int:
    """The highest exit code of all hosts: 0 only when every host succeeded.

    A failure without a usable exit code (-1: the channel closed without one)
    still counts as 1, never as success.
    """
    return max((max(r.exit_code, 1) if r.failed else 0 for r in results), default=0)


class PrefixedStream:
    """A file-like sink that writes whole lines to `out` as `label | line`.

    Invoke's runner hands output over in arbitrary chunks from a thread per
    stream; lines from different hosts must not interleave mid-line, so lines
    are assembled per host and written under one lock shared by all hosts.
    """

    _lock = threading.Lock()

    def __init__(self, label: str, out: Optional[TextIO] = None, width: int = 0, drop: str = ""):
        self.label = label.ljust(width)
        self.out = out
        self.drop = drop  # e.g. sudo's password prompt: noise, not output
        self._partial = ""

    def write(self, data: str) -> int:
        self._partial += data
        if self.drop and self.drop in self._partial:
            self._partial = self._partial.replace(self.drop, "")
        *lines, self._partial = self._partial.split("\n")
        if lines:
            self._emit(lines)
        return len(data)

    def flush(self) -> None:
        if self._partial:
            self._emit([self._partial])
            self._partial = ""

    def _emit(self, lines: List[str]) -> None:
        out = self.out or sys.stdout
        with self._lock:
            out.write("".join(f"{self.label} | {line.rstrip(chr(13))}\n" for line in lines))
            out.flush()


def run_command(conn: NodeConnection, node: Node, command: str, *, sudo: bool = False, live: bool = True,
                width: int = 0, timeout: Optional[float] = None, password: Optional[str] = None) -> HostResult:
    """Run one command on one host; a non-zero exit is a result, not an error."""
    prompt = conn.config.sudo.prompt if sudo else ""
    out = PrefixedStream(node.name, sys.stdout, width) if live else None
    err = PrefixedStream(node.name, sys.stderr, width, drop=prompt) if live else None
    opts = dict(warn=True, hide=True if not live else None, out_stream=out, err_stream=err, timeout=timeout, in_stream=False)
    if sudo and conn.user != "root":
        # The whole command as root (`a && b`, pipes), not just its first word; no sudo for a root login.
        result = conn.sudo(f"sh -c {shlex.quote(command)}", password=password, **opts)
    else:
        result = conn.run(command, **opts)
    for stream in (out, err):
        if stream:
            stream.flush()
    stderr = result.stderr.replace(prompt, "") if prompt else result.stderr
    status = OK if result.exited == 0 else FAILED
    reason = "" if result.exited == 0 else f"exit code {result.exited}"
    return HostResult(node, status, result.exited, result.stdout, stderr, reason)
