"""`inv ray.*`: a pinned Ray on every node, run by systemd, proven by counting nodes."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from invoke import task
from invoke.exceptions import Exit

from .ops import ray as plan
from .core.cluster import ensure_private, open_session, resolve_inventory, select_nodes, setting
from .core.connection import Session
from .core.errors import HostError, InputError, keeping_changes, reported
from .core.fanout import FAILED, HostResult, classify
from .core.files import FileState, plan_files, sha256
from .core.inventory import Inventory, Node
from .core.localfs import write_if_changed
from .ops.netenv import ENV_FILE, SECRETS_FILE
from .core.remote import Remote, ensure_packages, last_line
from .core.report import host_table
from .core.steps import Outcome, merge_phases, remote_for, report_step, run_step

#: True when a raylet runs on the node ([r] keeps pgrep from matching this shell).
RAYLET_RUNNING = "pgrep -f '[r]ay/core/src/ray/raylet/raylet' >/dev/null"
#: Seconds `ray.wait` (and `ray.setup`) give the cluster to show every node.
DEFAULT_WAIT = 180


@dataclass(frozen=True)
class RaySettings:
    """Everything a Ray task needs to know, read once from CLI > inventory > config."""

    version: str
    venv: str
    extra: List[str]
    port: int
    dashboard_host: Optional[str]
    index_url: Optional[str]
    find_links: Optional[str]
    proxy: Optional[str]
    systemd: bool = True

    @property
    def pins(self) -> List[str]:
        return plan.requirements(self.version, self.extra)


def read_settings(c, inv: Inventory, **cli: Any) -> RaySettings:
    def get(key: str, default: Any = None) -> Any:
        return setting(c.config, inv, key, cli.get(key), default)

    return RaySettings(
        version=plan.check_version(get("ray_version", plan.DEFAULT_VERSION)),
        venv=plan.check_venv(get("ray_venv", plan.DEFAULT_VENV)),
        extra=plan.check_pins(get("ray_extra_packages")),
        port=int(get("ray_port", plan.DEFAULT_PORT)),
        dashboard_host=get("ray_dashboard_host"),
        index_url=get("pip_index_url"),
        find_links=get("pip_find_links"),
        proxy=get("pip_proxy"),
        systemd=not cli.get("no_systemd", False),
    )


# --------------------------------------------------------------------------- install


def installed_versions(remote: Remote, venv: str, packages: Sequence[str]) -> Optional[Dict[str, Optional[str]]]:
    """Versions in the venv, or None when there is no venv."""
    result = remote.run(plan.versions_command(venv, packages), warn=True)
    if result.exited != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def install_ray(remote: Remote, s: RaySettings) -> Outcome:
    """A venv owned by the SSH user holding exactly the pinned packages."""
    names = [plan.pin_name(p) for p in s.pins]
    versions = installed_versions(remote, s.venv, names)
    done: List[str] = []
    uv = remote.check("command -v uv >/dev/null")
    with keeping_changes(done):
        if versions is None:
            if not uv:
                done += ensure_packages(remote, ("python3-venv",))
            venv = shlex.quote(s.venv)
            remote.change(f"mkdir -p {venv} && chown {shlex.quote(remote.user)}: {venv}")
            make = f"uv venv {venv}" if uv else f"python3 -m venv {venv}"
            result = remote.change(make, sudo=False, warn=True)
            if result.exited != 0:
                raise HostError(f"cannot create the venv {s.venv}: {last_line(result.stderr)}")
            done.append(f"created venv {s.venv} ({'uv' if uv else 'python3 -m venv'})")
            versions = {}
        todo = plan.missing_pins(versions, s.pins)
        if todo:
            cmd = plan.install_command(s.venv, todo, uv, s.index_url, s.find_links, s.proxy)
            result = remote.change(cmd, sudo=False, warn=True, timeout=1800)
            if result.exited != 0:
                raise HostError(f"pip install {' '.join(todo)} failed: {last_line(result.stderr or result.stdout)}")
            done.append(f"installed {' '.join(todo)}")
            versions = {"ray": s.version} if remote.dry_run else installed_versions(remote, s.venv, names) or {}
    return Outcome(done, [f"ray {versions.get('ray')} in {s.venv}"])


def versions_step(remote: Remote, venv: str) -> Outcome:
    versions = installed_versions(remote, venv, plan.VERSION_PACKAGES)
    if versions is None:
        raise HostError(f"no Python environment at {venv} (run ray.install)")
    return Outcome([], [], {"versions": versions})


def versions_table(results: Sequence[HostResult]) -> str:
    """Python and package versions per node; a value that differs from the rest is starred."""
    fields = ["python", *plan.VERSION_PACKAGES]
    found = {r.node.name: r.data["versions"] for r in results if "versions" in r.data}
    odd = plan.mismatches(found)
    rows = []
    for r in results:
        v = r.data.get("versions")
        if v is None:
            rows.append([r.node.name, *["-" for _ in fields], r.reason])
            continue
        cells = [f"*{v.get(f) or '-'}*" if r.node.name in odd.get(f, []) else (v.get(f) or "-") for f in fields]
        rows.append([r.node.name, *cells, ""])
    text = host_table(["Node", *fields, "Problem"], rows)
    for f, nodes in odd.items():
        hard = " (Ray will not join these)" if f in plan.MUST_MATCH else ""
        text += f"\nmismatch: {f} differs on {', '.join(nodes)}{hard}"
    return text


# --------------------------------------------------------------------------- start / stop


def env_digest(state: Dict[str, FileState]) -> str:
    """A digest of the node's netenv and secrets files, written into the unit."""
    if not state[ENV_FILE].exists:
        return "none"
    return sha256("\0".join([state[ENV_FILE].content or "", state[SECRETS_FILE].digest or ""]))[:16]


