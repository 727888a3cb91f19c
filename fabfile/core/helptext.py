"""The task modules' help, derived from the declarations: the generated part of fabfile/help_texts.py.

`gpufab --list` and `--help` must not import a step (start-up: tests/unit/test_startup.py), yet
the `--skip` names, the defaults an option's help states and the setting it falls back to are
the steps' own declarations. So they are generated, like docs/settings.md's table: this module
renders the data part of `fabfile/help_texts.py` from a chain and the declared settings
(`scripts/generate` writes it; tests/unit/test_derived.py fails when the file differs from what
it renders), and the task modules read that file, which imports nothing.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence

from .chain import Step
from .declared import CLUSTER, CONFIG, NODE, Setting

#: Where a setting is given, as an option's help names it (docs/settings.md's "Where", in one word).
_PLACE = {CLUSTER: "var", NODE: "node var", CONFIG: "config"}

#: The line of fabfile/help_texts.py after which it is generated (above it: the functions that read it).
MARKER = "# ---- generated from the declarations by scripts/generate (tests/unit/test_derived.py): do not edit below\n"


def _tuple(names: Iterable[str]) -> str:
    return repr(tuple(names))


def data_text(chain: Sequence[Step], settings: Sequence[Setting]) -> str:
    """What fabfile/help_texts.py holds after MARKER, for this chain and these settings.

    The last step of the chain is verify (your own steps go before it), as ops/chain.py has it.
    """
    lines: List[str] = [
        "#: The bootstrap chain's steps, in chain order (your own steps join it before the last).",
        f"CHAIN = {_tuple(s.name for s in chain)}",
        "#: The steps --skip and --only take, in chain order; the others always run.",
        f"OPTIONAL = {_tuple(s.name for s in chain if s.optional)}",
        "#: Every declared setting: (what it does, its default as docs/settings.md shows it, where it is given).",
        "SETTINGS = {",
    ]
    for s in sorted(settings, key=lambda s: s.name):
        lines.append(f"    {s.name!r}: ({s.doc!r}, {s.default!r}, {_PLACE[s.where[0]]!r}),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def module_text(current: str, chain: Sequence[Step], settings: Sequence[Setting]) -> str:
    """fabfile/help_texts.py (now `current`) with its generated part made anew."""
    return current.split(MARKER, 1)[0] + MARKER + data_text(chain, settings)
