"""Facts about a node, gathered in one SSH round trip and parsed here.

One shell script prints `key=value` lines; parsing is pure so it can be
tested without a host.
"""

from __future__ import annotations

import shlex
from typing import Dict, Optional

#: Prints one key=value per line. `$1` is the head's private address (may be empty).
PREFLIGHT_SCRIPT = r"""
head="$1"
. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"
echo "uid=$(id -u)"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')"
else
  echo "gpus=0"
fi
if [ -n "$head" ]; then
  nic=$(ip -o route get "$head" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  # On the head itself the route is via lo: name the NIC holding the address.
  if [ "$nic" = lo ]; then nic=$(ip -o addr show to "$head" 2>/dev/null | awk '{print $2; exit}'); fi
  echo "nic=$nic"
fi
echo "disk_free_kb=$(df -Pk / 2>/dev/null | awk 'NR==2 {print $4}')"
if [ "$(id -u)" = 0 ]; then echo "sudo=root"
elif ! command -v sudo >/dev/null 2>&1; then echo "sudo=missing"
elif sudo -n true 2>/dev/null; then echo "sudo=nopasswd"
else echo "sudo=password"
fi
"""


def preflight_command(head_private: Optional[str]) -> str:
    return f"sh -c {shlex.quote(PREFLIGHT_SCRIPT)} preflight {shlex.quote(head_private or '')}"


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
