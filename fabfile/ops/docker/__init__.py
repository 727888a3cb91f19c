"""`docker`: install it, merge gpufab's keys into daemon.json, and read back what dockerd runs with.

daemon.json belongs to the operator as much as to gpufab, so it is merged,
not overwritten: gpufab sets its own keys and keeps every other one. A file
that is not valid JSON is never replaced silently (dockerd would not start
on it either, and it may hold settings someone needs).
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...core import programs
from ...core import packages as apt
from ...core.chain import Column, Step, every_node
from ...core.cluster import reach_of, setting
from ...core.errors import HostError, InputError, keeping_changes
from ...core.facts import parse_facts
from ...core.files import ABSENT_SUFFIX, BEFORE_DIR, ManagedFile, plan_files, render
from ...core.inventory import USER_RE, Inventory
from ...core.networks import Reach, check_bind_address
from ...core.remote import Remote, ensure_packages, last_line
from ...core.steps import Outcome
from ..shared import infiniband
from . import nvidia_toolkit
from ...core.declared import AptSource, Setting, Undo, choice, declare, owns, undoes
from ...core.context import RunContext

DAEMON_JSON = "/etc/docker/daemon.json"
KEYRING = "/etc/apt/keyrings/docker.asc"
SOURCE_LIST = "/etc/apt/sources.list.d/docker.list"
SOURCES = ("official", "distro")
OFFICIAL_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin")
DISTRO_PACKAGES = ("docker.io",)
#: Distributions download.docker.com has an apt repository for.
OFFICIAL_DISTROS = ("debian", "ubuntu")


class DaemonJsonError(ValueError):
    """daemon.json on a node is not valid JSON (or not a JSON object)."""


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise InputError(f"unknown docker source {source!r} (expected one of: {', '.join(SOURCES)})", path="--source")
    return source


def key_url(distro: str) -> str:
    return f"https://download.docker.com/linux/{distro}/gpg"


def source_list(distro: str, codename: str, arch: str) -> str:
    return render("docker/docker.list.j2", distro=distro, codename=codename, arch=arch, keyring=KEYRING)


def managed_settings(extra: Mapping[str, Any]) -> Dict[str, Any]:
    """gpufab's keys: the template's defaults, overridden by the inventory's."""
    settings = json.loads(render("docker/daemon.json.j2"))
    settings.update(extra)
    return settings


def parse_daemon_json(text: Optional[str]) -> Dict[str, Any]:
    """The node's daemon.json as a dict ({} when absent or empty)."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DaemonJsonError(f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DaemonJsonError("the top level is not a JSON object")
    return data


def nvidia_runtime() -> Dict[str, Any]:
    """The "nvidia" entry gpufab adds to "runtimes" (and reset takes out again only if it is still this)."""
    return json.loads(render("docker/nvidia-runtime.json.j2"))


def merge_daemon_json(existing: Mapping[str, Any], managed: Mapping[str, Any],
                      nvidia: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Existing keys kept (in their order), gpufab's set; the "nvidia" runtime kept, or `nvidia` added as it."""
    merged = dict(existing)
    merged.update(managed)
    if nvidia is not None:
        runtimes = dict(merged.get("runtimes") or {})
        if "nvidia" not in runtimes:
            runtimes["nvidia"] = dict(nvidia)
        merged["runtimes"] = runtimes
    return merged


def dump_daemon_json(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, indent=2) + "\n"


def pools(settings: Mapping[str, Any]) -> List[Tuple[str, int]]:
    """(base, size) of each default address pool in daemon.json settings."""
    return [(str(p["base"]), int(p["size"])) for p in settings.get("default-address-pools") or []]


@dataclass(frozen=True)
class DockerInfo:
    server_version: str
    pools: List[Tuple[str, int]]
    runtimes: List[str]


def parse_docker_info(text: str) -> DockerInfo:
    """Parse `docker info --format '{{json .}}'`.

    Docker prints the daemon's errors in `ServerErrors` and still exits 0
    when it cannot reach the daemon; those become a ValueError here.
    """
    data = json.loads(text)
    errors = data.get("ServerErrors") or []
    if errors:
        raise ValueError("; ".join(errors))
    return DockerInfo(
        server_version=str(data.get("ServerVersion") or "?"),
        pools=[(str(p["Base"]), int(p["Size"])) for p in data.get("DefaultAddressPools") or []],
        runtimes=sorted((data.get("Runtimes") or {}).keys()),
    )


