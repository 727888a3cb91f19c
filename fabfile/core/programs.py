"""Remote programs: the shell and Python programs gpufab sends to nodes, kept as files.

They live in `templates/remote/` (shipped in the wheel with the other templates).
A shell program is sent as the text `text(name, **values)` returns: its values
first, one `name='quoted value'` assignment each (quoted with `shlex.quote`:
never spliced into the code), then the functions of `templates/remote/lib.sh`
it calls (and those they call), then the program. Arguments that vary per call
stay positional (`Remote.script(text, *args)`), as before; a program that would only call
one library function is that function, sent by `call` (or, one line of code, spliced whole into a
command that must stay one line, by `inline`). A Python program
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

#: Each program as it was last made by `text` (what the code sends), and each library function as `call`
#: last sent it (`gpu_count()`): the unit tests check these.
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
def _shell(body: str, values: Tuple[Tuple[str, str], ...]) -> str:
    functions = dict(library())
    parts = [f"{k}={quote_value(v)}\n" for k, v in values]
    parts += [functions[n] for n in needed(body)]
    return "".join(parts) + body


def _values(values: Dict[str, Any]) -> Tuple[Tuple[str, str], ...]:
    for key in values:
        if not _NAME_RE.match(key):
            raise ValueError(f"not a shell variable name: {key!r}")
    return tuple((k, str(v)) for k, v in values.items())


def text(name: str, **values: Any) -> str:
    """The program `name` as it is sent: values assigned first, the library functions it uses, then its body."""
    checked = _values(values)
    if name.endswith(".py"):
        if values:
            raise ValueError("a Python program takes its inputs in argv")
        RENDERED[name] = source(name)
    else:
        RENDERED[name] = _shell(source(name), checked)
    return RENDERED[name]


def call(function: str, *words: str, **values: Any) -> str:
    """A library function sent as a program of its own (no file that only calls it): the values assigned
    as `text` assigns them, then the functions it needs, then the call. Its arguments: `words` (quoted),
    then the values in their order (`call("gpu_count", smi_timeout=20)` ends `gpu_count "$smi_timeout"`).
    Nothing ends the call line, so that a command can go on after it (`; export ...`)."""
    if function not in dict(library()):
        raise ValueError(f"no function {function!r} in {LIBRARY}")
    line = " ".join([function, *map(quote_value, words), *(f'"${k}"' for k in values)])
    RENDERED[f"{function}()"] = _shell(line, _values(values))
    return RENDERED[f"{function}()"]


def inline(function: str) -> str:
    """A one-line library function's code, for a command that must stay one line: a job's command line,
    which `ps` and run.list show whole, where the function's definition would break it in lines."""
    body = dict(library())[function]
    code = [line.strip() for line in body.splitlines()[1:-1] if line.strip() and not line.strip().startswith("#")]
    if len(code) != 1 or re.search(r"\$\{?[0-9@#*]", code[0]):
        raise ValueError(f"{function} is not one line of code without arguments: send it with `text` or `call`")
    return code[0]


def names() -> Dict[str, str]:
    """Every file of `templates/remote/`: name -> kind (`sh`, `py` or `lib`)."""
    out: Dict[str, str] = {}
    for path in sorted(DIRECTORY.iterdir()):
        out[path.name] = "lib" if path.name == LIBRARY else path.suffix.lstrip(".")
    return out
