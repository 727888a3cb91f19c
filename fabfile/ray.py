"""`inv ray.*`: a pinned Ray on every node, run by systemd, proven by counting nodes."""

from __future__ import annotations

import json
import shlex
from typing import Any, Callable, Sequence

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.cluster import ensure_private, open_session, resolve_inventory, select_nodes
from .core.errors import HostError, InputError, number_option, reported
from .core.facts import human_bytes
from .core.fanout import FAILED, HostResult
from .core.localfs import write_if_changed
from .core.remote import Remote, last_line
from .core.report import host_table
from .core.steps import Outcome, on_node, remote_for, report_step, run_step


def versions_table(results: Sequence[HostResult]) -> str:
    """Python and package versions per node; a value that differs from the rest is starred."""
    from .ops import ray
    fields = ["python", *ray.VERSION_PACKAGES]
    found = {r.node.name: r.value for r in results if r.value is not None}
    odd = ray.mismatches(found)
    rows = []
    for r in results:
        v = r.value
        if v is None:
            rows.append([r.node.name, *["-" for _ in fields], r.reason])
            continue
        cells = [f"*{v.get(f) or '-'}*" if r.node.name in odd.get(f, []) else (v.get(f) or "-") for f in fields]
        rows.append([r.node.name, *cells, ""])
    text = host_table(["Node", *fields, "Problem"], rows)
    for f, nodes in odd.items():
        hard = " (Ray will not join these)" if f in ray.MUST_MATCH else ""
        text += f"\nmismatch: {f} differs on {', '.join(nodes)}{hard}"
    return text


# --------------------------------------------------------------------------- tasks

_HELP = {
    "nodes": "only these nodes (comma-separated names)",
    "workers": help_texts.option("workers", "hosts worked on at once"),
}
_INSTALL_HELP = {
    "version": help_texts.option("ray_version", "Ray version for every node"),
    "venv": help_texts.option("ray_venv", "the Python environment on each node"),
    "extra": help_texts.option("ray_extra_packages", "more pinned packages, comma-separated name==version"),
    "index_url": help_texts.option("pip_index_url", "pip --index-url"),
    "find_links": help_texts.option("pip_find_links", "pip --find-links, e.g. a wheel directory on the nodes"),
    "proxy": help_texts.option("pip_proxy", "HTTP(S) proxy for pip"),
}
_START_HELP = {
    "no_systemd": "plain `ray start` instead of systemd units (hosts without systemd)",
    "dashboard_host": help_texts.option("ray_dashboard_host", "address the dashboard binds to"),
}


def _open(c, **cli: Any):
    from .ops import ray
    session = open_session(c.config)
    try:
        inv = ensure_private(session)
        return session, inv, ray.read(c.config, inv, cli)
    except BaseException:
        session.close()
        raise


@task(help={**_INSTALL_HELP, **_HELP})
@reported
def install(c, version=None, venv=None, extra=None, index_url=None, find_links=None, proxy=None, nodes=None, workers=None):
    """Create the venv and install the one pinned ray[default] (and extras) on every node."""
    from .ops import ray
    session, inv, s = _open(c, ray_version=version, ray_venv=venv, ray_extra_packages=extra,
                            pip_index_url=index_url, pip_find_links=find_links, pip_proxy=proxy)
    with session:
        results = run_step(session, select_nodes(inv, nodes), lambda r: ray.install_ray(r, s), workers=number_option(workers, "--workers"))
    report_step("ray.install", results)


def _versions(c, venv, nodes, workers, title: str) -> None:
    from .ops import ray
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        results = run_step(session, select_nodes(inv, nodes), lambda r: ray.versions_step(r, s.venv), workers=number_option(workers, "--workers"))
    found = {r.node.name: r.value for r in results if r.value is not None}
    odd = ray.mismatches(found)
    for r in results:
        for f in ray.MUST_MATCH:
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
    from .ops import ray
    session, inv, s = _open(c, no_systemd=no_systemd, ray_dashboard_host=dashboard_host, ray_venv=venv)
    with session:
        chosen = select_nodes(inv, nodes)
        targets = [n for n in chosen if n.is_head == bool(head)]
        results = run_step(session, targets, lambda r: ray.start_ray(r, inv, s), workers=number_option(workers, "--workers"))
    report_step("ray.start --head" if head else "ray.start", results)


@task(help={**_INSTALL_HELP, **_START_HELP, "timeout": "seconds to wait for every node (default 180)", **_HELP})
@reported
def setup(c, version=None, venv=None, extra=None, index_url=None, find_links=None, proxy=None,
          no_systemd=False, dashboard_host=None, timeout=None, workers=None, nodes=None):
    """ray.install + head + workers (in parallel) + wait until every node is alive."""
    from .ops import ray
    session, inv, s = _open(c, ray_version=version, ray_venv=venv, ray_extra_packages=extra,
                            pip_index_url=index_url, pip_find_links=find_links, pip_proxy=proxy,
                            no_systemd=no_systemd, ray_dashboard_host=dashboard_host)
    with session:
        results = ray.setup_cluster(session, inv, s, number_option(timeout, "--timeout", float) or ray.DEFAULT_WAIT, number_option(workers, "--workers"))
    report_step("ray.setup", results)


