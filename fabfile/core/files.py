"""Files gpufab manages on nodes: rendered from `templates/`, compared, diffed.

Pure planning: which files a step wants, what is on the host now (read by
`remote.read_state`), and therefore which must be written or re-permissioned.
Secret files are compared by digest and never shown, not even in a diff.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import InputError
from .declared import owns

_PACKAGE = Path(__file__).resolve().parents[1]
#: In a wheel the templates sit inside the package; in the repository, at its top.
TEMPLATES = next((p for p in (_PACKAGE / "templates", _PACKAGE.parent / "templates") if p.is_dir()),
                 _PACKAGE.parent / "templates")

#: Previous versions of managed files are kept here, under their own path.
BACKUP_DIR = "/var/backups/gpufab"
#: The node's own version of a file from before gpufab first wrote it, or `<path>.gpufab-absent` (core/remote.py).
BEFORE_DIR = f"{BACKUP_DIR}/.before"
ABSENT_SUFFIX = ".gpufab-absent"

MANAGED_BEGIN = "# BEGIN gpufab managed block"
MANAGED_END = "# END gpufab managed block"

#: What a value may hold where its file has no quoting of its own (sshd_config, fstab, exports,
#: nccl.conf, a unit's ExecStart word): no space, quote, newline, `%`, `#`, `*` or shell character.
WORD_RE = re.compile(r"^[A-Za-z0-9_.:/@+=^,~-]+$")


class UnsafeValue(ValueError):
    """A value that reached a file it could change the meaning of: the parser should have refused it."""


def word_filter(value: Any) -> str:
    """`{{ x | word }}`: the value as it is, if it is one harmless word there; otherwise rendering stops."""
    text = str(value)
    if not WORD_RE.match(text):
        raise UnsafeValue(f"refusing to write {text!r} into a config file: not a plain word")
    return text


def ip_filter(value: Any) -> str:
    """`{{ x | ip }}`: one IP address, canonical, no scope id; otherwise rendering stops."""
    from .networks import strict_ip

    try:
        return str(strict_ip(value))
    except ValueError:
        raise UnsafeValue(f"refusing to write {value!r} where an IP address belongs") from None


def sh_filter(value: Any) -> str:
    """`{{ x | sh }}`: quoted for a POSIX shell (and for systemd's EnvironmentFile=, which reads the same quotes)."""
    return shlex.quote(str(value))


@functools.lru_cache(maxsize=None)
def _templates() -> Any:
    # Imported on first use: every `inv` run loads this module, few render.
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    # The second line of defence: values were checked where they were read; these are the sinks.
    env.filters.update(sh=sh_filter, ip=ip_filter, word=word_filter)
    return env


def render(template: str, **values: Any) -> str:
    """Render `templates/<template>`; a missing value is an error, not ''."""
    return _templates().get_template(template).render(**values)


def shipped(name: str) -> str:
    """`templates/<name>` as it is: a file gpufab copies to nodes without rendering (a script)."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ManagedFile:
    """A whole file gpufab owns on a node, and how it must look."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    #: Never read back, printed or diffed: compared by SHA-256 only.
    secret: bool = False

    @property
    def digest(self) -> str:
        return sha256(self.content)


@dataclass(frozen=True)
class FileState:
    """A file as found on a node: content (or digest for secrets) and ownership."""

    path: str
    exists: bool
    content: Optional[str] = None
    digest: Optional[str] = None
    mode: Optional[int] = None
    owner: Optional[str] = None
    group: Optional[str] = None


@dataclass(frozen=True)
class FileChange:
    file: ManagedFile
    #: "create", "update" (content differs) or "perms" (only mode/owner differ).
    kind: str
    old: Optional[str] = None

    def describe(self) -> str:
        verb = {"create": "created", "update": "updated", "perms": "fixed mode/owner of"}[self.kind]
        return f"{verb} {self.file.path}"

    def diff(self) -> str:
        """Unified diff old -> new; a secret file shows *** instead of values."""
        if self.kind == "perms":
            return f"mode/owner of {self.file.path} -> {self.file.mode:04o} {self.file.owner}:{self.file.group}\n"
        if self.file.secret:
            return f"--- {self.file.path}\n+++ {self.file.path}\n@@ secret content not shown @@\n+***\n"
        old = (self.old or "").splitlines(keepends=True)
        new = self.file.content.splitlines(keepends=True)
        src = self.file.path if self.kind == "update" else "/dev/null"
        return "".join(difflib.unified_diff(old, new, src, self.file.path))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_files(wanted: Sequence[ManagedFile], found: Dict[str, FileState]) -> List[FileChange]:
    """The files that must be written (or re-permissioned) to match `wanted`."""
    changes: List[FileChange] = []
    for file in wanted:
        state = found.get(file.path)
        if state is None or not state.exists:
            changes.append(FileChange(file, "create"))
            continue
        same = state.digest == file.digest if file.secret else state.content == file.content
        if not same:
            changes.append(FileChange(file, "update", None if file.secret else state.content))
        elif (state.mode, state.owner, state.group) != (file.mode, file.owner, file.group):
            changes.append(FileChange(file, "perms"))
    return changes


def replace_block(existing: str, block: str, path: str, begin: str = MANAGED_BEGIN, end: str = MANAGED_END,
                  first: bool = False) -> str:
    """`existing` with gpufab's marked block replaced by `block`, or added when absent.

    For files gpufab shares with people and other tools (~/.ssh/config,
    /etc/fstab): everything outside the markers is kept byte for byte, so a
    re-run never duplicates a line, and removing the block gives back the file
    it was added to. `block` includes its marker lines; an empty one removes
    the block. A new block is appended, or put `first` where the first match
    wins (ssh_config). A damaged block is an error, never guessed at.
    """
    start = existing.find(begin)
    if start == -1:
        if not block:
            return existing
        if first:
            return block + ("\n" + existing if existing else "")
        if existing and not existing.endswith("\n"):
            existing += "\n"
        sep = "\n" if existing.strip() else ""
        return existing + sep + block
    stop = existing.find(end, start)
    if stop == -1:
        line = existing.count("\n", 0, start) + 1
        raise InputError("managed block has a BEGIN marker but no END marker; fix it by hand", path=path, line=line)
    if existing.find(begin, start + 1) != -1:
        line = existing.count("\n", 0, existing.find(begin, start + 1)) + 1
        raise InputError("two gpufab managed blocks; remove one by hand", path=path, line=line)
    stop += len(end)
    if existing[stop:stop + 1] == "\n":
        stop += 1
    before, after = existing[:start], existing[stop:]
    if not block and before.endswith("\n\n") and before.strip():
        before = before[:-1]  # the blank line put before the block when it was appended
    elif not block and not before and after.startswith("\n"):
        after = after[1:]  # the blank line put after the block when it was put first
    return before + block + after


def split_managed_block(text: str, begin: str = MANAGED_BEGIN, end: str = MANAGED_END) -> Tuple[List[str], List[str]]:
    """(the lines inside gpufab's block, the lines outside it), markers left out."""
    inside_lines: List[str] = []
    outside_lines: List[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(begin):
            inside = True
        elif line.startswith(end):
            inside = False
        else:
            (inside_lines if inside else outside_lines).append(line)
    return inside_lines, outside_lines


def outside_managed_block(text: str, begin: str = MANAGED_BEGIN, end: str = MANAGED_END) -> List[str]:
    """The lines of `text` that gpufab does not manage."""
    return split_managed_block(text, begin, end)[1]


OWNED = owns("core.files", trees=(BACKUP_DIR,), parents=("/etc/gpufab", "/var/lib/gpufab"))