def unit_plan(remote: Remote, inv: Inventory, s: RaySettings, digest: str) -> plan.UnitPlan:
    node = remote.node
    if not node.private or not inv.head.private:
        raise HostError("no private address known for this node or the head")
    gpus = node.vars.get("gpus")
    return plan.UnitPlan(
        role="head" if node.is_head else "worker",
        user=remote.user,
        venv=s.venv,
        address=node.private,
        head=inv.head.private,
        port=s.port,
        dashboard_host=s.dashboard_host or "",
        num_gpus=int(gpus) if gpus is not None else None,
        env_digest=digest,
    )


def start_ray(remote: Remote, inv: Inventory, s: RaySettings) -> Outcome:
    """Install/refresh the node's unit; restart only when it changed, start if down."""
    versions = installed_versions(remote, s.venv, ["ray"])
    if (not versions or versions.get("ray") != s.version) and not remote.dry_run:
        seen = (versions or {}).get("ray")
        raise HostError(f"ray {s.version} is not installed in {s.venv} (found {seen or 'none'}; run ray.install)")
    # One read: the env the unit depends on, this role's unit and the other role's.
    units = [f"{plan.UNIT_DIR}/{u}" for u in (plan.HEAD_UNIT, plan.WORKER_UNIT)]
    state = remote.read_paths([ENV_FILE, "-d", SECRETS_FILE, *units])
    p = unit_plan(remote, inv, s, env_digest(state))
    if not s.systemd:
        return _start_plain(remote, p)
    done: List[str] = []
    other = f"{plan.UNIT_DIR}/{p.other_unit}"
    if state[other].exists:
        remote.change(f"systemctl disable --now {p.other_unit}; rm -f {other}", warn=True)
        done.append(f"removed {p.other_unit} (role changed)")
    unit = plan.unit_file(p)
    changes = plan_files([unit], state)
    done += remote.write_files(changes)
    if changes or done:
        remote.change("systemctl daemon-reload")
    if not remote.check(f"systemctl is-enabled --quiet {p.unit}"):
        remote.change(f"systemctl enable {p.unit}")
        done.append(f"enabled {p.unit}")
    active = remote.check(f"systemctl is-active --quiet {p.unit}")
    if changes or not active:
        verb = "restarted" if active else "started"
        remote.change(f"systemctl restart {p.unit}")
        done.append(f"{verb} {p.unit}")
    return Outcome(done, [f"{p.role} on {p.address}" + (f" -> {p.head}:{p.port}" if p.role == "worker" else f":{p.port}")])