@task(help={"timeout": "seconds to wait (default 180)", "venv": _INSTALL_HELP["venv"]})
@reported
def wait(c, timeout=None, venv=None):
    """Wait until every inventory node is alive in Ray; name the ones that never joined."""
    from .ops import ray
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        results = ray.wait_for_nodes(session, inv.nodes, s, number_option(timeout, "--timeout", float) or ray.DEFAULT_WAIT, ray.expected_gpus(inv))
    report_step("ray.wait", results)


@task(help={"venv": _INSTALL_HELP["venv"]})
@reported
def status(c, venv=None):
    """Ray's nodes (address, alive, CPUs, GPUs, memory), the dashboard URL and its SSH tunnel."""
    from .ops import ray
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        try:
            nodes = ray.cluster_nodes(remote_for(session, inv.head), s)
        except HostError as exc:
            raise Exit(f"ray.status: {exc.reason}", code=1) from None
        except Exception as exc:  # noqa: BLE001 - e.g. the head is unreachable
            raise Exit(f"ray.status: cannot reach the head {inv.head.name}: {exc}", code=255) from None
    names = {n.private: n.name for n in inv.nodes}
    rows = [(names.get(n.ip, "?"), n.ip, "yes" if n.alive else "no", f"{n.cpus:g}", f"{n.gpus:g}",
             human_bytes(n.memory), "head" if n.head else "") for n in sorted(nodes, key=lambda n: (not n.alive, n.ip))]
    print(host_table(["Node", "Address", "Alive", "CPUs", "GPUs", "Memory", "Role"], rows))
    alive = ray.alive_by_ip(nodes)
    ours = [n.private for n in inv.nodes if n.private in alive]
    strays = sorted(ip for ip in alive if ip not in names)
    print(f"ray: {len(ours)}/{len(inv.nodes)} inventory nodes alive, "
          f"{sum(n.cpus for n in alive.values()):g} CPUs, {sum(n.gpus for n in alive.values()):g} GPUs"
          + (f"; also alive, not in the inventory: {', '.join(strays)}" if strays else ""))
    host = s.dashboard_host or inv.head.private
    user = f"{inv.head.user}@" if inv.head.user else ""
    print(f"dashboard: http://{host}:{ray.DASHBOARD_PORT} (private network)")
    print(f"tunnel:    ssh -L {ray.DASHBOARD_PORT}:{inv.head.private}:{ray.DASHBOARD_PORT} {user}{inv.head.public}"
          f"  then open http://localhost:{ray.DASHBOARD_PORT}")
    missing = [n.name for n in inv.nodes if n.private not in alive]
    if missing:
        raise Exit(f"ray.status: not alive: {', '.join(missing)}", code=1)


@task(help={"force": "also `ray stop --force` (kills leftovers)", "venv": _INSTALL_HELP["venv"], **_HELP})
@reported
def stop(c, force=False, venv=None, nodes=None, workers=None):
    """Stop Ray on the workers, then on the head."""
    from .ops import ray
    session, inv, s = _open(c, ray_venv=venv)
    with session:
        chosen = select_nodes(inv, nodes)
        step: Callable[[Remote], Outcome] = lambda r: ray.stop_ray(r, s.venv, force)
        results = run_step(session, [n for n in chosen if not n.is_head], step, workers=number_option(workers, "--workers"))
        results += run_step(session, [n for n in chosen if n.is_head], step)
    report_step("ray.stop", results)


@task(help={"output": "where to write it (default ray-cluster.yaml)", "venv": _INSTALL_HELP["venv"]})
@reported
def cluster_yaml(c, output="ray-cluster.yaml", venv=None):
    """Write a Ray cluster launcher file (provider: local) from the inventory, for `ray up`."""
    from .ops import ray
    inv = resolve_inventory(c.config)
    s = ray.read(c.config, inv, {"ray_venv": venv})
    if not inv.head.private:
        raise InputError(f"the head {inv.head.name} has no private address in the inventory")
    text = ray.cluster_yaml(
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
    from .ops import ray
    session, inv, s = _open(c, ray_venv=venv)
    python = shlex.quote(f"{s.venv}/bin/python")
    with session:
        result = on_node(session, inv.head, lambda head: head.run(
            f"{s.client_env}{python} -c {shlex.quote(ray.SMOKE_CODE)}", warn=True, timeout=300), "ray.smoke")
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
