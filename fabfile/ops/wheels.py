"""`wheels`: the cluster's Python packages, resolved and downloaded once by the head with uv.

pip downloads one file after another; uv resolves the pins in a second or two
and writes a lock (`pylock.toml`, PEP 751) naming every wheel with its sha256.
The head downloads the wheels for its own interpreter from that lock, several
at a time, checking each hash, into a directory per set of pins; the fetch
step's server hands them to the other nodes, which install them with
`uv pip install --no-index --require-hashes` against hashes read on the head
over SSH. uv itself reaches every node the same way (pip, from the head's
wheel), and where it cannot be installed a node falls back to pip, with a note.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..core import programs
from ..core.chain import Step
from ..core.errors import HostError
from ..core.facts import human_bytes
from ..core.fanout import HostResult
from ..core.inventory import Node
from ..core.packages import Peer
from ..core.remote import Remote, last_line
from ..core.steps import Outcome
from ..core.context import RunContext
from .fetch import CACHE, FetchSettings, downloads_report, finish, for_the_cluster, read, set_peer
from .fetch import NAME as FETCH

NAME = "wheels"

#: Where every node keeps uv: root's directory, the binary run by the SSH user.
UV_DIR = "/opt/gpufab/uv/bin"
UV = f"{UV_DIR}/uv"

#: Run as root by python3 (stdlib only): uv from its wheel, without pip or a venv. argv: `index - VERSION`
#: (the wheel for this machine from the simple page of $UV_INDEX_URL, else PyPI, sha256 from the page) or
#: `wheel URL-OR-PATH SHA256` (the head's). The wheel's hash is checked before anything is unpacked;
#: only `uv-*.data/scripts/uv` is taken out of it, and renamed into place.
UV_INSTALL = programs.text("uv-install.py")

#: Run by python3 on the head: from the pylock.toml uv wrote for this interpreter (so every wheel
#: in it fits), one wheel per package (a binary one before a pure one), downloaded 8 at a time,
#: each kept only with the lock's sha256. Prints `sha256  file` lines and the bytes it fetched.
DOWNLOAD = programs.text("wheels-download.py")


def wheel_dir(pins: Sequence[str], uv_version: str) -> str:
    """One directory per set of pins: it holds exactly their closure, whatever was fetched before."""
    key = hashlib.sha256("\n".join(sorted([*pins, f"uv=={uv_version}"])).encode()).hexdigest()[:16]
    return f"{CACHE}/wheels/{key}"


def parse_sha256sum(text: str) -> Dict[str, str]:
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]) and parts[1].endswith(".whl") \
                and "/" not in parts[1] and not parts[1].startswith("."):
            found[parts[1]] = parts[0]
    return found


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


def fetch_wheels(remote: Remote, pins: Sequence[str], s: FetchSettings, count: int) -> Outcome:
    """On the head: uv, a lock of the pins (with uv itself), its wheels; value: each wheel's sha256."""
    # pip too: a venv uv makes has none, and operators expect `venv/bin/pip`.
    what = [*pins, "pip", f"uv=={s.uv_version}"]
    change = f"downloaded once for {count} node{'s' if count != 1 else ''}: {', '.join([*pins, f'uv=={s.uv_version}'])}"
    uv, done, notes = ensure_uv(remote, s.uv_version, s.index_url, s.proxy)
    if remote.dry_run:
        return Outcome(done + [change])
    if uv is None:
        raise HostError(notes[0])
    target = wheel_dir(pins, s.uv_version)
    q = shlex.quote
    reqs = " ".join(q(x) for x in what)
    out = remote.run(
        f"{uv_env()}install -d -m 0755 {CACHE}/wheels {q(target)} && "
        f"printf '%s\\n' {reqs} | {uv} pip compile -q --python python3 --format pylock.toml -o {q(target)}/pylock.toml - "
        f"&& python3 -c {q(DOWNLOAD)} {q(target)}/pylock.toml {q(target)}",
        sudo=True, warn=True, timeout=max(remote.timeout or 0, 1800), secret_env=index_env(s.index_url, s.proxy))
    hashes = parse_sha256sum(out.stdout)
    if out.exited != 0 or not hashes:
        raise HostError(f"cannot download the wheels: {last_line(out.stderr or out.stdout) or 'no wheels'}")
    size = next((int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("@@bytes ")), 0)
    return Outcome(done + [f"{change} ({len(hashes)} wheels, {human_bytes(size)})"], notes, hashes)


def run_on(run: RunContext, nodes: Sequence[Node], s: FetchSettings) -> List[HostResult]:
    """The wheels: every pin any node lacks, locked and downloaded by the head; then the head serves them."""
    head = run.inv.head
    pins: List[str] = []

    def on_head(remote: Remote, needs: Dict[str, Sequence[str]]) -> Outcome:
        pins.extend(dict.fromkeys(p for wheels in needs.values() for p in wheels))
        return fetch_wheels(remote, pins, s, len(needs))

    def share(got: HostResult) -> None:
        url = run.kept(FETCH, str)
        where = wheel_dir(pins, s.uv_version)
        for node in run.inv.nodes:
            mine = node.name == head.name
            if mine or url:
                set_peer(run.remotes[node.name], wheels=where if mine else f"{url}{where[len(CACHE):]}/",
                         hashes=got.value)

    return for_the_cluster(run, nodes, s, lambda d: d.wheels, on_head, share, "no wheel to download")


STEP = Step(NAME, settings=read, run=run_on, wanted=lambda s: s.enabled, needs=("preflight",), finish=finish,
            report=lambda run, s: downloads_report(run, NAME, "wheels"))
