"""`inv docker.install`, `docker.configure`, `docker.verify`."""

from __future__ import annotations

import shlex
import time
from typing import Any, List, Mapping, Optional

from invoke import task

from .ops import docker as plan
from .core.cluster import setting
from .core.facts import parse_facts
from .core.errors import HostError, keeping_changes, reported
from .core.files import ManagedFile, plan_files
from .core.remote import Remote, ensure_packages, last_line
from .core.steps import Outcome, run_task

#: key=value facts for install: os-release, dpkg arch, docker's presence.
INSTALL_FACTS = r"""
. /etc/os-release; echo "ID=$ID"; echo "VERSION_CODENAME=$VERSION_CODENAME"
echo "ARCH=$(dpkg --print-architecture)"
echo "DOCKERD=$(command -v dockerd || true)"
echo "VERSION=$(dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' docker-ce docker.io 2>/dev/null | awk '$1 == "installed" {print $2 " " $3; exit}')"
echo "GROUPS=$(id -nG)"
"""

DOCKER_INFO_CMD = "docker info --format '{{json .}}'"
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
        done += ensure_packages(remote, plan.DISTRO_PACKAGES)
    else:
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
    if distro not in plan.OFFICIAL_DISTROS or not codename:
        raise HostError(f"Docker's apt repository has no {distro or 'unknown'} {codename}; use --source distro")
    done = ensure_packages(remote, ("ca-certificates", "curl"))
    fetch = remote.change(
        f"install -d -m 0755 /etc/apt/keyrings && curl -fsSL --max-time 60 {shlex.quote(plan.key_url(distro))}"
        f" -o {plan.KEYRING}.tmp && chmod a+r {plan.KEYRING}.tmp && mv -f {plan.KEYRING}.tmp {plan.KEYRING}",
        warn=True,
    )
    if fetch.exited != 0:
        remote.change(f"rm -f {plan.KEYRING}.tmp", warn=True)
        raise HostError(
            f"cannot fetch Docker's apt key from {plan.key_url(distro)} ({last_line(fetch.stderr)}); use --source distro",
            changes=done,
        )
    source = ManagedFile(plan.SOURCE_LIST, plan.source_list(distro, codename, arch))
    done += [f"fetched {plan.KEYRING}"] + remote.write_files(plan_files([source], remote.read_state([source])))
    update = remote.change("DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update", warn=True)
    if update.exited != 0 or "download.docker.com" in update.stderr:
        remote.change(f"rm -f {plan.SOURCE_LIST} {plan.KEYRING}", warn=True)
        raise HostError(
            f"apt cannot use download.docker.com ({last_line(update.stderr)}); key and source removed; use --source distro",
            changes=done,
        )
    return done + ensure_packages(remote, plan.OFFICIAL_PACKAGES)


def configure_docker(remote: Remote, extra: Mapping[str, Any], force: bool) -> Outcome:
    """Merge gpufab's keys into daemon.json; restart dockerd only if it changed."""
    probe = remote.run(
        "command -v dockerd >/dev/null && echo docker=yes; "
        "command -v nvidia-container-runtime >/dev/null && echo nvidia=yes; true"
    ).stdout
    if "docker=yes" not in probe and not remote.dry_run:  # a dry run plans against no dockerd
        raise HostError("docker is not installed (run docker.install)")
    state = remote.read_paths([plan.DAEMON_JSON])[plan.DAEMON_JSON]
    try:
        existing = plan.parse_daemon_json(state.content)
    except plan.DaemonJsonError as exc:
        if not force:
            raise HostError(f"{plan.DAEMON_JSON} is not valid JSON ({exc}); fix it, or run with --force to replace it") from None
        existing = {}
    merged = plan.merge_daemon_json(existing, plan.managed_settings(extra), "nvidia=yes" in probe)
    wanted = ManagedFile(plan.DAEMON_JSON, plan.dump_daemon_json(merged))
    changes = plan_files([wanted], {plan.DAEMON_JSON: state})
    if state.exists and merged == existing and all(c.kind != "perms" for c in changes):
        changes = []  # same settings, another layout: not worth a dockerd restart
    notes = [f"pools {', '.join(f'{b} in /{s}s' for b, s in plan.pools(merged))}"]
    if not changes:
        return Outcome([], notes)
    done = remote.write_files(changes)
    if remote.dry_run:
        return Outcome(done + ["restarted docker"], notes)
    error = _restart_docker(remote)
    if error:
        remote.restore_previous(plan.DAEMON_JSON, existed=state.exists)
        again = _restart_docker(remote)
        after = "docker restarted on it" if not again else f"docker still down: {again}"
        raise HostError(
            f"dockerd did not come back with the new daemon.json ({error}); previous file restored, {after}",
            changes=done + ["restored the previous daemon.json"],
        )
    return Outcome(done + ["restarted docker"], notes)