def _start_plain(remote: Remote, p: plan.UnitPlan) -> Outcome:
    """For hosts without systemd: `ray start` with the netenv loaded first."""
    if remote.check(RAYLET_RUNNING):
        return Outcome([], [f"{p.role}: Ray already running (not restarted)"])
    result = remote.change(plan.start_command(p), sudo=False, warn=True, timeout=300)
    if result.exited != 0:
        raise HostError(f"ray start failed: {last_line(result.stderr or result.stdout)}")
    return Outcome([f"ray start ({p.role}, no systemd)"], [])


def stop_ray(remote: Remote, venv: str, force: bool) -> Outcome:
    done: List[str] = []
    for unit in (plan.WORKER_UNIT, plan.HEAD_UNIT):
        if remote.check(f"systemctl is-active --quiet {unit}"):
            remote.change(f"systemctl stop {unit}", timeout=120)
            done.append(f"stopped {unit}")
    if force or not done:
        ray = shlex.quote(f"{venv}/bin/ray")
        running = remote.check(RAYLET_RUNNING)
        if running:
            remote.change(f"{ray} stop{' --force' if force else ''}", warn=True, timeout=120)
            done.append("ray stop" + (" --force" if force else ""))
    return Outcome(done, [])


# --------------------------------------------------------------------------- cluster state


def cluster_nodes(head: Remote, s: RaySettings) -> List[plan.RayNode]:
    python = shlex.quote(f"{s.venv}/bin/python")
    address = f"{head.node.private}:{s.port}"
    result = head.run(f"{python} -c {shlex.quote(plan.NODES_CODE)} {shlex.quote(address)}", warn=True, timeout=60)
    if result.exited != 0:
        raise HostError(f"cannot list Ray nodes on the head: {last_line(result.stderr) or 'no output'}")
    return plan.parse_nodes(result.stdout)


def ray_log_tail(remote: Remote, node: Node, lines: int = 3) -> str:
    unit = plan.HEAD_UNIT if node.is_head else plan.WORKER_UNIT
    out = remote.run(f"journalctl -u {unit} -n {lines} --no-pager -o cat", sudo=True, warn=True).stdout
    return plan.log_tail(out, lines)


def wait_for_nodes(session: Session, nodes: Sequence[Node], s: RaySettings, timeout: float,
                   gpus: Optional[int] = None) -> List[HostResult]:
    """Poll the head until every node is alive in Ray (and the GPUs add up), or time out.

    One result per node: ok when alive, failed with its last Ray log lines
    when it never joined.
    """
    head = remote_for(session, session.inventory.head)
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    alive: Dict[str, plan.RayNode] = {}
    error = ""
    while True:
        try:
            alive = plan.alive_by_ip(cluster_nodes(head, s))
            error = ""
        except Exception as exc:  # noqa: BLE001 - head down or Ray not up yet: keep polling
            error = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        joined = all(n.private in alive for n in nodes)
        enough_gpus = gpus is None or sum(n.gpus for n in alive.values()) >= gpus
        if (joined and enough_gpus) or time.monotonic() > deadline:
            break
        time.sleep(2)
    seconds = time.monotonic() - start
    results: List[HostResult] = []
    for node in nodes:
        member = alive.get(node.private or "")
        if member:
            results.append(HostResult(node, "ok", seconds=seconds, data={"notes": [
                f"alive in Ray ({member.cpus:g} CPU, {member.gpus:g} GPU)"]}))
            continue
        try:
            tail = ray_log_tail(remote_for(session, node), node)
        except Exception as exc:  # noqa: BLE001 - an unreachable node cannot show logs
            tail = f"none, node unreachable ({classify(exc, session.connect_timeout)[2]})"
        why = error or "not in the cluster"
        results.append(HostResult(node, FAILED, 1, seconds=seconds,
                                  reason=f"{why} after {timeout:g}s; last Ray log: {tail}"))
    if gpus is not None and all(not r.failed for r in results):
        have = sum(n.gpus for n in alive.values())
        if have < gpus:
            results[0] = HostResult(results[0].node, FAILED, 1, seconds=seconds,
                                    reason=f"cluster has {have:g} GPUs, inventory says {gpus}")
    return results


