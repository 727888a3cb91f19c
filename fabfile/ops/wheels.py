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
from typing import Dict, List, Sequence

from ..core import programs
from ..core.chain import Step
from ..core.errors import HostError
from ..core.facts import human_bytes
from ..core.fanout import HostResult
from ..core.inventory import Node
from ..core.remote import Remote, last_line
from ..core.steps import Outcome
from ..core.context import RunContext
from .shared.downloads import CACHE, SERVER, FetchSettings, downloads_report, finish, for_the_cluster, read, set_peer
from .shared.uv import ensure_uv, index_env, uv_env

NAME = "wheels"


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
        url = run.kept(SERVER, str)
        where = wheel_dir(pins, s.uv_version)
        for node in run.inv.nodes:
            mine = node.name == head.name
            if mine or url:
                set_peer(run.remotes[node.name], wheels=where if mine else f"{url}{where[len(CACHE):]}/",
                         hashes=got.value)

    return for_the_cluster(run, nodes, s, lambda d: d.wheels, on_head, share, "no wheel to download")


STEP = Step(NAME, settings=read, run=run_on, wanted=lambda s: s.enabled, needs=("preflight",), finish=finish,
            report=lambda run, s: downloads_report(run, NAME, "wheels"))
