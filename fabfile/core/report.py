"""What the user reads at the end of a run: gathered output, summary, tables."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Sequence, Tuple

from .fanout import CHANGED, FAILED, SKIPPED, UNREACHABLE, HostResult
from .inventory import Inventory

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def fold_names(names: Sequence[str]) -> str:
    """Fold host names into a nodeset like clush: node1,node2,node3 -> node[1-3].

    Names with a numeric suffix and a common prefix are folded into ranges;
    zero-padded suffixes keep their width; anything else is listed as is.
    Order of first appearance is kept.
    """
    groups: "OrderedDict[Tuple[str, int], List[int]]" = OrderedDict()
    plain: List[Tuple[int, str]] = []
    order: Dict[object, int] = {}
    for pos, name in enumerate(names):
        match = _NUMBERED.match(name)
        if not match:
            plain.append((pos, name))
            continue
        prefix, digits = match.groups()
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        key = (prefix, width)
        order.setdefault(key, pos)
        groups.setdefault(key, []).append(int(digits))

    parts: List[Tuple[int, str]] = list(plain)
    for (prefix, width), numbers in groups.items():
        numbers = sorted(set(numbers))
        if len(numbers) == 1:
            parts.append((order[(prefix, width)], f"{prefix}{numbers[0]:0{width}d}"))
            continue
        ranges: List[str] = []
        start = prev = numbers[0]
        for n in numbers[1:] + [None]:  # type: ignore[list-item]
            if n is not None and n == prev + 1:
                prev = n
                continue
            ranges.append(f"{start:0{width}d}" if start == prev else f"{start:0{width}d}-{prev:0{width}d}")
            if n is not None:
                start = prev = n
        parts.append((order[(prefix, width)], f"{prefix}[{','.join(ranges)}]"))
    return ",".join(text for _, text in sorted(parts))


def gather(results: Iterable[HostResult]) -> List[Tuple[str, str]]:
    """Group hosts with identical output (and status): [(nodeset label, output)].

    Like `clush -b`: three hosts that printed the same thing are shown once.
    """
    groups: "OrderedDict[Tuple[str, str], List[str]]" = OrderedDict()
    for r in results:
        text = (r.stdout + r.stderr).rstrip("\n")
        if r.status == UNREACHABLE:
            key = ("unreachable", r.reason)
            text = r.reason
        elif r.status == FAILED:
            key = (f"exit {r.exit_code}", text or r.reason)
            text = text or r.reason
        else:
            key = ("", text)
        groups.setdefault((key[0], text), []).append(r.node.name)
    out = []
    for (tag, text), names in groups.items():
        label = fold_names(names)
        if tag:
            label = f"{label} ({tag})"
        out.append((label, text))
    return out


def format_gathered(results: Iterable[HostResult]) -> str:
    lines: List[str] = []
    for label, text in gather(results):
        body = text.splitlines()
        if len(body) == 1:
            lines.append(f"{label}: {body[0]}")
        else:
            lines.append(f"{label}:")
            lines.extend(f"    {line}" for line in body)
    return "\n".join(lines)


def summary_line(what: str, results: Sequence[HostResult], changed: bool = False) -> str:
    """`exec: 3 hosts: 2 ok, 0 failed, 1 unreachable (node3: connection refused)`.

    With `changed`, hosts a step changed are counted apart from those it found
    already right: `limits.setup: 3 hosts: 1 changed, 2 ok, 0 failed, ...`.
    """
    ok = [r for r in results if not r.failed]
    failed = [r for r in results if r.status == FAILED]
    dead = [r for r in results if r.status == UNREACHABLE]
    skipped = sum(1 for r in ok if r.status == SKIPPED)
    counts = f"{len(ok) - skipped} ok"
    if changed:
        n_changed = sum(1 for r in ok if r.status == CHANGED)
        counts = f"{n_changed} changed, {len(ok) - n_changed - skipped} ok"
    if skipped:
        counts += f", {skipped} skipped"
    text = f"{what}: {len(results)} hosts: {counts}, {len(failed)} failed, {len(dead)} unreachable"
    if failed or dead:
        text += " (" + "; ".join(f"{r.node.name}: {r.reason}" for r in failed + dead) + ")"
    return text


def inventory_table(inv: Inventory) -> str:
    rows = [(n.name, n.public, n.private or "-", n.nid, n.role) for n in inv.nodes]
    from tabulate import tabulate  # only a task that prints a table pays for it
    return tabulate(rows, headers=["Node", "Public IP", "Private IP", "NID", "Role"])


def host_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    from tabulate import tabulate  # only a task that prints a table pays for it
    return tabulate(list(rows), headers=list(headers))
