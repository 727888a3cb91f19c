"""`fab -H a,b,c bootstrap` / `inv bootstrap`: the whole setup as one chain; `inv report`.

One Session (one SSH connection per host) carries every step. Each step runs
on all hosts still in the chain at once, except where order matters (the NFS
server before its clients, the Ray head before its workers, both inside
their step). A host that fails is dropped from the later steps and named in
the final report and in a failed-hosts file that `--retry-failed` reads.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from invoke import task
from invoke.exceptions import Exit

from . import ray as ray_tasks
from .docker import configure_docker, install_docker, verify_docker
from .inventory import preflight_host
from .limits import setup_limits
from .core import chain as plan
from .ops import docker as docker_plan
from .ops import limits as limits_plan
from .ops import netenv as netenv_plan
from .ops import nfs as nfs_plan
from .ops import ray as ray_plan
from .core.cluster import cli_hosts, ensure_private, inventory_path, open_session, setting
from .core.connection import Session
from .core.errors import HostError, InputError, keeping_changes, reported
from .core.facts import parse_facts
from .core.fanout import CHANGED, FAILED, OK, HostResult, fan_out, worst_exit_code
from .core.inventory import Inventory, Node
from .core.localfs import read_text, write_if_changed
from .core.progress import Progress
from .core.remote import Remote
from .core.report import summary_line
from .core.steps import Outcome, merge_phases, remote_for, run_step
from .netenv import setup_netenv
from .ops import sshfs as storage_plan
from .nfs import NfsPlan, setup_share
from .storage import choose, round_trip, setup_sshfs, storage_facts
from .ray import RaySettings, cluster_nodes, read_settings, setup_cluster, versions_step


@dataclass(frozen=True)
class Options:
    """Every setting of the chain, read once (CLI > inventory vars > config > default)."""

    nofile: int
    docker_source: str
    daemon_extra: Mapping[str, Any]
    profile: str
    master_port: int
    secrets: Optional[Mapping[str, str]]
    nfs: NfsPlan  # where the share lives (NFS or sshfs)
    storage: str  # auto, nfs or sshfs
    ray: RaySettings
    ray_timeout: float


def read_options(c, inv: Inventory, nofile, secrets: bool, env_file: str, timeout, storage=None) -> Options:
    def get(key: str, cli: Any = None, default: Any = None) -> Any:
        return setting(c.config, inv, key, cli, default)

    export = nfs_plan.check_path(get("nfs_export", None, nfs_plan.DEFAULT_EXPORT))
    return Options(
        nofile=limits_plan.check_nofile(get("nofile", nofile, limits_plan.DEFAULT_NOFILE)),
        docker_source=docker_plan.check_source(get("docker_source", None, "official")),
        daemon_extra=dict(inv.docker_daemon),
        profile=netenv_plan.check_profile(get("netenv_profile", None, netenv_plan.DEFAULT_PROFILE)),
        master_port=netenv_plan.check_port(get("master_port", None, netenv_plan.DEFAULT_MASTER_PORT)),
        secrets=netenv_plan.load_secrets(env_file) if secrets else None,
        nfs=NfsPlan(
            server=inv.head.private or "",
            server_name=inv.head.name,
            export=export,
            mount=nfs_plan.check_path(get("nfs_mount", None, export)),
            subnet=get("private_subnet"),
        ),
        storage=storage_plan.check_backend(get("storage", storage, storage_plan.DEFAULT_BACKEND)),
        ray=read_settings(c, inv),
        ray_timeout=float(timeout or ray_tasks.DEFAULT_WAIT),
    )


class Chain:
    """One bootstrap run: the hosts still going, every step's results, and the dry-run plan."""

    def __init__(self, session: Session, inv: Inventory, targets: Sequence[Node], steps: Sequence[str],
                 options: Options, progress: Progress, dry_run: bool, workers: Optional[int]):
        self.session = session
        self.inv = inv
        self.targets = list(targets)
        self.steps = list(steps)
        self.o = options
        self.progress = progress
        self.dry_run = dry_run
        self.workers = workers
        self.remotes: Dict[str, Remote] = {n.name: remote_for(session, n, dry_run) for n in inv.nodes}
        self.alive: List[Node] = list(targets)
        self.results: Dict[str, List[HostResult]] = {}
        self.failures: Dict[str, plan.Failure] = {}
        #: The shared-storage backend in use, or None with `storage_problem` saying why.
        self.storage: Optional[str] = None
        self.storage_problem: Optional[str] = None
        self.storage_note = ""
        self.ray_members: Dict[str, ray_plan.RayNode] = {}
        #: Dry run: per step and node, which of the Remote's planned files/commands it added.
        self.marks: Dict[Tuple[str, str], Tuple[int, int]] = {}
        self._printed: Set[Tuple[str, str]] = set()

    # ------------------------------------------------------------------ driving

    def run(self) -> None:
        for step in self.steps:
            nodes = self.alive if step != "verify" else [n for n in self.inv.nodes if n.name not in self.failures]
            if step in plan.NEEDS_HEAD:
                nodes = self._without_orphans(step, nodes)
            if not nodes:
                continue
            before = {n.name: (len(self.remotes[n.name].planned)) for n in nodes}
            with self.progress.step(step, nodes):
                results = STEP_RUNNERS[step](self, nodes)
            for n in nodes:
                self.marks[(step, n.name)] = (before[n.name], len(self.remotes[n.name].planned))
            self._record(step, results)

    def live(self, step: str) -> Callable[[HostResult], None]:
        """Progress callback for steps whose per-host results are final as they come."""

        def done(result: HostResult) -> None:
            self._printed.add((step, result.node.name))
            self.progress.done(step, result)

        return done

    def _record(self, step: str, results: Sequence[HostResult]) -> None:
        self.results.setdefault(step, []).extend(results)
        for r in results:
            if (step, r.node.name) not in self._printed:
                self.progress.done(step, r)
            if r.failed and r.node.name not in self.failures:
                self.failures[r.node.name] = plan.Failure(r.node.name, r.node.public, step, r.reason)
                self.alive = [n for n in self.alive if n.name != r.node.name]

    def _without_orphans(self, step: str, nodes: Sequence[Node]) -> List[Node]:
        """Workers cannot do a head-bound step once the head has failed this run."""
        head = self.failures.get(self.inv.head.name)
        if head is None:
            return list(nodes)
        orphans = [n for n in nodes if not n.is_head]
        self._record(step, [HostResult(n, FAILED, 1, reason=f"the head {head.node} failed at {head.step}")
                            for n in orphans])
        return [n for n in nodes if n.is_head]

    def data(self, step: str, node: Node) -> Dict[str, Any]:
        for r in self.results.get(step, []):
            if r.node.name == node.name:
                return r.data
        return {}

    def status(self, step: str, node: Node) -> str:
        for r in self.results.get(step, []):
            if r.node.name == node.name:
                return r.status
        return "not run"

    def step(self, nodes: Sequence[Node], fn: Callable[[Remote], Outcome], step: str) -> List[HostResult]:
        return run_step(self.session, nodes, fn, workers=self.workers, remotes=self.remotes, on_result=self.live(step))


