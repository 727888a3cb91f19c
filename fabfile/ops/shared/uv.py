"""uv on every node, and the index, proxy and hashes it installs with: the wheels step downloads with it
on the head, Ray's venv installs with it everywhere.

The inventory's index URL and proxy reach uv through the environment (`index_env`), never the command
line: such URLs carry tokens. uv itself comes out of its wheel, the head's or the index's, hash-checked.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ...core import programs
from ...core.packages import Peer
from ...core.remote import Remote, last_line

#: Where every node keeps uv: root's directory, the binary run by the SSH user.
UV_DIR = "/opt/gpufab/uv/bin"


UV = f"{UV_DIR}/uv"


#: Run as root by python3 (stdlib only): uv from its wheel, without pip or a venv. argv: `index - VERSION`
#: (the wheel for this machine from the simple page of $UV_INDEX_URL, else PyPI, sha256 from the page) or
#: `wheel URL-OR-PATH SHA256` (the head's). The wheel's hash is checked before anything is unpacked;
#: only `uv-*.data/scripts/uv` is taken out of it, and renamed into place.
UV_INSTALL = programs.text("uv-install.py")


def wheel_requirements(hashes: Mapping[str, str], skip: Sequence[str] = ()) -> List[str]:
    """`name==version --hash=sha256:...` for each wheel file: a requirements file that installs exactly them."""
    lines = []
    for filename, digest in sorted(hashes.items()):
        name, version = filename.split("-")[:2]
        if name.lower().replace("_", "-") in skip:
            continue
        lines.append(f"{name}=={version} --hash=sha256:{digest}")
    return lines


#: Prints one `global` setting of pip's configuration files, in pip's order (a later file wins).
PIP_CONFIG = ("import configparser, os, sys; c = configparser.ConfigParser(); "
              "c.read(['/etc/xdg/pip/pip.conf', '/etc/pip.conf', os.path.expanduser('~/.pip/pip.conf'), "
              "os.path.expanduser('~/.config/pip/pip.conf'), os.environ.get('PIP_CONFIG_FILE', '')]); "
              "print(c.get('global', sys.argv[1], fallback=''))")


def uv_env() -> str:
    """uv (and urllib) read no pip.conf: the proxy, index and CA file pip is set up with, and the system's CA store.

    What the inventory sets (`pip_index_url`, `pip_proxy`) comes first, through `index_env` (a file, never
    the command line: such URLs carry tokens); pip.conf fills in what it does not set."""
    cfg = f"cfg() {{ python3 -c {shlex.quote(PIP_CONFIG)} \"$1\" 2>/dev/null; }}; "
    via = "p=$(cfg proxy); [ -z \"$p\" ] || export HTTPS_PROXY=\"${HTTPS_PROXY:-$p}\"; "
    index = "i=$(cfg index-url); [ -z \"$i\" ] || export UV_INDEX_URL=\"${UV_INDEX_URL:-$i}\"; "
    return (f"export UV_NATIVE_TLS=1 UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1; {cfg}{via}{index}"
            "c=$(cfg cert); [ -z \"$c\" ] || export SSL_CERT_FILE=\"$c\"; ")


def index_env(index_url: Optional[str], proxy: Optional[str], find_links: Optional[str] = None) -> Dict[str, str]:
    """The inventory's index, proxy and find-links for pip and uv, as variables (`Remote.run(secret_env=...)`)."""
    env: Dict[str, str] = {}
    if index_url:
        env.update(PIP_INDEX_URL=index_url, UV_INDEX_URL=index_url)
    if find_links:
        env.update(PIP_FIND_LINKS=find_links, UV_FIND_LINKS=find_links)
    if proxy:
        env.update(PIP_PROXY=proxy, HTTPS_PROXY=proxy, HTTP_PROXY=proxy)
    return env


def direct(peer: Peer) -> str:
    """Environment for a command that reaches the head: no proxy for it."""
    host = urlsplit(peer.wheels).hostname
    return f"NO_PROXY={shlex.quote(host)} no_proxy={shlex.quote(host)} " if host else ""


def uv_wheel(peer: Optional[Peer]) -> Optional[Tuple[str, str]]:
    """(where, sha256) of the uv wheel the head fetched, if it did."""
    if peer is None:
        return None
    found = [(name, digest) for name, digest in peer.hashes.items() if name.startswith("uv-")]
    if not found:
        return None
    name, digest = found[0]
    return (f"{peer.wheels.rstrip('/')}/{name}", digest)


def ensure_uv(remote: Remote, version: str, index_url: Optional[str] = None,
              proxy: Optional[str] = None) -> Tuple[Optional[str], List[str], List[str]]:
    """(uv to use or None, changes, notes): uv's binary out of its wheel, the head's or the index's, hash-checked."""
    if remote.check(f"[ -x {UV} ]"):
        return UV, [], []
    if remote.check("command -v uv >/dev/null"):
        return "uv", [], []
    q = shlex.quote
    wheel = uv_wheel(remote.peer)
    if wheel is not None:
        args = f"wheel {q(wheel[0])} {q(wheel[1])}"
        env = direct(remote.peer) if "://" in wheel[0] else ""
    else:  # the index comes from UV_INDEX_URL (the inventory's, else pip.conf's), PyPI without either
        args = f"index - {q(version)}"
        env = uv_env()
    result = remote.change(f"{env}python3 -c {q(UV_INSTALL)} {args} {UV_DIR}", warn=True, timeout=300,
                           secret_env=index_env(index_url, proxy) if wheel is None else None)
    if result.exited != 0 and not remote.dry_run:
        return None, [], [f"uv could not be installed ({last_line(result.stderr or result.stdout)}): pip used"]
    return UV, [f"installed uv {version}"], []
