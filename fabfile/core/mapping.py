"""The "Public IP  Private IP" table users paste from a rental console.

Turned into an inventory and one managed block of ~/.ssh/config entries
(`rental0`, `rental1`, ...). The block sits between marker comments so a
re-import replaces it in place and never touches the user's own entries.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from .errors import InputError
from .files import MANAGED_BEGIN as BLOCK_BEGIN
from .files import MANAGED_END as BLOCK_END
from .files import replace_block
from .inventory import DEFAULT_PORT, DEFAULT_USER, NAME_RE, parse_inventory

__all__ = ["BLOCK_BEGIN", "BLOCK_END", "parse_mapping", "render_inventory", "render_ssh_block", "replace_block", "check_prefix"]

Pair = Tuple[str, str]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_mapping(text: str, path: str) -> List[Pair]:
    """Rows of (public, private): header optional, spaces or tabs, blank lines and #comments ignored."""
    pairs: List[Pair] = []
    seen: Dict[str, int] = {}
    first_row = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if first_row and not any(_is_ip(c) for c in cols):
            first_row = False  # a header such as "Public IP   Private IP"
            continue
        first_row = False
        if len(cols) != 2:
            raise InputError(f"expected two columns (public IP, private IP), got {len(cols)}: {raw.strip()!r}", path=path, line=lineno)
        for col, what in zip(cols, ("public", "private")):
            if not _is_ip(col):
                raise InputError(f"invalid {what} IP address {col!r}", path=path, line=lineno)
            canon = str(ipaddress.ip_address(col))
            if canon in seen:
                raise InputError(f"duplicate address {canon} (first on line {seen[canon]})", path=path, line=lineno)
            seen[canon] = lineno
        pairs.append((str(ipaddress.ip_address(cols[0])), str(ipaddress.ip_address(cols[1]))))
    if not pairs:
        raise InputError("no 'Public IP  Private IP' rows found (empty file?)", path=path)
    return pairs


def render_inventory(
    pairs: Sequence[Pair],
    prefix: str = "rental",
    user: str = DEFAULT_USER,
    port: int = DEFAULT_PORT,
    key: Optional[str] = None,
    source: str = "",
) -> str:
    """Inventory YAML for the pairs: nodes `<prefix>0..`, the first one head."""
    ssh: Dict[str, object] = {"user": user, "port": port}
    if key:
        ssh["key"] = key
    nodes = []
    for i, (public, private) in enumerate(pairs):
        node: Dict[str, object] = {"name": f"{prefix}{i}", "public": public, "private": private}
        node["role"] = "head" if i == 0 else "worker"
        nodes.append(node)
    body = yaml.safe_dump({"ssh": ssh, "nodes": nodes}, sort_keys=False, default_flow_style=False)
    header = "# gpufab inventory"
    if source:
        header += f", imported from {source} by `inv inventory.import`"
    text = f"{header}\n{body}"
    parse_inventory(text, "<generated>")  # what we write must load back
    return text


def render_ssh_block(
    pairs: Sequence[Pair], prefix: str, user: str, port: int, key: Optional[str], inventory_path: str
) -> str:
    lines = [f"{BLOCK_BEGIN} ({inventory_path}): re-run `inv inventory.import` to change it"]
    for i, (public, _private) in enumerate(pairs):
        lines += [f"Host {prefix}{i}", f"    HostName {public}", f"    User {user}", f"    Port {port}"]
        if key:
            lines.append(f"    IdentityFile {key}")
    lines.append(BLOCK_END)
    return "\n".join(lines) + "\n"


def check_prefix(prefix: str) -> str:
    if not NAME_RE.match(prefix + "0"):
        raise InputError(f"invalid host name prefix {prefix!r}", path="--prefix")
    return prefix
