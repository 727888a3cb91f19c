"""Errors that end a run with one line for the user instead of a traceback."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sys
from typing import Any, Callable, Iterator, List, Optional, TypeVar

from invoke.exceptions import Exit

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code for bad input (inventory, mapping table, options): nothing was touched.
BAD_INPUT = 2


class GpufabError(Exception):
    """A problem the user can fix; its message is the whole report."""

    def __init__(self, message: str, *, path: Optional[str] = None, line: Optional[int] = None):
        self.path = path
        self.line = line
        self.message = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class InputError(GpufabError):
    """Malformed or inconsistent input, found before anything was changed."""


def reported(func: F) -> F:
    """Turn a GpufabError raised by a task body into `Exit(msg, 2)`, and Ctrl-C into one line and 130.

    Invoke prints an Exit's message on stderr and exits with its code, so the
    user sees one line that names the problem and never a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GpufabError as exc:
            raise Exit(f"gpufab: error: {exc}", code=BAD_INPUT) from None
        except BrokenPipeError:
            # The reader of our output went away (`inv exec ... | head`): stop as `cat` would, quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt:
            # fan_out has already stopped every host's commands and closed the connections.
            raise Exit("gpufab: interrupted (Ctrl-C): no further command was started. Run it again to finish: "
                       "every step picks up from what is on the nodes.", code=EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def number_option(value: Any, option: str, kind: Callable[[str], Any] = int) -> Any:
    """A positive number given on the command line (`--workers 8`, `--timeout 2.5`); None when not given.

    Invoke hands such values over as strings; a bad one is bad input, named, never a traceback.
    `--timeout inf` is one too: no timer takes it.
    """
    if value is None or value == "":
        return None
    try:
        number = kind(str(value))
    except ValueError:
        number = None
    if number is None or not number > 0 or (isinstance(number, float) and not math.isfinite(number)):
        raise InputError(f"invalid value {value!r}: give a positive {'whole ' if kind is int else ''}number",
                         path=option)
    return number


#: `scheme://user:password@` in a URL a tool echoed (pip, uv, apt name the index they failed on).
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")


def redact(text: str) -> str:
    """`https://u:TOKEN@host/...` -> `https://***@host/...`: what a report or a log may say of a URL."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def not_blank(value: Any, where: str, message: str) -> str:
    """A positional argument that must say something (`launch ""`, `logs.tail ""`): blank runs nothing useful."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(message, path=where)
    return value


class HostError(Exception):
    """One host cannot go on with a step; `reason` is its line in the report.

    `changes` lists what the step had already done on that host, so the
    report never hides a change made before the failure. Credentials in a URL
    the reason quotes (a tool's own error line) are blanked out.
    """

    def __init__(self, reason: str, changes: Optional[List[str]] = None, value: Any = None):
        reason = redact(reason)
        super().__init__(reason)
        self.reason = reason
        self.changes = list(changes or [])
        #: The step's typed findings gathered before the failure, for the report's other columns.
        self.value = value


class ConnectionLost(Exception):
    """The host stopped answering in the middle of a command (powered off, cable out)."""


class Interrupted(Exception):
    """The user pressed Ctrl-C: this host's work stops now, not at its command's timeout."""

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C)")


#: Exit code of a run stopped by Ctrl-C, as a shell reports SIGINT.
EXIT_INTERRUPTED = 130
#: What a shell reports for a process ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


@contextlib.contextmanager
def keeping_changes(done: List[str]) -> Iterator[None]:
    """A HostError raised inside also reports `done`, the changes made before it.

    `done` is read when the error passes, so appending to it inside the block counts.
    """
    try:
        yield
    except HostError as exc:
        raise HostError(exc.reason, changes=done + exc.changes, value=exc.value) from None


def confirmed(question: str, no_terminal: Exception) -> bool:
    """Ask `question [y/N]` on the terminal; with none to ask on, raise `no_terminal` (the task says which flag skips it)."""
    if not sys.stdin.isatty():
        raise no_terminal
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