def expected_gpus(inv: Inventory) -> Optional[int]:
    counts = [n.vars.get("gpus") for n in inv.nodes]
    if all(c is None for c in counts):
        return None
    return sum(int(c or 0) for c in counts)


# --------------------------------------------------------------------------- tasks

_HELP = {
    "nodes": "only these nodes (comma-separated names)",
    "workers": "hosts worked on at once (default 32)",
}
_INSTALL_HELP = {
    "version": f"Ray version for every node (default: inventory var ray_version, else {plan.DEFAULT_VERSION})",
    "venv": f"the Python environment on each node (default {plan.DEFAULT_VENV}; var ray_venv)",
    "extra": "more pinned packages, comma-separated name==version (var ray_extra_packages)",
    "index_url": "pip --index-url (var pip_index_url)",
    "find_links": "pip --find-links, e.g. a wheel directory on the nodes (var pip_find_links)",
    "proxy": "HTTP(S) proxy for pip (var pip_proxy)",
}
_START_HELP = {
    "no_systemd": "plain `ray start` instead of systemd units (hosts without systemd)",
    "dashboard_host": "address the dashboard binds to (default: the head's private address)",
}


def _open(c, **cli: Any):
    session = open_session(c.config)
    try:
        inv = ensure_private(session)
        return session, inv, read_settings(c, inv, **cli)
    except BaseException:
        session.close()
        raise


def _workers(n) -> Optional[int]:
    return int(n) if n else None


@task(help={**_INSTALL_HELP, **_HELP})
@reported
def install(c, version=None, venv=None, extra=None, index_url=None, find_links=None, proxy=None, nodes=None, workers=None):
    """Create the venv and install the one pinned ray[default] (and extras) on every node."""
    session, inv, s = _open(c, ray_version=version, ray_venv=venv, ray_extra_packages=extra,
                            pip_index_url=index_url, pip_find_links=find_links, pip_proxy=proxy)
    with session:
        results = run_step(session, select_nodes(inv, nodes), lambda r: install_ray(r, s), workers=_workers(workers))
    report_step("ray.install", results)


def _versions(c, venv, nodes, workers, title: str) -> None:
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        results = run_step(session, select_nodes(inv, nodes), lambda r: versions_step(r, s.venv), workers=_workers(workers))
    found = {r.node.name: r.data["versions"] for r in results if "versions" in r.data}
    odd = plan.mismatches(found)
    for r in results:
        for f in plan.MUST_MATCH:
            if r.node.name in odd.get(f, []) and not r.failed:
                r.status, r.exit_code, r.reason = FAILED, 1, f"{f} {found[r.node.name].get(f)} differs from the other nodes"
    report_step(title, results, versions_table)


@task(help={"venv": _INSTALL_HELP["venv"], **_HELP})
@reported
def versions(c, venv=None, nodes=None, workers=None):
    """Python, ray, torch, vllm, transformers per node; fails when Python or ray differ."""
    _versions(c, venv, nodes, workers, "ray.versions")


@task(help={"head": "start the head (default: the workers)", **_START_HELP, "venv": _INSTALL_HELP["venv"], **_HELP})
@reported
def start(c, head=False, no_systemd=False, dashboard_host=None, venv=None, nodes=None, workers=None):
    """Start Ray: `--head` on the head node, else every worker (units wait for the head)."""
    session, inv, s = _open(c, no_systemd=no_systemd, ray_dashboard_host=dashboard_host, ray_venv=venv)
    with session:
        chosen = select_nodes(inv, nodes)
        targets = [n for n in chosen if n.is_head == bool(head)]
        results = run_step(session, targets, lambda r: start_ray(r, inv, s), workers=_workers(workers))
    report_step("ray.start --head" if head else "ray.start", results)


