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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from .errors import InputError

#: Where a setting may be given.
CLUSTER = "cluster"  # the inventory's `vars:`, or `gpufab:` in a config file
NODE = "node"  # a node's own `vars:`
CONFIG = "config"  # `gpufab:` in a config file (or its GPUFAB_* variable) only

_PLACES = {CLUSTER: "the inventory's vars", NODE: "a node's vars", CONFIG: "a config file's gpufab: section"}


#: Characters no free inventory value may hold (core.inventory.check_value refuses them: values reach shells).
_NO_SHELL_META = "^[^;&|$`<>(){}\\[\\]\\\\'\"*?!\n\r\t]*$"


@dataclass(frozen=True)
class Kind:
    """What values a setting takes, as JSON Schema: the inventory's schema for editors is made of these.

    A kind admits the spellings the setting's reader takes (a port as 8741 or "8741"); every value it
    admits, the reader takes: tests/unit/test_inventory_schema.py draws values from each kind and holds
    the setting's declared `check` to them.
    """

    name: str
    schema: Mapping[str, Any]


def _either(*schemas: Mapping[str, Any]) -> Dict[str, Any]:
    return {"anyOf": list(schemas)}


_SAFE = "[^;&|$`<>(){}\\[\\]\\\\'\"*?!\\s]"


def whole(minimum: int = 1, maximum: Optional[int] = None, name: str = "") -> Kind:
    """A whole number from `minimum` (to `maximum`): YAML's integer, or (unbounded above) its digits."""
    bounds: Dict[str, Any] = {"minimum": minimum, **({"maximum": maximum} if maximum is not None else {})}
    number = {"type": "integer", **bounds}
    label = name or (f"whole number {minimum}..{maximum}" if maximum is not None else f"whole number from {minimum}")
    if maximum is not None or minimum > 1:
        return Kind(label, number)
    return Kind(label, _either(number, {"type": "string", "pattern": "^[0-9]+$" if minimum == 0 else "^0*[1-9][0-9]*$"}))


def choice(*values: str) -> Kind:
    return Kind(" or ".join([", ".join(values[:-1]), values[-1]] if len(values) > 1 else values), {"enum": list(values)})


def text(pattern: str = _NO_SHELL_META, name: str = "text") -> Kind:
    return Kind(name, {"type": "string", "pattern": pattern})


def listing(item: str, name: str = "list", min_items: int = 0) -> Kind:
    """`[a, b]` or `a, b`, each item matching `item` (a regex without anchors): chain.listed and its peers."""
    return Kind(name, _either({"type": "array", "minItems": min_items,
                               "items": {"type": "string", "pattern": f"^ *(?:{item}) *$"}},
                              {"type": "string", "pattern": f"^ *(?:{item}) *(?:, *(?:{item}) *)*$"}))


TEXT = text()
_PORT_DIGITS = "^(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$"
#: 8741 or "8741".
PORT = Kind("port", _either({"type": "integer", "minimum": 1, "maximum": 65535},
                            {"type": "string", "pattern": _PORT_DIGITS}))
COUNT = whole(0, name="count")
POSITIVE = Kind("positive number", _either(
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "string", "pattern": "^(?:[0-9]*[1-9][0-9]*(?:\\.[0-9]+)?|[0-9]+\\.[0-9]*[1-9][0-9]*)$"}))
#: YAML's booleans, or text (`off`, `no`, `false`, `0`, `none`: off): core.cluster.switch.
SWITCH = Kind("true or false", _either({"type": "boolean"}, {"type": "integer"}, TEXT.schema))
NAMES = listing(f"{_SAFE}+", "list")
ABSOLUTE_PATH = text(f"^/{_SAFE}*$", "absolute path")
URL = text("^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+=,:@/-]*)?$",
           "http(s) URL")
#: Written as text: YAML reads `2.10` as the number 2.1.
VERSION = text("^[0-9][0-9A-Za-z.+]*$", "version")


@dataclass(frozen=True)
class Setting:
    name: str
    doc: str
    #: As the reference shows it ("65536", "Ray's own"); empty: none.
    default: str = ""
    where: Tuple[str, ...] = (CLUSTER,)
    owner: str = ""
    kind: Kind = TEXT
    #: The reader's own check of one value (raises InputError), where it stands alone: the schema's test.
    check: Optional[Callable[[Any], Any]] = field(default=None, compare=False)


