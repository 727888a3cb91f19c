"""The chain as a graph: a step starts when what it needs has ended; a failure skips only what needs it, per host."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

from fabfile.core.chain import VERIFY, Run, Step
from fabfile.core.reporting import result_cell
from fabfile.core.fanout import CHANGED, FAILED, OK, SKIPPED, HostResult
from fabfile.core.inventory import Inventory, Node
from fabfile.core.progress import Progress
from fabfile.ops.chain import CHAIN
from fabfile.ops.shared import downloads, uv

import io

NODES = (Node("node1", "198.18.0.11", private="198.19.0.11", role="head", nid=0),
         Node("node2", "198.18.0.12", private="198.19.0.12", nid=1),
         Node("node3", "198.18.0.13", private="198.19.0.13", nid=2))


def session() -> SimpleNamespace:
    return SimpleNamespace(connection=lambda n: SimpleNamespace(user="root"), sudo_password=lambda: None,
                           step_timeout=30, interrupt=lambda: None)


class Log:
    def __init__(self) -> None:
        self.spans: Dict[str, Tuple[float, float]] = {}
        self.nodes: Dict[str, List[str]] = {}
        self.lock = threading.Lock()
        self.ray_started = threading.Event()


def step(name: str, needs: Tuple[str, ...], log: Log, seconds: float = 0.0, fail: Sequence[str] = (),
         needs_head: bool = False, until: Optional[threading.Event] = None,
         starts: Optional[threading.Event] = None) -> Step:
    """A step that takes `seconds`, or less when `until` is set first; it sets `starts` as it begins."""
    def run(run: Run, nodes: Sequence[Node], settings: object) -> List[HostResult]:
        start = time.monotonic()
        if starts is not None:
            starts.set()
        if until is None:
            time.sleep(seconds)
        else:
            until.wait(seconds)
        with log.lock:
            log.spans[name] = (start, time.monotonic())
            log.nodes[name] = [n.name for n in nodes]
        return [HostResult(n, FAILED, 1, reason="exit code 100") if n.name in fail else HostResult(n, CHANGED)
                for n in nodes]

    return Step(name, settings=lambda c, i, cli: None, run=run, needs=needs, needs_head=needs_head)


def chain(log: Log, fail_docker: Sequence[str] = (), fail_limits: Sequence[str] = (),
          docker_seconds: float = 0.1) -> List[Step]:
    """Docker is the long step: it lasts until Ray has started (at most `docker_seconds`), so that
    Ray starting before docker ends is what a graph does, and what one step at a time cannot."""
    return [step("preflight", (), log), step("limits", ("preflight",), log, fail=fail_limits),
            step("docker", ("preflight", "limits"), log, docker_seconds, fail=fail_docker, until=log.ray_started),
            step("images", ("docker",), log),
            step("netenv", ("preflight",), log, needs_head=True),
            step("ray", ("preflight", "limits", "netenv"), log, needs_head=True, starts=log.ray_started),
            Step("verify", settings=lambda c, i, cli: None,
                 run=lambda run, nodes, s: (log.nodes.__setitem__("verify", [n.name for n in nodes]) or
                                            [HostResult(n, OK) for n in nodes]))]


def go(steps: List[Step], dry_run: bool = False) -> Run:
    inv = Inventory(NODES)
    run = Run(session(), inv, NODES, steps, {}, Progress(out=io.StringIO()), dry_run, None)
    run.go()
    return run


def test_independent_steps_run_side_by_side_and_a_step_waits_for_what_it_needs():
    log = Log()
    go(chain(log, docker_seconds=10))  # ends as soon as Ray starts; one step at a time would wait the 10 s out
    docker, ray, limits = log.spans["docker"], log.spans["ray"], log.spans["limits"]
    assert ray[0] < docker[1], "ray needs nothing of docker: it starts before docker ends"
    assert docker[0] >= limits[1] and ray[0] >= limits[1]
    assert log.spans["images"][0] >= docker[1]


def test_a_dry_run_goes_one_step_at_a_time_in_chain_order():
    log = Log()
    go(chain(log), dry_run=True)
    order = sorted(log.spans, key=lambda s: log.spans[s][0])
    assert order == ["preflight", "limits", "docker", "images", "netenv", "ray"]
    assert all(log.spans[a][1] <= log.spans[b][0] for a, b in zip(order, order[1:]))


def test_a_host_that_fails_docker_gets_every_step_that_does_not_need_it():
    log = Log()
    run = go(chain(log, fail_docker=["node2"]))
    assert log.nodes["ray"] == ["node1", "node2", "node3"] and log.nodes["netenv"] == ["node1", "node2", "node3"]
    assert log.nodes["images"] == ["node1", "node3"] and "node2" not in log.nodes["verify"]
    node2 = NODES[1]
    skipped = run.result("images", node2)
    assert skipped.status == SKIPPED and skipped.reason == "needs docker, which failed on this host"
    assert run.status("ray", node2) == CHANGED
    assert result_cell(run, node2) == "failed at docker: exit code 100; skipped because of it: images, verify"
    assert result_cell(run, NODES[0]) == CHANGED


def test_workers_go_on_when_the_head_fails_a_step_their_step_does_not_need():
    log = Log()
    run = go(chain(log, fail_docker=["node1"]))
    assert log.nodes["ray"] == ["node1", "node2", "node3"]
    log = Log()
    run = go(chain(log, fail_limits=["node1"]))
    assert log.nodes.get("ray") is None  # the head cannot run Ray: nor can the workers
    assert run.result("ray", NODES[1]).reason == "the head node1 failed at limits"
    assert run.status("netenv", NODES[1]) == CHANGED


def test_the_bootstrap_chain_is_in_an_order_every_need_comes_before():
    names = [s.name for s in CHAIN]
    for s in CHAIN:
        for need in s.needs or ():
            assert names.index(need) < names.index(s.name), (s.name, need)
    by = {s.name: s for s in CHAIN}
    # The long installs need nothing of each other; Ray starts after its env file and limits.
    assert "docker" not in by["ray"].needs and "ray" not in (by["docker"].needs or ())
    assert {"netenv", "limits"} <= set(by["ray"].needs) and by["verify"].needs is None
    assert VERIFY.needs is None


# --------------------------------------------------------------------------- one download per cluster

def test_the_head_fetches_the_union_once_and_hashes_each_wheel():
    from fabfile.ops import fetch, wheels
    cmd = fetch.apt_command(["docker.io"], ["sshfs"])
    assert "-d install --no-install-recommends docker.io" in cmd and "-d install --reinstall --no-install-recommends sshfs" in cmd
    # The head serves its own apt archive: what apt keeps there after any install is there for the others.
    assert "ln -sfn /var/cache/apt/archives /var/cache/gpufab/fetch/debs" in cmd
    assert wheels.wheel_dir(["ray[default]==2.60.0"], "0.13.9") != wheels.wheel_dir(["ray[default]==2.59.0"], "0.13.9")
    out = ("@@bytes 1\n" + "a" * 64 + "  ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl\n"
           + "b" * 64 + "  ../evil.whl\n" + "c" * 64 + "  uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl\n")
    hashes = wheels.parse_sha256sum(out)
    assert set(hashes) == {"ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl", "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl"}
    assert uv.wheel_requirements(hashes, skip=("uv",)) == [f"ray==2.60.0 --hash=sha256:{'a' * 64}"]


def test_the_server_listens_on_the_private_address_only_as_a_throwaway_user_for_a_bounded_time():
    cmd = downloads.serve_command("198.19.0.11", 8741)
    assert "--bind 198.19.0.11" in cmd and "DynamicUser=yes" in cmd and "ProtectSystem=strict" in cmd
    assert f"RuntimeMaxSec={downloads.SERVE_SECONDS}" in cmd and "--directory /var/cache/gpufab/fetch" in cmd


def test_a_worker_takes_debs_from_the_head_first_then_installs():
    from fabfile.core.packages import Peer
    from fabfile.core.remote import ensure_packages
    from fakes import FakeRemote
    remote = FakeRemote([(r"dpkg-query", "", 0)])
    remote.peer = Peer(debs="http://198.19.0.11:8741/debs", wheels="http://198.19.0.11:8741/wheels/k/")
    assert ensure_packages(remote, ("docker.io",)) == ["installed docker.io"]
    fetched = next(i for i, c in enumerate(remote.commands) if "--print-uris" in c)
    installed = next(i for i, c in enumerate(remote.commands) if "install --no-install-recommends docker.io" in c
                     and "--print-uris" not in c)
    assert fetched < installed and "http://198.19.0.11:8741/debs" in remote.commands[fetched]
    # apt's own SHA256 decides: a file that does not match is never put in apt's archive.
    assert "digest.hexdigest() == want" in remote.commands[fetched]
    # On the head (its apt already holds them) and without a peer: apt alone.
    remote = FakeRemote([(r"dpkg-query", "", 0)])
    ensure_packages(remote, ("docker.io",))
    assert not any("--print-uris" in c for c in remote.commands)


def test_fetch_settings_are_checked():
    import pytest
    from fabfile.core.errors import InputError
    from fabfile.core.inventory import Inventory
    inv = Inventory(NODES, vars={"shared_downloads": "off"})
    assert downloads.read(None, inv, {}).enabled is False
    with pytest.raises(InputError, match="invalid uv version"):
        downloads.read(None, Inventory(NODES, vars={"uv_version": "1; rm -rf /"}), {})


def test_a_host_found_unreachable_is_left_out_of_every_later_step():
    log = Log()
    steps = chain(log)
    dead = Step("limits", settings=lambda c, i, cli: None, needs=("preflight",),
                run=lambda run, nodes, s: [HostResult(n, "unreachable", 255, reason="connection lost")
                                           if n.name == "node3" else HostResult(n, CHANGED) for n in nodes])
    steps[1] = dead
    run = go(steps, dry_run=True)  # one step at a time: netenv comes after limits found node3 gone
    assert "node3" not in log.nodes["netenv"] and "node3" not in log.nodes["ray"]
    assert run.result("netenv", NODES[2]).reason == "unreachable since limits"
    assert run.result("ray", NODES[2]).reason == "needs limits, which failed on this host"


def test_the_head_locks_the_pins_with_pip_and_uv_then_downloads_the_lock():
    from fabfile.ops import wheels
    from fakes import FakeRemote
    digest = "d" * 64
    remote = FakeRemote([(r"pip compile", f"{digest}  ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl\n@@bytes 68000000\n", 0)])
    out = wheels.fetch_wheels(remote, ["ray[default]==2.60.0"], downloads.FetchSettings(), 3)
    cmd = next(c for c in remote.commands if "pip compile" in c)
    # pip too (a venv uv makes has none), and uv itself for the other nodes.
    assert "'ray[default]==2.60.0' pip uv==0.13.9 | /opt/gpufab/uv/bin/uv pip compile" in cmd
    assert "--format pylock.toml" in cmd and "UV_NATIVE_TLS=1" in cmd
    assert out.value == {"ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl": digest}
    assert out.changes[-1] == "downloaded once for 3 nodes: ray[default]==2.60.0, uv==0.13.9 (1 wheels, 64.8 MiB)"


def test_ctrl_c_fails_every_host_in_every_step_it_cut_off_whichever_came_first():
    """The head's wheel download beside Docker's install: the head fails in both, and the progress
    says so for both; a host that had failed before the signal is not failed again."""
    out = io.StringIO()
    steps = [Step(n, settings=lambda c, i, cli: None, run=lambda run, nodes, s: []) for n in ("wheels", "docker")]
    run = Run(session(), Inventory(nodes=NODES), NODES, steps, {}, Progress(out=out), False, None)
    run.record("wheels", [HostResult(NODES[2], FAILED, 1, reason="exit code 1")])
    run.record("wheels", [HostResult(NODES[1], OK)])
    run.running = {"wheels", "docker"}
    run.interrupted()
    assert run.status("wheels", NODES[0]) == FAILED and run.status("docker", NODES[0]) == FAILED
    assert run.status("docker", NODES[1]) == FAILED and run.status("docker", NODES[2]) == "not run"
    assert run.failures["node1"].step == "wheels" and run.failures["node3"].reason == "exit code 1"
    printed = out.getvalue()
    import re
    assert all(re.search(rf"node1\s+{s}\s+failed .*interrupted", printed) for s in ("wheels", "docker")), printed