#: key=value facts for install: os-release, dpkg arch, docker's presence.
INSTALL_FACTS = programs.text("docker-install-facts.sh")
#: `docker=yes` where dockerd is (also for a non-root login, whose PATH has no sbin), `nvidia=yes` where
#: NVIDIA's container runtime is: what configure merges daemon.json for.
RUNTIME_FACTS = programs.text("docker-runtime-facts.sh")

DOCKER_INFO_CMD = "docker info --format '{{json .}}'"
#: The users gpufab put in group docker, a name a line: `reset` takes these out, and no one else.
GROUP_RECORD = "/var/lib/gpufab/docker-group-added"
#: Seconds dockerd gets to answer after a restart before it counts as down.
RESTART_WAIT = 45


def install_docker(remote: Remote, source: str) -> Outcome:
    """Install Docker unless present; the SSH user joins the docker group."""
    facts = parse_facts(remote.run(INSTALL_FACTS).stdout)
    done: List[str] = []
    notes: List[str] = []
    if facts.get("DOCKERD"):
        notes.append(f"already installed ({facts.get('VERSION') or facts['DOCKERD']})")
    elif source == "distro":
        done += ensure_packages(remote, DISTRO_PACKAGES)
    else:
        with remote.apt_lock:  # its own `apt-get update` too, one apt run at a time
            done += _install_official(remote, facts)
    with keeping_changes(done):
        if not remote.check("systemctl is-active --quiet docker"):
            result = remote.change("systemctl enable --now docker", warn=True)
            if result.exited != 0:
                raise HostError(f"docker did not start: {last_line(result.stderr)}")
            done.append("started docker")
        groups = facts.get("GROUPS", "").split()
        if not remote.is_root and "docker" not in groups:
            remote.change(f"usermod -aG docker {shlex.quote(remote.user)}")
            remote.change(apt.record_command([remote.user], GROUP_RECORD))
            done.append(f"added {remote.user} to group docker (effective at next login)")
    version = remote.run("docker version --format '{{.Server.Version}}'", sudo=True, warn=True).stdout.strip()
    notes.append(f"docker {version or '?'}")
    return Outcome(done, notes)


def _install_official(remote: Remote, facts: Mapping[str, str]) -> List[str]:
    """Docker's apt repository: key in /etc/apt/keyrings, a signed-by source line.

    If the repository cannot be used (no network to it, unknown distro), the
    key and source line are removed again so later apt runs are not broken.
    """
    distro, codename, arch = facts.get("ID", ""), facts.get("VERSION_CODENAME", ""), facts.get("ARCH", "")
    if distro not in OFFICIAL_DISTROS or not codename:
        raise HostError(f"Docker's apt repository has no {distro or 'unknown'} {codename}; use --source distro")
    done = ensure_packages(remote, ("ca-certificates", "curl"))
    fetch = remote.change(
        f"install -d -m 0755 /etc/apt/keyrings && curl -fsSL --max-time 60 {shlex.quote(key_url(distro))}"
        f" -o {KEYRING}.tmp && chmod a+r {KEYRING}.tmp && mv -f {KEYRING}.tmp {KEYRING}",
        warn=True,
    )
    if fetch.exited != 0:
        remote.change(f"rm -f {KEYRING}.tmp", warn=True)
        raise HostError(
            f"cannot fetch Docker's apt key from {key_url(distro)} ({last_line(fetch.stderr)}); use --source distro",
            changes=done,
        )
    source = ManagedFile(SOURCE_LIST, source_list(distro, codename, arch))
    done += [f"fetched {KEYRING}"] + remote.write_files(plan_files([source], remote.read_state([source])))
    update = remote.change("DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update", warn=True)
    if update.exited != 0 or "download.docker.com" in update.stderr:
        remote.change(f"rm -f {SOURCE_LIST} {KEYRING}", warn=True)
        raise HostError(
            f"apt cannot use download.docker.com ({last_line(update.stderr)}); key and source removed; use --source distro",
            changes=done,
        )
    return done + ensure_packages(remote, OFFICIAL_PACKAGES)


