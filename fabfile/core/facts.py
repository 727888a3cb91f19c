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


def human_kib(kib: str) -> str:
    try:
        value = float(kib) * 1024
    except ValueError:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "?"