@task(help={**_INSTALL_HELP, **_START_HELP, "timeout": f"seconds to wait for every node (default {DEFAULT_WAIT})", **_HELP})
@reported
def setup(c, version=None, venv=None, extra=None, index_url=None, find_links=None, proxy=None,
          no_systemd=False, dashboard_host=None, timeout=None, workers=None, nodes=None):
    """ray.install + head + workers (in parallel) + wait until every node is alive."""
    session, inv, s = _open(c, ray_version=version, ray_venv=venv, ray_extra_packages=extra,
                            pip_index_url=index_url, pip_find_links=find_links, pip_proxy=proxy,
                            no_systemd=no_systemd, ray_dashboard_host=dashboard_host)
    with session:
        results = setup_cluster(session, inv, s, float(timeout or DEFAULT_WAIT), _workers(workers))
    report_step("ray.setup", results)


def setup_cluster(session: Session, inv: Inventory, s: RaySettings, timeout: float,
                  workers: Optional[int] = None, *, nodes: Optional[Sequence[Node]] = None,
                  remotes: Optional[Dict[str, Remote]] = None, wait: bool = True) -> List[HostResult]:
    """Install everywhere, head first, workers together, then wait; one merged result per node.

    `nodes` narrows it to some nodes (a retry of failed workers leaves the
    running head alone); `wait=False` stops after starting (a dry run).
    """
    nodes = list(nodes if nodes is not None else inv.nodes)
    head = inv.head

    def run(targets: Sequence[Node], fn: Callable[[Remote], Outcome]) -> List[HostResult]:
        return run_step(session, targets, fn, workers=workers, remotes=remotes)

    installed = run(nodes, lambda r: install_ray(r, s))
    failed = {r.node.name for r in installed if r.failed}
    with_head = any(n.name == head.name for n in nodes)
    head_started = run([head], lambda r: start_ray(r, inv, s)) if with_head and head.name not in failed else []
    head_down = with_head and (head.name in failed or any(r.failed for r in head_started))
    live_workers = [n for n in nodes if not n.is_head and n.name not in failed]
    if head_down:
        started = [HostResult(n, FAILED, 1, reason=f"the head {head.name} did not start") for n in live_workers]
    else:
        started = run(live_workers, lambda r: start_ray(r, inv, s))
    failed |= {r.node.name for r in head_started + started if r.failed}
    waiting = [n for n in nodes if n.name not in failed]
    waited = []
    if wait and waiting and not head_down:
        waited = wait_for_nodes(session, waiting, s, timeout, expected_gpus(inv))
    return merge_phases(nodes, [installed, head_started, started, waited])


@task(help={"timeout": f"seconds to wait (default {DEFAULT_WAIT})", "venv": _INSTALL_HELP["venv"]})
@reported
def wait(c, timeout=None, venv=None):
    """Wait until every inventory node is alive in Ray; name the ones that never joined."""
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        results = wait_for_nodes(session, inv.nodes, s, float(timeout or DEFAULT_WAIT), expected_gpus(inv))
    report_step("ray.wait", results)