def configure_docker(remote: Remote, extra: Mapping[str, Any], force: bool) -> Outcome:
    """Merge gpufab's keys (and NVIDIA's runtime, where the toolkit is) into daemon.json; restart dockerd only if it changed."""
    probe = remote.run(RUNTIME_FACTS).stdout
    if "docker=yes" not in probe and not remote.dry_run:  # a dry run plans against no dockerd
        raise HostError("docker is not installed (run docker.install)")
    state = remote.read_paths([DAEMON_JSON])[DAEMON_JSON]
    try:
        existing = parse_daemon_json(state.content)
    except DaemonJsonError as exc:
        if not force:
            raise HostError(f"{DAEMON_JSON} is not valid JSON ({exc}); fix it, or run with --force to replace it") from None
        existing = {}
    nvidia = None
    if "nvidia=yes" in probe and "nvidia" not in (existing.get("runtimes") or {}):
        # What NVIDIA's own `nvidia-ctk runtime configure` writes; the template where only the runtime is there.
        nvidia = nvidia_toolkit.runtime_entry(remote) or nvidia_runtime()
    merged = merge_daemon_json(existing, managed_settings(extra), nvidia)
    wanted = ManagedFile(DAEMON_JSON, dump_daemon_json(merged))
    changes = plan_files([wanted], {DAEMON_JSON: state})
    if state.exists and merged == existing and all(c.kind != "perms" for c in changes):
        changes = []  # same settings, another layout: not worth a dockerd restart
    notes = [f"pools {', '.join(f'{b} in /{s}s' for b, s in pools(merged))}"]
    if not changes:
        return Outcome([], notes)
    done = remote.write_files(changes)
    if remote.dry_run:
        return Outcome(done + ["restarted docker"], notes)
    error = restart_docker(remote)
    if error:
        remote.restore_previous(DAEMON_JSON, existed=state.exists)
        again = restart_docker(remote)
        after = "docker restarted on it" if not again else f"docker still down: {again}"
        raise HostError(
            f"dockerd did not come back with the new daemon.json ({error}); previous file restored, {after}",
            changes=done + ["restored the previous daemon.json"],
        )
    return Outcome(done + ["restarted docker"], notes)


def restart_docker(remote: Remote) -> Optional[str]:
    """Restart dockerd and wait until it answers; the reason when it does not."""
    # Several restarts in a row trip systemd's start limit; a fix must not.
    remote.change("systemctl reset-failed docker.service docker.socket 2>/dev/null; true", warn=True)
    result = remote.change("systemctl restart docker", warn=True, timeout=RESTART_WAIT + 30)
    deadline = time.monotonic() + RESTART_WAIT
    while result.exited == 0:
        info = remote.run(DOCKER_INFO_CMD, sudo=True, warn=True)
        if info.exited == 0:
            try:
                parse_docker_info(info.stdout)
                return None
            except ValueError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    journal = remote.run(
        # dockerd's own complaint, not systemd's "Failed to start" that follows it.
        "journalctl -u docker --no-pager -n 30 -o cat 2>/dev/null | grep -iE 'error|fail|invalid|unable'"
        " | grep -vE '^(Failed to start|docker.service:|Stopped|Started)' | tail -n1",
        sudo=True,
        warn=True,
    ).stdout.strip()
    return journal or last_line(result.stderr) or "dockerd is not active"


def verify_docker(remote: Remote, extra: Mapping[str, Any], container: Optional[str],
                  gpu_image: Optional[str] = None) -> Outcome:
    """dockerd active, `docker info` answering with the configured pools; on GPU nodes, NVIDIA's runtime in it."""
    if not remote.check("systemctl is-active --quiet docker"):
        raise HostError("docker service is not active")
    info_run = remote.run(DOCKER_INFO_CMD, sudo=True, warn=True)
    try:
        info = parse_docker_info(info_run.stdout)
    except ValueError as exc:
        raise HostError(f"docker info failed: {exc or last_line(info_run.stderr)}") from None
    want = pools(managed_settings(extra))
    if info.pools != want:
        seen = ", ".join(f"{b}/{s}" for b, s in info.pools) or "none"
        raise HostError(f"docker uses address pools {seen}, not the configured ones (run docker.configure)")
    notes = [f"docker {info.server_version}: pools {', '.join(f'{b} in /{s}s' for b, s in info.pools)}"]
    gpus = nvidia_toolkit.gpu_facts(remote)
    if gpus.gpus and "nvidia" not in info.runtimes:
        raise HostError(f"docker has no nvidia runtime on a node with {gpus.gpus} NVIDIA GPUs (run docker.setup)")
    gpu_note = nvidia_toolkit.container_check(remote, gpu_image, gpus)
    notes += [gpu_note] if gpu_note else []
    ib = remote.fact(infiniband.PORTS)
    if ib.rails():
        notes.append(f"InfiniBand/RoCE rails ({', '.join(p.name for p in ib.rails())}): a container needs "
                     f"{infiniband.CONTAINER_FLAGS}")
    status_value = DockerStatus(info.server_version)
    if container:
        status = remote.run(
            f"docker ps --filter name=^{shlex.quote(container)}$ --format '{{{{.Status}}}}'", sudo=True, warn=True
        ).stdout.strip()
        if not status:
            raise HostError(f"container {container} is not running")
        notes.append(f"container {container}: {status}")
    return Outcome([], notes, status_value)


