"""Docker: what daemon.json must say, where packages come from, what `docker info` shows.

daemon.json belongs to the operator as much as to gpufab, so it is merged,
not overwritten: gpufab sets its own keys and keeps every other one. A file
that is not valid JSON is never replaced silently (dockerd would not start
on it either, and it may hold settings someone needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..core.errors import InputError
from ..core.files import render

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


def merge_daemon_json(existing: Mapping[str, Any], managed: Mapping[str, Any], nvidia: bool) -> Dict[str, Any]:
    """Existing keys kept (in their order), gpufab's set; the NVIDIA runtime kept or added."""
    merged = dict(existing)
    merged.update(managed)
    if nvidia:
        runtimes = dict(merged.get("runtimes") or {})
        if "nvidia" not in runtimes:
            runtimes["nvidia"] = json.loads(render("docker/nvidia-runtime.json.j2"))
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