@task(help={"venv": _INSTALL_HELP["venv"]})
@reported
def status(c, venv=None):
    """Ray's nodes (address, alive, CPUs, GPUs, memory), the dashboard URL and its SSH tunnel."""
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        try:
            nodes = cluster_nodes(remote_for(session, inv.head), s)
        except HostError as exc:
            raise Exit(f"ray.status: {exc.reason}", code=1) from None
        except Exception as exc:  # noqa: BLE001 - e.g. the head is unreachable
            raise Exit(f"ray.status: cannot reach the head {inv.head.name}: {exc}", code=255) from None
    names = {n.private: n.name for n in inv.nodes}
    rows = [(names.get(n.ip, "?"), n.ip, "yes" if n.alive else "no", f"{n.cpus:g}", f"{n.gpus:g}",
             plan.human_bytes(n.memory), "head" if n.head else "") for n in sorted(nodes, key=lambda n: (not n.alive, n.ip))]
    print(host_table(["Node", "Address", "Alive", "CPUs", "GPUs", "Memory", "Role"], rows))
    alive = plan.alive_by_ip(nodes)
    print(f"ray: {len(alive)}/{len(inv.nodes)} inventory nodes alive, "
          f"{sum(n.cpus for n in alive.values()):g} CPUs, {sum(n.gpus for n in alive.values()):g} GPUs")
    host = s.dashboard_host or inv.head.private
    user = f"{inv.head.user}@" if inv.head.user else ""
    print(f"dashboard: http://{host}:{plan.DASHBOARD_PORT} (private network)")
    print(f"tunnel:    ssh -L {plan.DASHBOARD_PORT}:{inv.head.private}:{plan.DASHBOARD_PORT} {user}{inv.head.public}"
          f"  then open http://localhost:{plan.DASHBOARD_PORT}")
    missing = [n.name for n in inv.nodes if n.private not in alive]
    if missing:
        raise Exit(f"ray.status: not alive: {', '.join(missing)}", code=1)


@task(help={"force": "also `ray stop --force` (kills leftovers)", "venv": _INSTALL_HELP["venv"], **_HELP})
@reported
def stop(c, force=False, venv=None, nodes=None, workers=None):
    """Stop Ray on the workers, then on the head."""
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        chosen = select_nodes(inv, nodes)
        step: Callable[[Remote], Outcome] = lambda r: stop_ray(r, s.venv, force)
        results = run_step(session, [n for n in chosen if not n.is_head], step, workers=_workers(workers))
        results += run_step(session, [n for n in chosen if n.is_head], step)
    report_step("ray.stop", results)


@task(help={"output": "where to write it (default ray-cluster.yaml)", "venv": _INSTALL_HELP["venv"]})
@reported
def cluster_yaml(c, output="ray-cluster.yaml", venv=None):
    """Write a Ray cluster launcher file (provider: local) from the inventory, for `ray up`."""
    inv = resolve_inventory(c.config)
    s = read_settings(c, inv, ray_venv=venv)
    if not inv.head.private:
        raise InputError(f"the head {inv.head.name} has no private address in the inventory")
    text = plan.cluster_yaml(
        inv.path or "--hosts", "gpufab", inv.head.public, inv.head.private,
        [(n.public, n.private or "") for n in inv.workers], inv.head.user or "root", inv.head.key, s.venv, s.port,
    )
    changed = write_if_changed(output, text, backup=output + ".bak")
    print(f"ray.cluster-yaml: {'wrote' if changed else 'unchanged'} {output} (head {inv.head.public}, "
          f"{len(inv.workers)} workers); use: ray up {output}")


@task(help={"venv": _INSTALL_HELP["venv"]})
@reported
def smoke(c, venv=None):
    """Run one task per node from the head (SPREAD) and show where each ran."""
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        head = remote_for(session, inv.head)
        python = shlex.quote(f"{s.venv}/bin/python")
        result = head.run(f"{python} -c {shlex.quote(plan.SMOKE_CODE)}", warn=True, timeout=300)
    if result.exited != 0:
        raise Exit(f"ray.smoke: the job failed on {inv.head.name}: {last_line(result.stderr)}", code=1)
    ran = json.loads(result.stdout.strip().splitlines()[-1])
    names = {n.private: n.name for n in inv.nodes}
    print(host_table(["Task", "Node", "Hostname", "Address"],
                     [(t["task"], names.get(t["ip"], "?"), t["host"], t["ip"]) for t in ran]))
    distinct = {t["ip"] for t in ran}
    print(f"ray.smoke: {len(ran)} tasks ran on {len(distinct)} distinct nodes")
    if len(distinct) < len(inv.nodes):
        raise Exit(f"ray.smoke: expected {len(inv.nodes)} distinct nodes", code=1)
