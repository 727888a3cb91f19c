"""One download per cluster: the machinery the fetch (.debs) and wheels steps share, and Ray's venv reads.

Each node says what it would download (every step's `downloads`); the head downloads the union
once into its cache and serves it on its private address only, for the run; the others install from
there (core.packages.Peer says where). The settings (`shared_downloads`, `fetch_port`, the index,
proxy and uv version) are read once here for both steps. Nothing is trusted for coming from the
head: apt checks every .deb against its own signed lists, and each wheel is installed against the
sha256 read on the head over SSH (`--require-hashes`).
"""

from __future__ import annotations

import re
import shlex
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ...core.cluster import reach_of, setting, switch
from ...core.context import RunContext
from ...core.declared import PORT, SWITCH, TEXT, VERSION, Setting, declare, owns
from ...core.errors import HostError, InputError
from ...core.fanout import SKIPPED, HostResult
from ...core.inventory import Inventory, Node
from ...core.networks import Reach, check_bind_address
from ...core.packages import Downloads, Peer
from ...core.remote import Remote, last_line
from ...core.steps import Outcome, merge_phases, run_step
from .ports import check_port

#: Where the run keeps the head's server URL (Run.keep): the fetch step's name, which starts it first.
SERVER = "fetch"

CACHE = "/var/cache/gpufab/fetch"


#: The uv every node gets (ops.wheels); pinned, like everything the cluster installs.
UV_VERSION = "0.13.9"


DEFAULT_PORT = 8741


#: The head's transient web server for the others (systemd-run; it ends by itself after an hour at most).
UNIT = "gpufab-fetch"


SERVE_SECONDS = 3600


@dataclass(frozen=True)
class FetchSettings:
    enabled: bool = True
    port: int = DEFAULT_PORT
    uv_version: str = UV_VERSION
    index_url: Optional[str] = None
    proxy: Optional[str] = None
    #: Where the head's server may listen: private ranges unless overridden.
    reach: Reach = Reach()


def check_uv_version(value: Any) -> str:
    if not re.match(r"^[0-9][0-9A-Za-z.+]*$", str(value)):
        raise InputError(f"invalid uv version {value!r}", path="uv_version")
    return str(value)


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> FetchSettings:
    """Inventory vars `shared_downloads` (default true), `fetch_port`, `uv_version`; pip's index and proxy."""

    def get(key: str, default: Any = None) -> Any:
        return setting(config, inv, key, cli.get(key), default)

    version = check_uv_version(get("uv_version", UV_VERSION))
    return FetchSettings(enabled=switch(get("shared_downloads", True)),
                         port=check_port(get("fetch_port", DEFAULT_PORT), "fetch port", "fetch_port"),
                         uv_version=version, index_url=get("pip_index_url"), proxy=get("pip_proxy"),
                         reach=reach_of(config, inv))


def serve_command(address: str, port: int) -> str:
    """The head's archive and wheels on its private address, as a throwaway user, read-only, bounded in time."""
    return (f"install -d -m 0755 /var/cache/gpufab {CACHE} && "
            f"{{ systemctl is-active --quiet {UNIT} || systemd-run --quiet --unit={UNIT} --collect"
            f" -p DynamicUser=yes -p ProtectSystem=strict -p ProtectHome=yes -p RuntimeMaxSec={SERVE_SECONDS}"
            f" /usr/bin/python3 -m http.server {port} --bind {shlex.quote(address)} --directory {CACHE}; }};"
            f" for i in $(seq 50); do python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)'"
            f" {shlex.quote(address)} {port} 2>/dev/null && exit 0; sleep 0.1; done; exit 1")


#: The fetch and wheels steps run side by side: one of them starts the server, and each sets its half of a peer.
_LOCK = threading.Lock()


def serve(run: RunContext, s: FetchSettings) -> Optional[str]:
    """Start the head's server (once per run; a no-op when it already runs); its URL (None: no other node
    to serve). A HostError when it cannot."""
    head = run.inv.head
    url = f"http://{head.private}:{s.port}"
    with _LOCK:
        if len(run.inv.nodes) < 2:
            return None
        if run.kept(SERVER, str) == url:
            return url
        result = run.remotes[head.name].run(serve_command(head.private or "", s.port), sudo=True, warn=True, timeout=30)
        if result.exited != 0:
            raise HostError(f"cannot serve the downloads on {head.private}:{s.port}: "
                            f"{last_line(result.stderr) or 'nothing listens'}")
        run.keep(SERVER, url)
    return url


def set_peer(remote: Remote, **half: Any) -> None:
    with _LOCK:
        remote.peer = replace(remote.peer or Peer(debs=None, wheels=""), **half)


#: fetch and wheels start together and want the same facts: read once a run (the second waits for the first).
_NEEDS_LOCK = threading.Lock()


#: Where the run keeps each node's Downloads (Run.keep).
NEEDS = "downloads"