# --------------------------------------------------------------------------- the steps


def _preflight(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    head_private = chain.inv.head.private

    def one(conn: Any, node: Node) -> HostResult:
        result = preflight_host(chain.session, conn, node, head_private)
        if result.failed:
            return result
        if node.private is None:
            return HostResult(node, FAILED, 1, reason="no private address (give one in the inventory)", data=result.data)
        storage = storage_facts(chain.remotes[node.name])
        d = result.data
        notes = [f"{d.get('os', '?')}; {d.get('gpus', '0')} GPUs; private NIC {d.get('nic') or '-'}"]
        return HostResult(node, OK, data={**d, "storage_facts": storage, "notes": notes})

    return fan_out(chain.session, nodes, one, workers=chain.workers, on_result=chain.live("preflight"))


def docker_step(remote: Remote, source: str, extra: Mapping[str, Any]) -> Outcome:
    """Install (where missing), then merge daemon.json: one step in the chain."""
    installed = install_docker(remote, source)
    with keeping_changes(installed.changes):
        configured = configure_docker(remote, extra, force=False)
    return Outcome(installed.changes + configured.changes, installed.notes + configured.notes)


def _limits(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    return chain.step(nodes, lambda r: setup_limits(r, chain.o.nofile), "limits")


def _docker(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    return chain.step(nodes, lambda r: docker_step(r, chain.o.docker_source, chain.o.daemon_extra), "docker")


def _netenv(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    o = chain.o
    head = chain.inv.head.private or ""
    return chain.step(nodes, lambda r: setup_netenv(r, head, o.master_port, o.profile, o.secrets), "netenv")


def _storage(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    """The backend every node supports (as asked: nfs, sshfs or auto), then the share."""
    head = chain.inv.head
    facts: Dict[str, str] = {}
    try:
        for n in [head, *[x for x in nodes if not x.is_head]]:
            # From preflight; read now only for a head outside this run (a retry of workers).
            known = chain.data("preflight", n).get("storage_facts")
            facts[n.name] = known if known is not None else storage_facts(chain.remotes[n.name])
    except Exception as exc:  # noqa: BLE001 - the head is down; its clients cannot mount
        return [HostResult(n, FAILED, 1, reason=f"cannot check the head's kernel for shared storage ({exc})") for n in nodes]
    choice = choose(chain.o.storage, head, facts)
    backend, why = choice.backend, choice.why
    chain.storage, chain.storage_note = backend, why
    if backend is None:
        chain.storage_problem = why
        return [HostResult(n, OK, data={"nfs": "unavailable", "notes": [why]}) for n in nodes]
    kw = dict(workers=chain.workers, remotes=chain.remotes, on_result=chain.live("storage"))
    if backend == "nfs":
        results = setup_share(chain.session, nodes, chain.o.nfs, **kw)
    else:
        results = setup_sshfs(chain.session, chain.inv, nodes, chain.o.nfs, **kw)
    for r in results:
        r.data["nfs"] = f"{backend} " + ("shared" if r.node.is_head else "mounted")
        if why:
            r.data.setdefault("notes", []).append(why)
    return results


def _ray(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    return setup_cluster(chain.session, chain.inv, chain.o.ray, chain.o.ray_timeout, chain.workers,
                         nodes=nodes, remotes=chain.remotes, wait=not chain.dry_run)


NIC_PREFIX = "NCCL_SOCKET_IFNAME="
VERIFY_FACTS = "echo nofile=$(ulimit -n); echo gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')"


def verify_node(remote: Remote, steps: Sequence[str], o: Options) -> Outcome:
    """What the report shows per node, read back from the node (not trusted from the steps)."""
    data: Dict[str, Any] = {}
    notes: List[str] = []
    facts = parse_facts(remote.run(VERIFY_FACTS).stdout)
    data["ulimit"], data["gpus"] = facts.get("nofile"), facts.get("gpus")
    env = remote.read_text(netenv_plan.ENV_FILE) or ""
    data["nic"] = next((line[len(NIC_PREFIX):] for line in env.splitlines() if line.startswith(NIC_PREFIX)), None)
    data["firewall"] = [line for line in remote.script(netenv_plan.FIREWALL_SCRIPT, sudo=True).stdout.splitlines()
                        if line.strip()]
    if "docker" in steps:
        checked = verify_docker(remote, o.daemon_extra, None)
        notes += checked.notes
        data["docker"] = checked.notes[0].split(":")[0].replace("docker ", "") if checked.notes else "?"
    if "ray" in steps:
        data["versions"] = versions_step(remote, o.ray.venv).data["versions"]
    return Outcome([], notes, data)


def _verify(chain: Chain, nodes: Sequence[Node]) -> List[HostResult]:
    if chain.dry_run:
        return []
    phases: List[List[HostResult]] = [run_step(chain.session, nodes, lambda r: verify_node(r, chain.steps, chain.o),
                                               workers=chain.workers, remotes=chain.remotes)]
    head = chain.inv.head
    head_ok = any(n.is_head for n in nodes)
    if "storage" in chain.steps and chain.storage and head_ok:
        trip = round_trip(chain.session, chain.inv, nodes, chain.o.nfs, chain.storage, chain.workers, remotes=chain.remotes)
        for r in trip:
            r.data["nfs_roundtrip"] = not r.failed
        phases.append(trip)
    if "ray" in chain.steps:
        phases.append(_ray_members(chain, nodes, head_ok))
    return merge_phases(nodes, phases)


def _ray_members(chain: Chain, nodes: Sequence[Node], head_ok: bool) -> List[HostResult]:
    """Every node must be alive in the head's Ray cluster."""
    if not head_ok:
        return [HostResult(n, FAILED, 1, reason="Ray: the head failed") for n in nodes]
    try:
        members = ray_plan.alive_by_ip(cluster_nodes(chain.remotes[chain.inv.head.name], chain.o.ray))
    except HostError as exc:
        return [HostResult(n, FAILED, 1, reason=exc.reason) for n in nodes]
    out = []
    for n in nodes:
        member = members.get(n.private or "")
        if member is None:
            out.append(HostResult(n, FAILED, 1, reason="not alive in the Ray cluster"))
        else:
            out.append(HostResult(n, OK, data={"ray": "alive (head)" if member.head else "alive",
                                               "ray_gpus": member.gpus, "ray_cpus": member.cpus}))
    chain.ray_members = members
    return out


STEP_RUNNERS: Dict[str, Callable[[Chain, Sequence[Node]], List[HostResult]]] = {
    "preflight": _preflight,
    "limits": _limits,
    "docker": _docker,
    "netenv": _netenv,
    "storage": _storage,
    "ray": _ray,
    "verify": _verify,
}


# --------------------------------------------------------------------------- the report


def _nfs_cell(chain: Chain, node: Node) -> str:
    if "storage" not in chain.steps:
        return "skipped"
    if chain.status("storage", node) == "not run" and chain.status("verify", node) == "not run":
        return "-"
    if chain.storage_problem:
        return "unavailable"
    shown = chain.data("storage", node).get("nfs") or chain.storage or "-"
    trip = chain.data("verify", node).get("nfs_roundtrip")
    return f"{shown}, round trip ok" if trip else shown


def _gpus_cell(pre: Mapping[str, Any], ver: Mapping[str, Any]) -> str:
    found = ver.get("gpus", pre.get("gpus"))
    if found is None:
        return "-"
    text = "none" if str(found) == "0" else str(found)
    if ver.get("ray_gpus") is not None and str(found) != "0":
        text += f" (Ray {ver['ray_gpus']:g})"
    return text


def _result_cell(chain: Chain, node: Node) -> str:
    failure = chain.failures.get(node.name)
    if failure:
        return f"failed at {failure.step}: {failure.reason}"
    if node.name not in {n.name for n in chain.targets}:
        return "ok (verified only)" if chain.status("verify", node) == OK else "not in this run"
    statuses = [chain.status(s, node) for s in chain.steps]
    return CHANGED if CHANGED in statuses else OK


def node_rows(chain: Chain) -> List[plan.NodeRow]:
    rows = []
    for n in chain.inv.nodes:
        pre, ver = chain.data("preflight", n), chain.data("verify", n)
        rows.append(plan.NodeRow(
            node=n.name, public=n.public, private=n.private or "-", nid=n.nid, role=n.role,
            nic=chain.data("netenv", n).get("nic") or ver.get("nic") or pre.get("nic") or "-",
            docker=ver.get("docker") or ("skipped" if "docker" not in chain.steps else "-"),
            nfs=_nfs_cell(chain, n),
            ulimit=str(chain.data("limits", n).get("nofile") or ver.get("ulimit") or "-"),
            ray=ver.get("ray") or ("skipped" if "ray" not in chain.steps else "-"),
            gpus=_gpus_cell(pre, ver),
            result=_result_cell(chain, n),
        ))
    return rows


def checks_and_warnings(chain: Chain) -> Tuple[List[str], List[str]]:
    checks: List[str] = []
    warnings: List[str] = []
    verified = [r for r in chain.results.get("verify", []) if not r.failed]
    total = len(chain.inv.nodes)
    if "limits" in chain.steps:
        values = sorted({str(chain.data("limits", r.node).get("nofile") or r.data.get("ulimit")) for r in verified})
        checks.append(f"nofile: {', '.join(values) or '-'} in a new login ({len(verified)}/{total} nodes)")
    if "docker" in chain.steps:
        versions = sorted({r.data.get("docker") for r in verified if r.data.get("docker")})
        checks.append(f"Docker: {len(verified)}/{total} nodes active ({', '.join(versions) or '-'}), "
                      "address pools as configured")
    if "storage" in chain.steps:
        if chain.storage_problem:
            checks.append("Storage: unavailable on these kernels (no shared directory)")
            warnings.append(chain.storage_problem)
        elif chain.storage:
            trips = [r for r in verified if r.data.get("nfs_roundtrip") and not r.node.is_head]
            rates = storage_plan.summarize((r.data.get("write_mib_s"), r.data.get("read_mib_s")) for r in trips)
            checks.append(f"Storage ({chain.storage}): round trip {len(trips)}/{len(chain.inv.workers)} workers read the "
                          f"head's token ({chain.o.nfs.server_name}:{chain.o.nfs.export} on {chain.o.nfs.mount})"
                          + (f"; {rates}" if rates else ""))
            if chain.storage_note.startswith("auto: NFS unavailable"):
                warnings.append(chain.storage_note)
    if "ray" in chain.steps:
        m = chain.ray_members
        known = {n.private for n in chain.inv.nodes}
        alive = [x for ip, x in m.items() if ip in known]
        checks.append(f"Ray: {len(alive)}/{total} nodes alive, {sum(x.cpus for x in alive):g} CPUs, "
                      f"{sum(x.gpus for x in alive):g} GPUs")
        found = {r.node.name: r.data["versions"] for r in verified if "versions" in r.data}
        odd = ray_plan.mismatches(found)
        if odd:
            for f, names in odd.items():
                warnings.append(f"version mismatch: {f} differs on {', '.join(names)}")
            checks.append("Versions: MISMATCH (see warnings)")
        elif found:
            sample = next(iter(found.values()))
            checks.append(f"Versions: python {sample.get('python')}, ray {sample.get('ray')} on {len(found)}/{total} nodes")
    for r in verified:
        for line in r.data.get("firewall") or []:
            warnings.append(f"firewall rule on {r.node.name}: {line}")
    for name, f in chain.failures.items():
        warnings.append(f"{name} failed at {f.step}: {f.reason}")
    return checks, warnings


def access_lines(chain: Chain, aliases: Sequence[str], failed_file: Optional[str]) -> List[str]:
    head = chain.inv.head

    def ssh(node: Node) -> str:
        return plan.ssh_command(node, aliases, chain.inv.known_hosts)

    shown = chain.inv.nodes if len(chain.inv.nodes) <= 4 else chain.inv.nodes[:2]
    lines = [ssh(n) for n in shown]
    if len(shown) < len(chain.inv.nodes):
        lines.append(f"... and {len(chain.inv.nodes) - len(shown)} more nodes the same way")
    target = ssh(head)[len("ssh "):]
    port = ray_plan.DASHBOARD_PORT
    lines.append(f"ssh -N -L {port}:{head.private}:{port} {target}   # then open http://localhost:{port}")
    lines.append("inv logs.tail /tmp/ray/session_latest/logs/raylet.out -n 50")
    lines.append(f"{ssh(head)} journalctl -u {ray_plan.HEAD_UNIT} -f")
    lines.append("inv report")
    if failed_file:
        lines.append("inv bootstrap --retry-failed")
    return lines


def build_report(chain: Chain, inventory_label: str, aliases: Sequence[str], failed_file: Optional[str]) -> plan.Report:
    checks, warnings = checks_and_warnings(chain)
    everything = [r for results in chain.results.values() for r in results]
    ran = [n for n in chain.inv.nodes if any(r.node.name == n.name for r in everything)]
    merged = merge_phases(ran, list(chain.results.values()))
    return plan.Report(
        created=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        inventory=inventory_label,
        steps=list(chain.steps),
        nodes=node_rows(chain),
        checks=checks,
        warnings=warnings,
        access=access_lines(chain, aliases, failed_file),
        summary=summary_line("bootstrap", merged, changed=True),
        exit_code=worst_exit_code(everything),
        step_status={n.name: {s: chain.status(s, n) for s in chain.steps} for n in chain.inv.nodes},
    )


def print_plan(chain: Chain) -> int:
    """The dry run's answer: per host and step, what would change, with diffs."""
    would = 0
    for node in chain.targets:
        remote = chain.remotes[node.name]
        print(f"== {node.name} ({node.public})")
        for step in chain.steps[1:]:
            result = next((r for r in chain.results.get(step, []) if r.node.name == node.name), None)
            if result is None:
                continue
            if result.failed:
                print(f"  {step}: would fail: {result.reason}")
                continue
            changes = result.data.get("changes") or []
            if not changes:
                notes = "; ".join(result.data.get("notes") or [])
                print(f"  {step}: ok, nothing to change" + (f" ({notes})" if notes else ""))
                continue
            would += 1
            print(f"  {step}: would change:")
            for line in changes:
                print(f"    - {line}")
            start, stop = chain.marks.get((step, node.name), (0, 0))
            for change in remote.planned[start:stop]:
                print("".join(f"      {line}\n" for line in change.diff().splitlines()), end="")
    everything = [r for results in chain.results.values() for r in results]
    failed = sorted({r.node.name for r in everything if r.failed})
    print(f"bootstrap --dry-run: {len(chain.targets)} hosts, {would} host-steps would change, "
          f"{len(failed)} hosts failed{' (' + ', '.join(failed) + ')' if failed else ''}; nothing was changed")
    return worst_exit_code(everything)


# --------------------------------------------------------------------------- tasks


def choose_targets(inv: Inventory, retry_failed: bool, hosts_from: Optional[str], failed_file: str) -> Optional[Tuple[Node, ...]]:
    """All nodes, or those of a hosts file; None when a retry finds nothing to retry."""
    if retry_failed and hosts_from:
        raise InputError("give --retry-failed or --hosts-from, not both", path="--hosts-from")
    if not (retry_failed or hosts_from):
        return inv.nodes
    path = hosts_from or failed_file
    text = read_text(path)
    if text is None:
        if retry_failed:
            return None
        raise InputError("no such hosts file", path=path)
    wanted = plan.parse_hosts_file(text)
    if not wanted:
        return None
    return plan.pick_nodes(inv, wanted, path)


@task(
    auto_shortflags=False,
    help={
        "skip": f"steps to leave out, comma-separated ({', '.join(plan.OPTIONAL_STEPS)})",
        "only": "run only these steps (preflight always runs)",
        "dry_run": "connect and gather facts; print what would change, with diffs; change nothing",
        "retry_failed": "run only the hosts the last bootstrap failed on (from the failed-hosts file)",
        "hosts_from": "run only the hosts listed in this file (names or addresses, one per line)",
        "nofile": f"open files per process (default {limits_plan.DEFAULT_NOFILE}; inventory var nofile)",
        "secrets": "also write the local .env's variables to /etc/gpufab/secrets.env (0600)",
        "env_file": "the .env file for --secrets (default .env)",
        "storage": "shared storage backend: nfs (default), sshfs or auto (inventory var storage)",
        "timeout": f"seconds Ray gets to show every node (default {ray_tasks.DEFAULT_WAIT})",
        "workers": "hosts worked on at once (default 32)",
    }
)
@reported
def bootstrap(c, skip=None, only=None, dry_run=False, retry_failed=False, hosts_from=None, nofile=None,
              secrets=False, env_file=".env", storage=None, timeout=None, workers=None):
    """The whole setup: preflight, limits, docker, netenv, storage, ray, verify; then the report."""
    n_workers = int(workers) if workers else None
    files = plan.run_files(inventory_path(c.config), bool(cli_hosts(c.config)))
    with open_session(c.config) as session:
        steps = plan.select_steps(skip, only, session.inventory.vars.get(plan.SKIP_VAR))
        chosen = choose_targets(session.inventory, retry_failed, hosts_from, files.failed)
        if chosen is None:
            print(f"bootstrap: no failed hosts recorded in {files.failed if retry_failed else hosts_from}; nothing to retry")
            return
        inv = ensure_private(session, workers=n_workers)
        options = read_options(c, inv, nofile, secrets, env_file, timeout, storage)
        targets = [inv.by_name(n.name) for n in chosen]
        print(f"bootstrap{' --dry-run' if dry_run else ''}: {', '.join(n.name for n in targets)}; "
              f"steps: {', '.join(steps)}")
        progress = Progress(width=max(len(n.name) for n in inv.nodes))
        chain = Chain(session, inv, targets, steps, options, progress, dry_run, n_workers)
        chain.run()
    if dry_run:
        code = print_plan(chain)
        if code:
            raise Exit(code=code)
        return
    failures = [chain.failures[n.name] for n in targets if n.name in chain.failures]
    aliases = plan.ssh_aliases(read_text(os.path.expanduser("~/.ssh/config")))
    report = build_report(chain, inv.path or "--hosts " + ",".join(n.public for n in inv.nodes), aliases,
                          files.failed if failures else None)
    print()
    print(report.to_text(), end="")
    write_if_changed(files.markdown, report.to_markdown())
    write_if_changed(files.json, report.to_json())
    if failures:
        write_if_changed(files.failed, plan.failed_hosts_text(failures))
        print(f"report: {files.markdown} and {files.json}; failed hosts: {files.failed}")
    else:
        if os.path.exists(files.failed):
            os.unlink(files.failed)
        print(f"report: {files.markdown} and {files.json}")
    if report.exit_code:
        raise Exit(code=report.exit_code)


@task(help={"format": "text (default), markdown or json"})
@reported
def report(c, format="text"):
    """Show the last bootstrap's report again, without touching the nodes."""
    files = plan.run_files(inventory_path(c.config), bool(cli_hosts(c.config)))
    text = read_text(files.json)
    if text is None:
        raise InputError("no report yet: run bootstrap first", path=files.json)
    saved = plan.Report.from_json(text, files.json)
    shown = {"text": saved.to_text, "markdown": saved.to_markdown, "json": saved.to_json}.get(format)
    if shown is None:
        raise InputError(f"unknown format {format!r} (text, markdown or json)", path="--format")
    print(shown(), end="")