_DECLARED: Dict[str, Setting] = {}
#: Packages whose modules declare settings, imported whole before the first check (task modules import
#: their steps lazily, so that `--list` stays fast: what has been imported so far is not all there is).
_SOURCES: List[str] = []
_LOADED: List[str] = []
#: place -> the names read there, made on first use (every key of every vars mapping asks).
_ALLOWED: Dict[str, FrozenSet[str]] = {}
#: An inventory section a step reads itself ("steps", "docker.containers") -> (owner, its items' JSON Schema).
_SECTIONS: Dict[str, Tuple[str, Mapping[str, Any]]] = {}


def declared_in(package: str) -> None:
    """Settings are declared by the modules of `package` (gpufab's own: gpufab.ops, or fabfile.ops in a clone)."""
    if package not in _SOURCES:
        _SOURCES.append(package)


def _load() -> None:
    for package in _SOURCES:
        if package in _LOADED:
            continue
        root = importlib.import_module(package)
        # Subpackages too: the steps' shared layer (ops/shared) and a step's own package (ops/storage).
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            importlib.import_module(info.name)
        _LOADED.append(package)


def declare(owner: str, *settings: Setting) -> Tuple[Setting, ...]:
    """Record a module's settings; one name has one owner (two declaring it would disagree some day)."""
    out = []
    for s in settings:
        s = replace(s, owner=owner)
        held = _DECLARED.get(s.name)
        if held is not None and held != s:
            raise RuntimeError(f"setting {s.name!r} is declared by {held.owner} and by {owner}")
        _DECLARED[s.name] = s
        _ALLOWED.clear()
        out.append(s)
    return tuple(out)


@dataclass(frozen=True)
class Owned:
    """What a module's step leaves on a node: `reset` takes away what every module declares, so a step's
    new file needs no second list (a file nobody declared stayed behind after reset, found only on a
    lab host: the memlock limits file did)."""

    owner: str = ""
    #: Files written whole: removed, or put back as the node had them before gpufab.
    files: Tuple[str, ...] = ()
    #: systemd units whose unit file is among `files`: stopped and disabled before it goes.
    units: Tuple[str, ...] = ()
    #: Units without a file (systemd-run): stopped.
    transient: Tuple[str, ...] = ()
    #: Trees that hold nothing but gpufab's: removed whole.
    trees: Tuple[str, ...] = ()
    #: Directories made for `files`: removed when that leaves them empty.
    parents: Tuple[str, ...] = ()
    #: Paths under the SSH user's home (and root's): removed.
    home: Tuple[str, ...] = ()
    #: Files that reset hands to the step's own undo (a block in a shared file, a merged JSON, an apt
    #: source that goes with its packages), or that the step's own removal takes: not removed whole.
    undone_by_step: Tuple[str, ...] = ()
    #: Apt sources that go with their package when `reset --packages` purges it.
    sources: Tuple["AptSource", ...] = ()
    #: What the node still holds of a whole file once it is gone (an export, firewall rules): withdrawn.
    withdrawn: Tuple["Withdrawal", ...] = ()


@dataclass(frozen=True)
class AptSource:
    """An apt repository a step added for `package`: its source list and keyring go when the package is purged."""

    package: str
    #: Whose, for the line that says so ("Docker's").
    whose: str
    files: Tuple[str, ...]


@dataclass(frozen=True)
class Withdrawal:
    """A command that takes back what a whole file set going (the kernel's export table, nft's rules):
    run by reset after the file is removed, where the node had it as gpufab's."""

    file: str
    what: str
    command: str
    #: A command the node must have for it (`exportfs`); empty: none.
    needs: str = ""


