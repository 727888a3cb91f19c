"""The settings gpufab reads, each declared once by the module that owns it.

A name nobody declares is one nobody reads: `ray_verison: 2.9.0` left Ray on its
default without a word. With every name declared where it is read, an unknown
key in the inventory's `vars`, a node's `vars` or the `gpufab:` section of a
config file is an error that names the nearest known one, and the reference
table in docs/settings.md is generated from the same declarations.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from .errors import InputError

#: Where a setting may be given.
CLUSTER = "cluster"  # the inventory's `vars:`, or `gpufab:` in a config file
NODE = "node"  # a node's own `vars:`
CONFIG = "config"  # `gpufab:` in a config file (or its GPUFAB_* variable) only

_PLACES = {CLUSTER: "the inventory's vars", NODE: "a node's vars", CONFIG: "a config file's gpufab: section"}


@dataclass(frozen=True)
class Setting:
    name: str
    doc: str
    #: As the reference shows it ("65536", "Ray's own"); empty: none.
    default: str = ""
    where: Tuple[str, ...] = (CLUSTER,)
    owner: str = ""


_DECLARED: Dict[str, Setting] = {}
#: Packages whose modules declare settings, imported whole before the first check (task modules import
#: their steps lazily, so that `--list` stays fast: what has been imported so far is not all there is).
_SOURCES: List[str] = []
_LOADED: List[str] = []
#: place -> the names read there, made on first use (every key of every vars mapping asks).
_ALLOWED: Dict[str, FrozenSet[str]] = {}


def declared_in(package: str) -> None:
    """Settings are declared by the modules of `package` (gpufab's own: gpufab.ops, or fabfile.ops in a clone)."""
    if package not in _SOURCES:
        _SOURCES.append(package)


def _load() -> None:
    for package in _SOURCES:
        if package in _LOADED:
            continue
        root = importlib.import_module(package)
        for info in pkgutil.iter_modules(root.__path__):
            importlib.import_module(f"{package}.{info.name}")
        _LOADED.append(package)


def declare(owner: str, *settings: Setting) -> Tuple[Setting, ...]:
    """Record a module's settings; one name has one owner (two declaring it would disagree some day)."""
    out = []
    for s in settings:
        s = Setting(s.name, s.doc, s.default, s.where, owner)
        held = _DECLARED.get(s.name)
        if held is not None and held != s:
            raise RuntimeError(f"setting {s.name!r} is declared by {held.owner} and by {owner}")
        _DECLARED[s.name] = s
        _ALLOWED.clear()
        out.append(s)
    return tuple(out)


def declared() -> Tuple[Setting, ...]:
    """Every declared setting, by name."""
    _load()
    return tuple(sorted(_DECLARED.values(), key=lambda s: s.name))


def _allowed(place: str) -> FrozenSet[str]:
    _load()
    if place not in _ALLOWED:
        places = {place, CLUSTER} if place == CONFIG else {place}  # a config file holds the cluster's settings too
        _ALLOWED[place] = frozenset(n for n, s in _DECLARED.items() if places & set(s.where))
    return _ALLOWED[place]


def check_names(keys: Iterable[Any], place: str, path: Optional[str] = None,
                line_of: Callable[[Any], Optional[int]] = lambda key: None) -> None:
    """Every key of `vars` (place CLUSTER or NODE) or of a `gpufab:` section (CONFIG) is a setting read there."""
    allowed = _allowed(place)
    for key in keys:
        if key in allowed:
            continue
        held = _DECLARED.get(key) if isinstance(key, str) else None
        if held is not None:
            elsewhere = " or ".join(_PLACES[w] for w in held.where)
            raise InputError(f"setting {key!r} is not read from {_PLACES[place]}: give it in {elsewhere}",
                             path=path, line=line_of(key))
        raise InputError(f"unknown setting {key!r} in {_PLACES[place]}{suggestion(str(key), allowed)}",
                         path=path, line=line_of(key))


def suggestion(key: str, known: Iterable[str]) -> str:
    """' (did you mean 'ray_version'?)' for the nearest known name, else a pointer to the reference."""
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else " (docs/settings.md lists them all)"


def check_config_section(section: Mapping[str, Any], source: Callable[[str], str]) -> None:
    """The merged `gpufab:` section of the config files: each key declared; `source(key)` names its file."""
    for key in section:
        check_names([key], CONFIG, source(str(key)))


def reference_table() -> str:
    """docs/settings.md's table, in Markdown, from the declarations."""
    rows = ["| Setting | Where | Default | What it does | Owner |", "|---|---|---|---|---|"]
    for s in declared():
        where = ", ".join({CLUSTER: "vars, config", NODE: "node vars", CONFIG: "config"}[w] for w in s.where)
        rows.append(f"| `{s.name}` | {where} | {s.default or '—'} | {s.doc} | `{s.owner}` |")
    return "\n".join(rows) + "\n"
