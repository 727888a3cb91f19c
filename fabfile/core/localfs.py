"""Writing files on the controller: atomically, only when content differs, with a backup.

A local file that cannot be used (a directory, unreadable, not UTF-8, in a read-only
directory) is the user's to fix, so it is named in one InputError line, and every
destination of a command is checked before the first one is written: no half change.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterable, Iterator, Optional

from .errors import InputError


def read_text(path: str, what: str = "") -> Optional[str]:
    """The file's text; None when it does not exist; anything else unusable is named (as `what`, if given)."""
    subject = f"{what} " if what else ""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise InputError(f"{subject}is a directory, not a file", path=path) from None
    except UnicodeDecodeError:
        raise InputError(f"{subject}is not UTF-8 text (binary file?)", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read {subject}".rstrip() + f": {exc.strerror}", path=path) from None


def target_of(path: str) -> str:
    """Where a write really lands: a symlinked file (a dotfiles repo's ~/.ssh/config) is written through."""
    return os.path.realpath(path) if os.path.islink(path) else path


def check_destination(path: str) -> None:
    """A file to write must be a regular file or a new path: it is read first (to write only a change).

    A FIFO or a terminal (`-o /dev/stdout`) would hang that read, and a device is no file to replace.
    """
    try:
        found = os.stat(path)  # through links: /dev/stdout is one
    except OSError:
        return  # a new path, or one the caller names when it cannot write it
    if stat.S_ISDIR(found.st_mode):
        raise InputError("is a directory, not a file", path=path)
    if not stat.S_ISREG(found.st_mode):
        raise InputError("is not a regular file (a device or a pipe): give the path of a file", path=path)


def check_writable(paths: Iterable[str]) -> None:
    """Raise naming the first path that cannot be written, before any of them is."""
    for path in paths:
        check_destination(path)
        real = target_of(path)
        if os.path.exists(real) and not os.access(real, os.R_OK):
            raise InputError("cannot read: Permission denied", path=path)
        directory = os.path.dirname(os.path.abspath(real))
        while not os.path.exists(directory):  # the nearest existing parent decides
            directory = os.path.dirname(directory)
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            raise InputError(f"cannot write here: {directory} is not a writable directory", path=path)


@contextmanager
def replacing(path: str, real: Optional[str] = None, mode: Optional[int] = None) -> Iterator[BinaryIO]:
    """A file written beside `real` (default `path`) and renamed over it once whole, so a failure
    leaves nothing behind; an error names `path` as the user gave it. mkstemp's 0600 stays unless
    `mode` says otherwise."""
    real = real or path
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gpufab-", dir=os.path.dirname(os.path.abspath(real)))
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", path=path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write: {exc.strerror}", path=path) from None
        raise


def write_if_changed(path: str, content: str, mode: int = 0o644, backup: Optional[str] = None) -> bool:
    """Write `content` to `path` via temp file + rename; True if it changed.

    An existing file whose content differs is copied to `backup` first.
    """
    check_destination(path)
    old = read_text(path)
    if old == content:
        return False
    real = target_of(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(real)), exist_ok=True)
        if old is not None and backup:
            shutil.copy2(real, backup)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", path=path) from None
    with replacing(path, real, mode) as fh:
        fh.write(content.encode("utf-8"))
    return True