@dataclass(frozen=True)
class Undo:
    """What reset does for a module beyond taking its declared files away (Ray stopped, the share
    unmounted, daemon.json's keys merged out): registered by the module that set it up (`undoes`), so
    reset runs every module's in order and knows no step by name."""

    #: 1: on every node at once before phase 2 starts anywhere (Ray stopped, a worker's share unmounted
    #: while the head still serves it); 2: the rest. A node that fails phase 1 keeps everything.
    phase: int
    #: Its place in its phase, lower first (reset's own work sits at 40, 80 and 90 of phase 2).
    order: int
    #: (remote, what `settings` read) -> core.steps.Outcome; a HostError fails the node with the changes so far.
    run: Callable[[Any, Any], Any]
    #: (config, inventory, the CLI's values) -> what `run` needs, read as the owning step reads it.
    settings: Callable[[Any, Any, Mapping[str, Any]], Any] = lambda config, inv, cli: None
    #: Runs on the head only (True), the workers only (False), or every node (None).
    head: Optional[bool] = None
    #: The module that registered it (set by `undoes`).
    owner: str = ""


_OWNED: Dict[str, Owned] = {}
_UNDOS: Dict[str, Tuple[Undo, ...]] = {}


def undoes(owner: str, *undo: Undo) -> Tuple[Undo, ...]:
    """Record what module `owner` undoes on reset, beyond its files (see Undo)."""
    held = tuple(replace(u, owner=owner) for u in undo)
    _UNDOS[owner] = held
    return held


def undos() -> List[Undo]:
    """Every module's undo, in the order reset runs them: by phase, then order."""
    _load()
    return sorted((u for owner in sorted(_UNDOS) for u in _UNDOS[owner]), key=lambda u: (u.phase, u.order))


def owns(owner: str, **what: Tuple[Any, ...]) -> Owned:
    """Record what module `owner` leaves on nodes (see Owned)."""
    held = Owned(owner, **what)
    _OWNED[owner] = held
    return held


def owned() -> Owned:
    """Everything every module declares, each path once, in the order of the modules' names."""
    _load()
    union: Dict[str, Dict[str, None]] = {f: {} for f in Owned.__dataclass_fields__ if f != "owner"}
    for owner in sorted(_OWNED):
        for name, paths in union.items():
            paths.update(dict.fromkeys(getattr(_OWNED[owner], name)))
    return Owned("", **{name: tuple(paths) for name, paths in union.items()})


def owned_by(owner: str) -> Owned:
    _load()
    return _OWNED.get(owner, Owned(owner))


def declare_section(owner: str, section: str, item: Mapping[str, Any]) -> Mapping[str, Any]:
    """A list section of the inventory that step `owner` parses: the schema of one of its entries."""
    held = _SECTIONS.get(section)
    if held is not None and held[0] != owner:
        raise RuntimeError(f"inventory section {section!r} is declared by {held[0]} and by {owner}")
    _SECTIONS[section] = (owner, item)
    return item


def sections() -> Dict[str, Mapping[str, Any]]:
    """Every declared list section's entry schema, by its place in the inventory."""
    _load()
    return {name: item for name, (_, item) in sorted(_SECTIONS.items())}


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


def check_value_of(key: str, value: Any, path: Optional[str] = None, line: Optional[int] = None) -> None:
    """A declared setting's value, held to its reader's own check where the file and line are still known.

    Left to the step, `ray_port: abc` was found when Ray's step read it, naming no file; the step still
    reads it the same way (the check is its own), so a value given on the command line is checked too.
    """
    held = _DECLARED.get(key)
    if held is None or held.check is None or value is None:
        return
    try:
        held.check(value)
    except InputError as exc:
        raise InputError(f"{key}: {exc.message}", path=path, line=line) from None
    except ValueError as exc:
        raise InputError(f"{key}: {exc}", path=path, line=line) from None
    except (TypeError, AttributeError):  # a reader that takes text met a number or a list
        article = "an" if held.kind.name[:1] in "aeiou" else "a"
        raise InputError(f"{key}: {value!r} is not {article} {held.kind.name}", path=path, line=line) from None


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
        check_value_of(str(key), section[key], source(str(key)))


def reference_table() -> str:
    """docs/settings.md's table, in Markdown, from the declarations."""
    rows = ["| Setting | Where | Takes | Default | What it does | Owner |", "|---|---|---|---|---|---|"]
    for s in declared():
        where = ", ".join({CLUSTER: "vars, config", NODE: "node vars", CONFIG: "config"}[w] for w in s.where)
        rows.append(f"| `{s.name}` | {where} | {s.kind.name} | {s.default or '—'} | {s.doc} "
                    f"| `{s.owner}` |")
    return "\n".join(rows) + "\n"
