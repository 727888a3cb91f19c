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
from .inventory import DEFAULT_PORT, DEFAULT_USER, NAME_RE, parse_inventory

BLOCK_BEGIN = "# BEGIN gpufab managed block"
BLOCK_END = "# END gpufab managed block"

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


def replace_block(existing: str, block: str, path: str) -> str:
    """`existing` with the managed block replaced, or appended when absent."""
    begin = existing.find(BLOCK_BEGIN)
    if begin == -1:
        if existing and not existing.endswith("\n"):
            existing += "\n"
        sep = "\n" if existing.strip() else ""
        return existing + sep + block
    end = existing.find(BLOCK_END, begin)
    if end == -1:
        line = existing.count("\n", 0, begin) + 1
        raise InputError("managed block has a BEGIN marker but no END marker; fix it by hand", path=path, line=line)
    if existing.find(BLOCK_BEGIN, begin + 1) != -1:
        line = existing.count("\n", 0, existing.find(BLOCK_BEGIN, begin + 1)) + 1
        raise InputError("two gpufab managed blocks; remove one by hand", path=path, line=line)
    stop = end + len(BLOCK_END)
    if existing[stop:stop + 1] == "\n":
        stop += 1
    return existing[:begin] + block + existing[stop:]


def check_prefix(prefix: str) -> str:
    if not NAME_RE.match(prefix + "0"):
        raise InputError(f"invalid host name prefix {prefix!r}", path="--prefix")
    return prefix
