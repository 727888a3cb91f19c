"""Remote programs: the shell and Python programs gpufab sends to nodes, kept as files.

They live in `templates/remote/` (shipped in the wheel with the other templates).
A shell program is sent as the text `text(name, **values)` returns: its values
first, one `name='quoted value'` assignment each (quoted with `shlex.quote`:
never spliced into the code), then the functions of `templates/remote/lib.sh`
it calls (and those they call), then the program. Arguments that vary per call
stay positional (`Remote.script(text, *args)`), as before. A Python program
(`*.py`) is sent as it is (`python3 -c <text> args...`), its inputs in argv.

Nothing here loads Jinja2: a program is read, not rendered, so that importing a
step stays cheap.
"""

from __future__ import annotations

import functools
import re
import shlex
from typing import Any, Dict, List, Tuple

from .files import TEMPLATES

#: The directory of the programs, inside `templates/`.
DIRECTORY = TEMPLATES / "remote"
#: The shell library: functions that more than one program uses.
LIBRARY = "lib.sh"

#: Each program as it was last made by `text` (what the code sends): the unit tests check these.
RENDERED: Dict[str, str] = {}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_FUNCTION_RE = re.compile(r"^([a-z_][a-z0-9_]*)\(\) *\{", re.M)


@functools.lru_cache(maxsize=None)
def source(name: str) -> str:
    """`templates/remote/<name>` as it is on disk."""
    return (DIRECTORY / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def library() -> Tuple[Tuple[str, str], ...]:
    """lib.sh's functions, in its order: (name, definition with the comment lines just above it)."""
    text = source(LIBRARY)
    starts = [m.start() for m in _FUNCTION_RE.finditer(text)] + [len(text)]
    found: List[Tuple[str, str]] = []
    for start, end in zip(starts, starts[1:]):
        chunk = text[start:end]
        match = _FUNCTION_RE.match(chunk)
        assert match is not None
        # A function ends at the first line that is a lone `}`; what follows (the next one's comments) is not its.
        body = chunk[:chunk.index("\n}\n") + 3] if "\n}\n" in chunk else chunk
        found.append((match.group(1), body))
    return tuple(found)


def _calls(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w$-]){re.escape(name)}(?![\w(-])", text) is not None


def needed(body: str) -> List[str]:
    """The library functions `body` calls, with those they call, in the library's order."""
    functions = dict(library())
    wanted = {n for n in functions if _calls(body, n)}
    while True:
        more = {n for n in functions if n not in wanted and any(_calls(functions[w], n) for w in wanted)}
        if not more:
            break
        wanted |= more
    return [n for n, _ in library() if n in wanted]


def quote_value(value: Any) -> str:
    return shlex.quote(str(value))


@functools.lru_cache(maxsize=None)
def _shell(name: str, values: Tuple[Tuple[str, str], ...]) -> str:
    body = source(name)
    functions = dict(library())
    parts = [f"{k}={quote_value(v)}\n" for k, v in values]
    parts += [functions[n] for n in needed(body)]
    return "".join(parts) + body


def text(name: str, **values: Any) -> str:
    """The program `name` as it is sent: values assigned first, the library functions it uses, then its body."""
    for key in values:
        if not _NAME_RE.match(key):
            raise ValueError(f"not a shell variable name: {key!r}")
    if name.endswith(".py"):
        if values:
            raise ValueError("a Python program takes its inputs in argv")
        RENDERED[name] = source(name)
    else:
        RENDERED[name] = _shell(name, tuple((k, str(v)) for k, v in values.items()))
    return RENDERED[name]


def names() -> Dict[str, str]:
    """Every file of `templates/remote/`: name -> kind (`sh`, `py` or `lib`)."""
    out: Dict[str, str] = {}
    for path in sorted(DIRECTORY.iterdir()):
        out[path.name] = "lib" if path.name == LIBRARY else path.suffix.lstrip(".")
    return out