@dataclass(frozen=True)
class DockerSettings:
    source: str
    #: The inventory's `docker: daemon:` keys, merged over the template's.
    daemon: Mapping[str, Any] = field(default_factory=dict)
    #: Replace a daemon.json that is not valid JSON (it is backed up).
    force: bool = False
    #: `docker.verify --container NAME`: also want it running.
    container: Optional[str] = None
    #: What allow_public_networks let through (a TCP API socket on a public address): said every run.
    warnings: Tuple[str, ...] = ()
    #: NVIDIA's container toolkit on GPU nodes: where from, which key, the image verify tries `--gpus all` in.
    toolkit: nvidia_toolkit.ToolkitSettings = nvidia_toolkit.ToolkitSettings()


def check_daemon_hosts(daemon: Mapping[str, Any], reach: Reach) -> List[str]:
    """`docker: daemon: hosts:` held to the private rule: a TCP socket is root on the node for whoever reaches it.

    Returns the warnings for addresses only `allow_public_networks` lets through."""
    hosts = daemon.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise InputError("docker.daemon.hosts must be a list of sockets (unix://..., tcp://IP:PORT)", path="docker.daemon")
    warnings = []
    for host in hosts:
        if not host.startswith("tcp://"):
            continue
        where = host[len("tcp://"):].rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
        warning = check_bind_address(where, f"the Docker API {host}", reach, "docker.daemon.hosts")[1]
        warnings += [warning] if warning else []
    return warnings


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> DockerSettings:
    """CLI `--source` > inventory var `docker_source` > config > official; daemon keys from the inventory."""
    warnings = check_daemon_hosts(inv.docker_daemon, reach_of(config, inv))
    return DockerSettings(
        source=check_source(setting(config, inv, "docker_source", cli.get("source"), "official")),
        daemon=dict(inv.docker_daemon),
        warnings=tuple(warnings),
        force=bool(cli.get("force", False)),
        container=cli.get("container"),
        toolkit=nvidia_toolkit.read(config, inv),
    )


@dataclass(frozen=True)
class DockerStatus:
    version: str


def downloads(remote: Remote, s: DockerSettings) -> apt.Downloads:
    """Debian's packages where Docker is missing (Docker's own repository is set up by the step itself)."""
    if s.source != "distro" or parse_facts(remote.run(INSTALL_FACTS).stdout).get("DOCKERD"):
        return apt.Downloads()
    return apt.Downloads(debs=tuple(apt.missing(DISTRO_PACKAGES, apt.parse_installed(
        remote.run(apt.query_command(DISTRO_PACKAGES)).stdout))))


def install_with_toolkit(remote: Remote, s: DockerSettings) -> Outcome:
    """Docker where missing; then, on a node whose driver lists NVIDIA GPUs, NVIDIA's container toolkit."""
    installed = install_docker(remote, s.source)
    with keeping_changes(installed.changes):
        toolkit = nvidia_toolkit.ensure_toolkit(remote, s.toolkit)
    return Outcome(installed.changes + toolkit.changes, installed.notes + toolkit.notes)


def apply(remote: Remote, s: DockerSettings) -> Outcome:
    """Install (where missing), then merge daemon.json: the bootstrap step."""
    installed = install_with_toolkit(remote, s)
    with keeping_changes(installed.changes):
        configured = configure_docker(remote, s.daemon, force=s.force)
    return Outcome(installed.changes + configured.changes, installed.notes + configured.notes)


def check(remote: Remote, s: DockerSettings) -> Outcome:
    return verify_docker(remote, s.daemon, s.container, s.toolkit.test_image)


def _cell(run: RunContext, node: Any) -> str:
    found = run.checked(NAME, node)
    return found.version if found else "-"


def _report(run: RunContext, s: DockerSettings) -> Tuple[List[str], List[str]]:
    verified = run.verified()
    versions = sorted({run.checked(NAME, n).version for n in verified if run.checked(NAME, n)})
    return [f"Docker: {len(verified)}/{len(run.inv.nodes)} nodes active ({', '.join(versions) or '-'}), "
            "address pools as configured"], list(s.warnings)


