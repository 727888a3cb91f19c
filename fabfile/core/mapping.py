"""The "Public IP  Private IP" table users paste from a rental console.

Turned into an inventory and one managed block of ~/.ssh/config entries
(`rental0`, `rental1`, ...). The block sits between marker comments so a
re-import replaces it in place and never touches the user's own entries.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from .errors import InputError
from .files import MANAGED_BEGIN as BLOCK_BEGIN
from .files import MANAGED_END as BLOCK_END
from .files import replace_block
from .inventory import (DEFAULT_PORT, DEFAULT_USER, NAME_RE, check_file_path, check_ssh_port, check_user,
                        parse_inventory)

__all__ = ["BLOCK_BEGIN", "BLOCK_END", "parse_mapping", "render_inventory", "render_ssh_block", "replace_block", "check_prefix"]

Pair = Tuple[str, str]

#: What a row of data holds, valid or not (`10.0.0.5`, `10.0.0.5/24`, `fe80::1`, `10.0.0.300`);
#: a first row with none of it is a header, and any other first row is data that must parse.
ADDRESS_LIKE = re.compile(r"^[0-9A-Fa-f:.]*[.:][0-9A-Fa-f:.]*(/\d+)?$")
#: Said of a line with commas: a console's CSV export pasted as the table.
CSV = "commas do not separate columns"


def _address(text: str) -> Optional[str]:
    """The address of `10.0.0.5` or of `10.0.0.5/24` (consoles show either); None if neither."""
    if "%" in text:  # an IPv6 scope id may hold any character but / and %
        return None
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        return None


def parse_mapping(text: str, path: str) -> List[Pair]:
    """Rows of (public, private): header optional, spaces or tabs, blank lines and #comments ignored."""
    pairs: List[Pair] = []
    seen: Dict[str, int] = {}
    header: Optional[Tuple[int, str]] = None
    first_row = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if first_row and not any(ADDRESS_LIKE.match(c) for c in cols):
            first_row = False  # a header such as "Public IP   Private IP"
            header = (lineno, line)
            continue
        first_row = False
        if len(cols) != 2:
            raise InputError(f"expected two columns (public IP, private IP), got {len(cols)}: {raw.strip()!r}"
                             f"{f' ({CSV})' if ',' in line else ''}", path=path, line=lineno)
        row = []
        for col, what in zip(cols, ("public", "private")):
            canon = _address(col)
            if canon is None:
                raise InputError(f"invalid {what} IP address {col!r}", path=path, line=lineno)
            if canon in seen:
                raise InputError(f"duplicate address {canon} (first on line {seen[canon]})", path=path, line=lineno)
            seen[canon] = lineno
            row.append(canon)
        pairs.append((row[0], row[1]))
    if not pairs and header is not None:
        # Its one line was taken for a header: say what a row needs instead of "empty file?".
        raise InputError(f"no 'Public IP  Private IP' rows: {header[1]!r} is not one (a row is two IP addresses, "
                         f"public then private, separated by spaces or tabs{'; ' + CSV if ',' in header[1] else ''})",
                         path=path, line=header[0])
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
    """Inventory YAML for the pairs: nodes `<prefix>0..`, the first one head.

    The options are checked here, by name: once in the YAML, a bad one was blamed on `<generated>:3`.
    """
    check_user(user, "--user", None)
    check_ssh_port(port, "--port", None)
    if key:
        check_file_path(key, "SSH key", "--key", None)
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
