"""Writing files on the controller: atomically, only when content differs, with a backup."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write_if_changed(path: str, content: str, mode: int = 0o644, backup: Optional[str] = None) -> bool:
    """Write `content` to `path` via temp file + rename; True if it changed.

    An existing file whose content differs is copied to `backup` first.
    """
    old = read_text(path)
    if old == content:
        return False
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if old is not None and backup:
        shutil.copy2(path, backup)
    fd, tmp = tempfile.mkstemp(prefix=".gpufab-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True