NAME = "docker"
STEP = Step(NAME, settings=read, run=every_node(NAME, apply), downloads=downloads,
            # limits writes docker.service's drop-ins: Docker starts after them.
            needs=("preflight", "limits", "fetch"),
            check=check, columns=(Column("docker", "Docker", _cell),), report=_report)


DECLARED = declare(
    "ops.docker",
    Setting("docker_source", "where Docker comes from: official (download.docker.com) or distro", "official",
            kind=choice(*SOURCES), check=check_source),
)


# --------------------------------------------------------------------------- reset


def unmerge_daemon_json(current: Mapping[str, object], managed: Mapping[str, object], before: Mapping[str, object],
                        nvidia_runtime: Mapping[str, object]) -> Dict[str, object]:
    """gpufab's keys out of daemon.json again; a key the node had before gpufab gets that value back.

    `before` is the node's file from before gpufab first wrote it ({} when
    there was none). The NVIDIA runtime goes only where gpufab added it.
    """
    out = dict(current)
    for key, value in managed.items():
        if key in before and before[key] != value:
            out[key] = before[key]
        elif key not in before:
            out.pop(key, None)
    runtimes = out.get("runtimes")
    had = before.get("runtimes")
    if isinstance(runtimes, dict) and runtimes.get("nvidia") == nvidia_runtime and not (
            isinstance(had, dict) and "nvidia" in had):
        rest = {k: v for k, v in runtimes.items() if k != "nvidia"}
        if rest:
            out["runtimes"] = rest
        else:
            out.pop("runtimes")
    return out


def reset_daemon_json(remote: Remote, extra: Mapping[str, object]) -> Outcome:
    """gpufab's keys merged out; the file removed when gpufab made it and nothing else is left in it."""
    path = DAEMON_JSON
    before_copy, absent = BEFORE_DIR + path, BEFORE_DIR + path + ABSENT_SUFFIX
    states = remote.read_paths([path, before_copy, absent])
    if not states[path].exists:
        return Outcome([], [])
    try:
        current = parse_daemon_json(states[path].content)
        before = parse_daemon_json(states[before_copy].content) if states[before_copy].exists else {}
    except DaemonJsonError as exc:
        return Outcome([], [f"{path} left as it is: not valid JSON ({exc})"])
    left = unmerge_daemon_json(current, managed_settings(extra), before, nvidia_runtime())
    if left == current:
        return Outcome([], [])
    if left or states[before_copy].exists:
        remote.write_files(plan_files([ManagedFile(path, dump_daemon_json(left))], {path: states[path]}))
        done = [f"took gpufab's keys out of {path}"]
    else:
        remote.change(f"rm -f -- {shlex.quote(path)}")
        done = [f"removed {path} (gpufab's keys only)"]
    if remote.check("systemctl is-active --quiet docker"):
        error = restart_docker(remote)
        if error is not None:
            raise HostError(f"docker did not come back without gpufab's daemon.json keys: {error}", changes=done)
        done.append("restarted docker")
    return Outcome(done, [])


def group_leavers(record: str, group_line: str) -> List[str]:
    """Users gpufab added (the record) that `getent group docker` still lists, in record order."""
    members = set(group_line.strip().split(":")[3].split(",")) if group_line.count(":") >= 3 else set()
    seen: List[str] = []
    for name in record.split():
        # Only what the inventory takes as a user name reaches gpasswd (never an option such as -r).
        if USER_RE.match(name) and name in members and name not in seen:
            seen.append(name)
    return seen


def leave_docker_group(remote: Remote) -> Outcome:
    """docker.install put the SSH user in group docker (root access to the node): take out whom it added."""
    record = remote.read_paths([GROUP_RECORD])[GROUP_RECORD]
    if not record.exists or not record.content:
        return Outcome([], [])
    group = remote.run("getent group docker", warn=True).stdout
    done = []
    for name in group_leavers(record.content, group):
        remote.change(f"gpasswd -d {shlex.quote(name)} docker >/dev/null")
        done.append(f"took {name} out of group docker")
    return Outcome(done, [])


OWNED = owns("ops.docker", files=(GROUP_RECORD,), undone_by_step=(DAEMON_JSON, SOURCE_LIST, KEYRING),
             sources=(AptSource("docker-ce", "Docker's", (SOURCE_LIST, KEYRING)),))
UNDONE = undoes(
    "ops.docker",
    Undo(2, 10, lambda remote, s: Outcome(leave_docker_group(remote).changes)),
    Undo(2, 60, lambda remote, daemon: Outcome(reset_daemon_json(remote, daemon).changes),
         settings=lambda config, inv, cli: read(config, inv, {}).daemon),
)
