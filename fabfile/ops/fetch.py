"""`fetch`: one download per cluster, made by the head and served to the others over the private network.

Every node of a fresh cluster wants the same .debs (Docker) and the same
wheels (Ray's venv), and rented nodes often pay for their public link. So the
steps say what each node would download; the head downloads the union once,
its apt archive and wheel directory are served on its private address only,
and the other nodes install from there. Nothing is trusted for coming from
the head: apt checks every .deb against its own signed lists, and each wheel
is installed against the sha256 read on the head over SSH (`--require-hashes`).
What the head could not get, a node downloads itself. Inventory var
`shared_downloads: false` turns it off (a cluster with a fast local mirror). The machinery it
shares with the wheels step is ops/shared/downloads.py.
"""

from __future__ import annotations

import shlex
from typing import Dict, List, Sequence

from ..core.chain import Step
from ..core.context import RunContext
from ..core.errors import HostError
from ..core.fanout import HostResult
from ..core.inventory import Node
from ..core.packages import APT_GET, UPDATE_IF_STALE
from ..core.remote import Remote, last_line
from ..core.steps import Outcome
from .shared.downloads import CACHE, SERVER, FetchSettings, downloads_report, finish, for_the_cluster, read, set_peer

NAME = SERVER


def apt_command(here: Sequence[str], others: Sequence[str]) -> str:
    """The head's .debs for the cluster, into its own apt archive (which is what it serves).

    `here`: packages the head lacks (downloaded with what they need); `others`: packages the
    head has but other nodes lack (the package files themselves).
    """
    q = shlex.quote
    apt = [f"install -d -m 0755 /var/cache/gpufab {CACHE}", f"ln -sfn /var/cache/apt/archives {CACHE}/debs",
           UPDATE_IF_STALE]
    if here:
        apt.append(f"{APT_GET} -d install --no-install-recommends {' '.join(q(p) for p in here)}")
    if others:
        apt.append(f"{APT_GET} -d install --reinstall --no-install-recommends {' '.join(q(p) for p in others)}")
    return " && ".join(apt)


# --------------------------------------------------------------------------- the step


def fetch_on_head(remote: Remote, here: Sequence[str], others: Sequence[str], count: int) -> Outcome:
    change = f"downloaded once for {count} node{'s' if count != 1 else ''}: {', '.join([*here, *others])}"
    if remote.dry_run:
        return Outcome([change])
    with remote.apt_lock:
        out = remote.run(apt_command(here, others), sudo=True, warn=True, timeout=max(remote.timeout or 0, 900))
    if out.exited != 0:
        raise HostError(f"apt-get -d failed: {last_line(out.stderr or out.stdout)}")
    return Outcome([change])


def run_on(run: RunContext, nodes: Sequence[Node], s: FetchSettings) -> List[HostResult]:
    """The .debs: what any node lacks, downloaded by the head; then the head serves them."""
    head = run.inv.head

    def on_head(remote: Remote, needs: Dict[str, Sequence[str]]) -> Outcome:
        here = list(needs.get(head.name, ()))
        others = [p for p in dict.fromkeys(x for debs in needs.values() for x in debs) if p not in here]
        return fetch_on_head(remote, here, others, len(needs))

    def share(got: HostResult) -> None:
        url = run.kept(NAME, str)
        for node in run.inv.nodes:
            if node.name != head.name and url:
                set_peer(run.remotes[node.name], debs=f"{url}/debs")

    return for_the_cluster(run, nodes, s, lambda d: d.debs, on_head, share, "no .deb to download")


STEP = Step(NAME, settings=read, run=run_on, wanted=lambda s: s.enabled, needs=("preflight",), finish=finish,
            report=lambda run, s: downloads_report(run, NAME, ".deb"))


