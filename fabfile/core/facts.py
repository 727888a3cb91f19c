"""Facts about a node, gathered in one SSH round trip and parsed here; and each fact read once per run.

One shell script prints `key=value` lines; parsing is pure so it can be
tested without a host. A fact several steps need (`Fact`) is read once per
node per run and shared (`NodeFacts`): the same node asked the same question
by five steps answers it once.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Generic, Tuple, TypeVar

T = TypeVar("T")

def parse_facts(text: str) -> Dict[str, str]:
    facts: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            facts[key.strip()] = value.strip()
    return facts


def human_bytes(n: float, whole: bool = False) -> str:
    """`16.0 GiB`; with `whole`, a whole number of its unit without the decimal (`64 MiB`)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            if unit == "B" or (whole and n == int(n)):
                return f"{n:.0f} {unit}"
            return f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def human_kib(kib: str) -> str:
    try:
        return human_bytes(float(kib) * 1024)
    except ValueError:
        return "?"


class Fact(Generic[T]):
    """A fact about a node that several steps need (its GPU count, its InfiniBand ports): declared once,
    by the shared module that knows the program reading it, and read once per node per run (`NodeFacts`).

    `read(remote, *args)` reads and parses it; `args` tell apart facts of one kind (a venv's versions).
    `stale_after` names the kinds of change that can alter it (`packages`: an apt install), after which
    it is read again.
    """

    def __init__(self, name: str, read: Callable[..., T], stale_after: Tuple[str, ...] = ()):
        self.name = name
        self.read = read
        self.stale_after = stale_after

    def __repr__(self) -> str:
        return f"Fact({self.name!r})"


class NodeFacts:
    """One node's facts in one run (a Remote holds it): each read on first need, then shared by every
    step, until a step says it changed what the fact depends on.

    Steps run side by side: two asking for the same fact at once wait for one read.
    """

    def __init__(self) -> None:
        self._values: Dict[Tuple[Fact, Tuple[Any, ...]], Any] = {}
        self._locks: Dict[Tuple[Fact, Tuple[Any, ...]], threading.Lock] = {}
        self._lock = threading.Lock()

    def _key_lock(self, key: Tuple[Fact, Tuple[Any, ...]]) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, fact: "Fact[T]", remote: Any, *args: Any) -> T:
        """The fact, read from `remote`'s node the first time it is asked for."""
        key = (fact, args)
        with self._key_lock(key):
            if key not in self._values:
                self._values[key] = fact.read(remote, *args)
            return self._values[key]

    def known(self, fact: "Fact[Any]", *args: Any) -> bool:
        return (fact, args) in self._values

    def note(self, fact: "Fact[T]", value: T, *args: Any) -> T:
        """Keep what a program that reads more than this fact found of it (preflight's one pass)."""
        with self._key_lock((fact, args)):
            self._values[(fact, args)] = value
        return value

    def flag(self, fact: "Fact[Any]", *args: Any) -> str:
        """What a program that can read `fact` on its way is told: `known` (leave it out), or '' (read it)."""
        return "known" if self.known(fact, *args) else ""

    def kept(self, fact: "Fact[T]", flag: str, parsed: Callable[[], T], remote: Any, *args: Any) -> T:
        """After such a program ran with `flag`: what it read of `fact` (`parsed()`, kept for the others),
        or the fact as known."""
        return self.note(fact, parsed(), *args) if flag == "" else self.get(fact, remote, *args)

    def forget(self, fact: "Fact[Any]", *args: Any) -> None:
        """A step changed the fact: the next reader reads it from the node again."""
        with self._key_lock((fact, args)):
            self._values.pop((fact, args), None)

    def clear(self) -> None:
        """The node may have changed in any way (an operator's own command ran there): every fact is read again."""
        with self._lock:
            keys = list(self._values)
        for fact, args in keys:
            self.forget(fact, *args)

    def changed(self, what: str) -> None:
        """The node changed in a way (`packages`) that can alter some facts: those are read again."""
        with self._lock:
            stale = [key for key in self._values if what in key[0].stale_after]
        for fact, args in stale:
            self.forget(fact, *args)