def read_needs(run: RunContext, nodes: Sequence[Node]) -> List[HostResult]:
    """Each node's Downloads: what the steps of this run would download there."""
    with _NEEDS_LOCK:
        known = run.kept(NEEDS, dict)
        if known is None:
            known = {}
            run.keep(NEEDS, known)
        todo = [n for n in nodes if n.name not in known]
        for r in run_step(run.session, todo, lambda r: node_downloads(run, r), workers=run.workers,
                          remotes=run.remotes):
            known[r.node.name] = r
        return [known[n.name] for n in nodes]


def with_note(results: Sequence[HostResult], note: str) -> List[HostResult]:
    return [HostResult(r.node, r.status, r.exit_code, reason=r.reason, notes=[note]) for r in results]


def node_downloads(run: RunContext, remote: Remote) -> Outcome:
    need = Downloads()
    for step in run.steps:
        if step.downloads is not None:
            need = need | step.downloads(remote, run.settings.get(step.name))
    return Outcome(value=need)


def for_the_cluster(run: RunContext, nodes: Sequence[Node], s: FetchSettings, wanted: Callable[[Downloads], Sequence[str]],
                    on_head: Callable[[Remote, Dict[str, Sequence[str]]], Outcome],
                    share: Callable[[HostResult], None], nothing: str) -> List[HostResult]:
    """What fetch and wheels share: each node's needs (`wanted` of its Downloads), the head's one download
    of them (`on_head`) and its server; then each node is told where to find it (`share`)."""
    head = run.inv.head
    facts = read_needs(run, nodes)
    if head.name in run.failures:
        return with_note(facts, f"the head {head.name} failed: every node downloads for itself")
    needs = {r.node.name: wanted(r.value) for r in facts if not r.failed and r.value and wanted(r.value)}
    if not needs:
        return with_note(facts, nothing)
    if len(run.inv.nodes) > 1:
        try:  # the server is a listener like any other: on a private address only
            check_bind_address(head.private or "", "the head's download server", s.reach, "private_ranges")
        except InputError as exc:
            return with_note(facts, f"{str(exc).removeprefix('private_ranges: ')}: every node downloads for itself")

    def download(remote: Remote) -> Outcome:
        done = on_head(remote, needs)
        url = None if run.dry_run else serve(run, s)
        if url:
            done.notes.append(f"served on {url[len('http://'):]} (private network) during the run")
        return done

    got = run_step(run.session, [head], download, workers=run.workers, remotes=run.remotes)[0]
    if got.failed:
        skipped = HostResult(head, SKIPPED, reason=f"{got.reason}; every node downloads for itself")
        return [skipped if r.node.name == head.name else r for r in facts]
    if not run.dry_run:
        share(got)
    mine = [r for r in facts if r.node.name == head.name]
    rest = with_note([r for r in facts if r.node.name != head.name and not r.failed],
                     f"installs from {head.name} over the private network")
    return merge_phases(nodes, [mine, [got] if head in nodes else [], rest,
                                [r for r in facts if r.failed and r.node.name != head.name]])


def finish(run: RunContext, s: FetchSettings) -> None:
    """The others have installed: the head stops serving."""
    if run.forget(SERVER):
        try:
            run.remotes[run.inv.head.name].run(f"systemctl stop {UNIT}", sudo=True, warn=True, timeout=30)
        except Exception:  # noqa: BLE001 - the server ends by itself within the hour
            pass


def downloads_report(run: RunContext, step: str, what: str) -> Tuple[List[str], List[str]]:
    """`Downloads (what): downloaded once for N nodes: ...`, or why every node downloaded for itself."""
    head = run.result(step, run.inv.head)
    if head is None:
        return [], []
    if head.status == SKIPPED:
        return [], [f"Downloads ({what}): {head.reason}"]
    changes = [c for c in head.changes if c.startswith("downloaded")]
    if not changes:
        return [], []
    others = f"; the others installed from {run.inv.head.name}" if len(run.inv.nodes) > 1 else ""
    return [f"Downloads ({what}): {changes[-1]}{others}"], []


DECLARED = declare(
    "ops.shared.downloads",
    Setting("fetch_port", "the head's download server for the other nodes (private address only)",
            str(DEFAULT_PORT),
            kind=PORT, check=lambda v: check_port(v, "fetch port", "fetch_port")),
    Setting("shared_downloads", "the head downloads once for everyone; false: each node for itself", "true",
            kind=SWITCH, check=switch),
    Setting("pip_index_url", "the package index (secret-safe: never on a command line)", "PyPI",
            kind=TEXT),
    Setting("pip_proxy", "an HTTP proxy for the package index", "none",
            kind=TEXT),
    Setting("uv_version", "the uv every node runs", UV_VERSION,
            kind=VERSION, check=check_uv_version),
)


OWNED = owns("ops.fetch", transient=(f"{UNIT}.service",), trees=("/opt/gpufab", "/var/cache/gpufab"))
