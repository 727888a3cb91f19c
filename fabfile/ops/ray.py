"""Ray on the cluster: one pinned version everywhere, systemd units, proof of membership.

Ray refuses to join nodes whose Ray or Python versions differ, and
`ray start` returns before a node is registered, so gpufab pins one version
for the whole cluster, compares versions across nodes, and counts alive nodes
at the head rather than trusting exit codes.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.errors import InputError
from ..core.files import ManagedFile, render

DEFAULT_VERSION = "2.60.0"
DEFAULT_VENV = "/opt/gpufab/venv"
DEFAULT_PORT = 6379
DASHBOARD_PORT = 8265
HEAD_UNIT = "gpufab-ray-head.service"
WORKER_UNIT = "gpufab-ray-worker.service"
UNIT_DIR = "/etc/systemd/system"
#: Packages whose versions `ray.versions` shows; ray and Python must agree.
VERSION_PACKAGES = ("ray", "torch", "vllm", "transformers")
MUST_MATCH = ("python", "ray")

PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+!_-]*$")

#: Prints a JSON object of versions: python, then each package named in argv.
VERSIONS_CODE = """
import json, sys
import importlib.metadata as md
out = {"python": "%d.%d.%d" % sys.version_info[:3]}
for name in sys.argv[1:]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def check_version(version: str) -> str:
    if not VERSION_RE.match(str(version)):
        raise InputError(f"invalid Ray version {version!r}", path="--version")
    return str(version)


def check_pins(extra: Any) -> List[str]:
    """Extra packages, each pinned `name==version` so every node gets the same."""
    if extra in (None, ""):
        return []
    items = extra if isinstance(extra, list) else [p for p in str(extra).split(",")]
    pins = [str(p).strip() for p in items if str(p).strip()]
    for pin in pins:
        if not PIN_RE.match(pin):
            raise InputError(f"extra package {pin!r} is not pinned as name==version", path="--extra")
    return pins


def check_venv(path: str) -> str:
    if not re.match(r"^/[A-Za-z0-9_./-]+$", path) or ".." in path.split("/"):
        raise InputError(f"invalid venv path {path!r}: an absolute path", path="--venv")
    return path.rstrip("/")


def pin_name(pin: str) -> str:
    """`transformers==4.46.0` -> `transformers`; `ray[default]==2.60.0` -> `ray`."""
    return re.split(r"[\[=]", pin, 1)[0]


def pin_version(pin: str) -> str:
    return pin.split("==", 1)[1]


def requirements(version: str, extra: Sequence[str]) -> List[str]:
    return [f"ray[default]=={version}", *extra]


def versions_command(venv: str, packages: Sequence[str]) -> str:
    python = f"{venv}/bin/python"
    return f"{shlex.quote(python)} -c {shlex.quote(VERSIONS_CODE)} " + " ".join(shlex.quote(p) for p in packages)


def missing_pins(installed: Mapping[str, Optional[str]], pins: Sequence[str]) -> List[str]:
    """The pins whose package is absent or at another version."""
    return [p for p in pins if installed.get(pin_name(p)) != pin_version(p)]


def install_command(venv: str, pins: Sequence[str], uv: bool, index_url: Optional[str] = None,
                    find_links: Optional[str] = None, proxy: Optional[str] = None) -> str:
    """pip (or uv pip) install of exactly these pins into the venv."""
    opts: List[str] = []
    if index_url:
        opts += ["--index-url", index_url]
    if find_links:
        opts += ["--find-links", find_links]
    quoted = " ".join(shlex.quote(x) for x in [*opts, *pins])
    if uv:
        env = f"HTTPS_PROXY={shlex.quote(proxy)} HTTP_PROXY={shlex.quote(proxy)} " if proxy else ""
        return f"{env}uv pip install --python {shlex.quote(venv + '/bin/python')} {quoted}"
    proxy_opt = f"--proxy {shlex.quote(proxy)} " if proxy else ""
    return f"{shlex.quote(venv + '/bin/pip')} install -q --disable-pip-version-check {proxy_opt}{quoted}"


def mismatches(versions: Mapping[str, Mapping[str, Optional[str]]]) -> Dict[str, List[str]]:
    """Per field, the nodes whose value differs from the most common one."""
    out: Dict[str, List[str]] = {}
    fields = sorted({k for v in versions.values() for k in v})
    for field in fields:
        values = {node: v.get(field) for node, v in versions.items()}
        present = [x for x in values.values() if x is not None]
        if len(set(present)) <= 1 and (field not in MUST_MATCH or None not in values.values()):
            continue
        # Ties go to the value seen first, in inventory order (the head first).
        common = max(present, key=present.count) if present else None
        out[field] = [node for node, x in values.items() if x != common]
    return out