def _restart_docker(remote: Remote) -> Optional[str]:
    """Restart dockerd and wait until it answers; the reason when it does not."""
    # Several restarts in a row trip systemd's start limit; a fix must not.
    remote.change("systemctl reset-failed docker.service docker.socket 2>/dev/null; true", warn=True)
    result = remote.change("systemctl restart docker", warn=True, timeout=RESTART_WAIT + 30)
    deadline = time.monotonic() + RESTART_WAIT
    while result.exited == 0:
        info = remote.run(DOCKER_INFO_CMD, sudo=True, warn=True)
        if info.exited == 0:
            try:
                plan.parse_docker_info(info.stdout)
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


def verify_docker(remote: Remote, extra: Mapping[str, Any], container: Optional[str]) -> Outcome:
    """dockerd active, `docker info` answering with the configured pools."""
    if not remote.check("systemctl is-active --quiet docker"):
        raise HostError("docker service is not active")
    info_run = remote.run(DOCKER_INFO_CMD, sudo=True, warn=True)
    try:
        info = plan.parse_docker_info(info_run.stdout)
    except ValueError as exc:
        raise HostError(f"docker info failed: {exc or last_line(info_run.stderr)}") from None
    want = plan.pools(plan.managed_settings(extra))
    if info.pools != want:
        seen = ", ".join(f"{b}/{s}" for b, s in info.pools) or "none"
        raise HostError(f"docker uses address pools {seen}, not the configured ones (run docker.configure)")
    notes = [f"docker {info.server_version}: pools {', '.join(f'{b} in /{s}s' for b, s in info.pools)}"]
    if container:
        status = remote.run(
            f"docker ps --filter name=^{shlex.quote(container)}$ --format '{{{{.Status}}}}'", sudo=True, warn=True
        ).stdout.strip()
        if not status:
            raise HostError(f"container {container} is not running")
        notes.append(f"container {container}: {status}")
    return Outcome([], notes)


_HELP = {
    "nodes": "only these nodes (comma-separated names)",
    "workers": "hosts worked on at once (default 32)",
}


@task(help={"source": "official (download.docker.com, default) or distro (Debian/Ubuntu docker.io)", **_HELP})
@reported
def install(c, source=None, nodes=None, workers=None):
    """Install Docker (skipped where present); add the SSH user to group docker."""

    def step(session):
        chosen = plan.check_source(setting(c.config, session.inventory, "docker_source", source, "official"))
        return lambda r: install_docker(r, chosen)

    run_task(c.config, "docker.install", step, nodes=nodes, workers=workers)


def _with_daemon_keys(c, title: str, step_fn, nodes, workers) -> None:
    """A task whose step needs the inventory's extra daemon.json keys."""

    def step(session):
        extra = dict(session.inventory.docker_daemon)
        return lambda r: step_fn(r, extra)

    run_task(c.config, title, step, nodes=nodes, workers=workers)


@task(help={"force": "replace a daemon.json that is not valid JSON (it is backed up)", **_HELP})
@reported
def configure(c, force=False, nodes=None, workers=None):
    """Merge address pools and download limits into daemon.json; restart only on change."""
    _with_daemon_keys(c, "docker.configure", lambda r, extra: configure_docker(r, extra, force), nodes, workers)


@task(help={"container": "also check that this container is running", **_HELP})
@reported
def verify(c, container=None, nodes=None, workers=None):
    """Check dockerd is active and `docker info` shows the configured address pools."""
    _with_daemon_keys(c, "docker.verify", lambda r, extra: verify_docker(r, extra, container), nodes, workers)
