"""Facts about a node, gathered in one SSH round trip and parsed here.

One shell script prints `key=value` lines; parsing is pure so it can be
tested without a host.
"""

from __future__ import annotations

from typing import Dict

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