@dataclass(frozen=True)
class UnitPlan:
    """What one node's Ray unit must say."""

    role: str  # head | worker
    user: str
    venv: str
    address: str
    head: str
    port: int = DEFAULT_PORT
    dashboard_host: str = ""
    dashboard_port: int = DASHBOARD_PORT
    num_gpus: Optional[int] = None
    env_digest: str = "none"

    @property
    def unit(self) -> str:
        return HEAD_UNIT if self.role == "head" else WORKER_UNIT

    @property
    def other_unit(self) -> str:
        return WORKER_UNIT if self.role == "head" else HEAD_UNIT


def unit_file(p: UnitPlan) -> ManagedFile:
    values = dict(
        user=p.user, venv=p.venv, address=p.address, head=p.head, port=p.port,
        dashboard_host=p.dashboard_host or p.address, dashboard_port=p.dashboard_port,
        num_gpus=p.num_gpus, env_digest=p.env_digest,
    )
    return ManagedFile(f"{UNIT_DIR}/{p.unit}", render(f"ray/{p.unit}.j2", **values))


def start_command(p: UnitPlan) -> str:
    """`ray start` without systemd: the same arguments, netenv loaded first."""
    ray = shlex.quote(f"{p.venv}/bin/ray")
    if p.role == "head":
        args = (f"--head --node-ip-address={p.address} --port={p.port}"
                f" --dashboard-host={p.dashboard_host or p.address} --dashboard-port={p.dashboard_port}")
    else:
        args = f"--address={p.head}:{p.port} --node-ip-address={p.address}"
    if p.num_gpus is not None:
        args += f" --num-gpus={p.num_gpus}"
    load = ("set -a; [ -r /etc/gpufab/netenv.env ] && . /etc/gpufab/netenv.env;"
            " [ -r /etc/gpufab/secrets.env ] && . /etc/gpufab/secrets.env; set +a; ")
    return load + f"{ray} start {args}"


# --------------------------------------------------------------------------- cluster state

#: Run with the venv's python on the head: alive nodes as JSON, from the GCS.
NODES_CODE = """
import json, sys
from ray.util.state import list_nodes
nodes = list_nodes(address=sys.argv[1], limit=10000, raise_on_missing_output=False)
print(json.dumps([{
    "ip": n.node_ip, "state": n.state, "head": bool(n.is_head_node),
    "resources": n.resources_total or {},
} for n in nodes]))
"""


@dataclass(frozen=True)
class RayNode:
    ip: str
    alive: bool
    head: bool
    cpus: float
    gpus: float
    memory: float  # bytes


def parse_nodes(text: str) -> List[RayNode]:
    data = json.loads(text.strip().splitlines()[-1])
    out = []
    for n in data:
        res = n.get("resources") or {}
        out.append(RayNode(
            ip=n["ip"], alive=n["state"] == "ALIVE", head=bool(n.get("head")),
            cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)), memory=float(res.get("memory", 0)),
        ))
    return out


def alive_by_ip(nodes: Sequence[RayNode]) -> Dict[str, RayNode]:
    """The alive Ray node per IP (a dead record of a rejoined node is ignored)."""
    out: Dict[str, RayNode] = {}
    for n in nodes:
        if n.alive:
            out[n.ip] = n
    return out


def cluster_yaml(inventory_path: str, name: str, head_public: str, head_private: str,
                 workers: Sequence[Tuple[str, str]], user: str, key: Optional[str], venv: str, port: int) -> str:
    return render(
        "ray/cluster.yaml.j2", inventory=inventory_path, name=name, head_ip=head_public,
        head_private=head_private, worker_ips=[pub for pub, _ in workers], user=user, key=key,
        venv=venv, port=port,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log_tail(text: str, lines: int = 3, width: int = 160) -> str:
    """The last log lines on one line: ANSI colours dropped, each cut to `width`."""
    kept = [_ANSI.sub("", line).strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(line if len(line) <= width else line[: width - 3] + "..." for line in kept) or "no log lines"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


#: Submitted on the head: one task per alive node (SPREAD), each reports where it ran.
SMOKE_CODE = """
import json, socket, time
import ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def where(i):
    time.sleep(2)  # hold the CPU so SPREAD cannot place two on one node
    return {"task": i, "host": socket.gethostname(), "ip": ray.util.get_node_ip_address()}

print(json.dumps(ray.get([where.remote(i) for i in range(len(alive))], timeout=120)))
"""
