"""Ray on the cluster: one pinned version everywhere, systemd units, proof of membership.

Ray refuses to join nodes whose Ray or Python versions differ, and
`ray start` returns before a node is registered, so gpufab pins one version
for the whole cluster, compares versions across nodes, and counts alive nodes
at the head rather than trusting exit codes.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.declared import PORT, SWITCH, TEXT, VERSION, Setting, Undo, Withdrawal, declare, listing, owns, text, undoes
from ..core.chain import Column, Step
from ..core.cluster import setting, switch
from ..core.connection import Session
from ..core.errors import HostError, InputError, Interrupted, keeping_changes, number_option
from ..core.fanout import FAILED, HostResult, classify
from ..core.files import FileState, ManagedFile, plan_files, render, sha256
from ..core.inventory import Inventory, Node
from ..core.networks import Reach, check_bind_address, read_reach
from ..core.remote import Remote, ensure_packages, last_line
from ..core.steps import Outcome, Seen, merge_phases, remote_for, run_step
from ..core import packages as apt
from ..core.packages import Downloads
from ..core.context import RunContext
from .shared.downloads import UV_VERSION, check_uv_version
from .shared.nodeenv import ENV_FILE
from .shared.ports import check_port
from .shared.python import DEFAULT_VENV
from .shared.rayauth import RAY_DEFAULT_VERSION, ray_auth_on, ray_has_auth
from .shared.secrets import SECRETS_FILE
from .shared.uv import direct, ensure_uv, index_env, uv_env, wheel_requirements
from .shared.versions import VERSION_PACKAGES, VERSIONS, installed_versions

DEFAULT_VERSION = RAY_DEFAULT_VERSION
DEFAULT_PORT = 6379
DASHBOARD_PORT = 8265
HEAD_UNIT = "gpufab-ray-head.service"
WORKER_UNIT = "gpufab-ray-worker.service"
UNIT_DIR = "/etc/systemd/system"
#: The digest of the secrets Ray runs with (root-only): a change restarts Ray.
SECRETS_APPLIED = "/etc/gpufab/ray-secrets.applied"
#: Ray's servers listen on every interface: nftables rules let only the cluster's nodes reach them.
FIREWALL_FILE = "/etc/gpufab/ray-firewall.nft"
FIREWALL_TABLE = "inet gpufab_ray"
PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
FIREWALL_PACKAGES = ("nftables",)
#: Ray's fixed ports besides the GCS and the dashboard: client server, default worker ports, dashboard agent.
RAY_FIXED_PORTS = ("10001-19999", "52365")
#: The SSH user's Ray token, under their home (Ray's own default place: every Ray process and
#: client of that user finds it); with RAY_AUTH_MODE=token the GCS refuses any other.
TOKEN_DIR = ".ray"
TOKEN_NAME = "auth_token"
MUST_MATCH = ("python", "ray")

PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+!_-]*$")

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


def missing_pins(installed: Mapping[str, Optional[str]], pins: Sequence[str]) -> List[str]:
    """The pins whose package is absent or at another version."""
    return [p for p in pins if installed.get(pin_name(p)) != pin_version(p)]


def install_command(venv: str, pins: Sequence[str], uv: Optional[str]) -> str:
    """pip (or uv pip) install of exactly these pins into the venv; the index, find-links and proxy come
    from the environment (wheels.index_env), never the command line."""
    quoted = " ".join(shlex.quote(x) for x in pins)
    if uv:
        return f"{uv} pip install -q --python {shlex.quote(venv + '/bin/python')} {quoted}"
    return f"{shlex.quote(venv + '/bin/pip')} install -q --disable-pip-version-check {quoted}"


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
    #: RAY_AUTH_MODE=token in the unit.
    auth: bool = False
    #: The nftables file the unit loads before Ray starts (None: no firewall).
    firewall: Optional[str] = None

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
        num_gpus=p.num_gpus, env_digest=p.env_digest, auth=p.auth, firewall=p.firewall,
    )
    return ManagedFile(f"{UNIT_DIR}/{p.unit}", render(f"ray/{p.unit}.j2", **values))


def firewall_file(inv: Inventory, s: "RaySettings", port_range: str) -> ManagedFile:
    """The rules for one node: the cluster's private addresses may reach Ray's ports, nobody else.

    `port_range` is the node's `ip_local_port_range` (where Ray's unnamed servers bind)."""
    low, _, high = port_range.partition("\t") if "\t" in port_range else port_range.partition(" ")
    ephemeral = [f"{int(low)}-{int(high)}"] if low.strip().isdigit() and high.strip().isdigit() else ["32768-60999"]
    addresses = sorted({n.private for n in inv.nodes if n.private})
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    ports = [str(s.port), str(DASHBOARD_PORT), *RAY_FIXED_PORTS, *ephemeral]
    return ManagedFile(FIREWALL_FILE, render("ray/ray-firewall.nft.j2", v4=v4, v6=v6, ports=ports))


def start_command(p: UnitPlan) -> str:
    """`ray start` without systemd: the same arguments, netenv loaded first."""
    ray, q = shlex.quote(f"{p.venv}/bin/ray"), shlex.quote
    if p.role == "head":
        args = (f"--head --node-ip-address={q(p.address)} --port={p.port}"
                f" --dashboard-host={q(p.dashboard_host or p.address)} --dashboard-port={p.dashboard_port}")
    else:
        args = f"--address={q(p.head)}:{p.port} --node-ip-address={q(p.address)}"
    if p.num_gpus is not None:
        args += f" --num-gpus={p.num_gpus}"
    load = f"{programs.inline('load_netenv')}; set -a; [ -r {SECRETS_FILE} ] && . {SECRETS_FILE}; set +a; "
    return load + f"{ray} start {args}"


# --------------------------------------------------------------------------- cluster state

#: Run with the venv's python on the head: alive nodes as JSON, from the GCS.
NODES_CODE = programs.text("ray-nodes.py")


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


#: Submitted on the head: one task per alive node (SPREAD), each reports where it ran.
SMOKE_CODE = programs.text("ray-smoke.py")


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
    uv_version: str = UV_VERSION
    #: Seconds the cluster gets to show every node.
    wait: float = DEFAULT_WAIT
    #: Where the dashboard may listen: private ranges unless overridden.
    reach: Reach = Reach()
    #: Token authentication (var `ray_auth`, on where the pinned Ray has it).
    auth: bool = False
    #: Only the cluster's nodes reach Ray's ports (var `ray_firewall`, default on).
    firewall: bool = True

    @property
    def pins(self) -> List[str]:
        return requirements(self.version, self.extra)

    @property
    def client_env(self) -> str:
        """What a Ray client on a node needs in its environment (the token itself is in ~/.ray)."""
        return "RAY_AUTH_MODE=token " if self.auth else ""


def _dashboard_host(value: Any, reach: Reach) -> Optional[str]:
    """An explicit `--dashboard-host`: one private (or loopback) IP, checked before it reaches a unit or a shell."""
    if value in (None, ""):
        return None
    return check_bind_address(value, "Ray's dashboard", reach, "ray_dashboard_host")[0]


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> RaySettings:
    """CLI > inventory vars (`ray_version`, `ray_venv`, ...) > config `gpufab.*` > defaults."""

    def get(key: str, default: Any = None) -> Any:
        return setting(config, inv, key, cli.get(key), default)

    reach = read_reach(get("private_ranges"), get("allow_public_networks"))
    version = check_version(get("ray_version", DEFAULT_VERSION))
    return RaySettings(
        reach=reach,
        auth=ray_auth_on(config, inv) and ray_has_auth(version),
        firewall=switch(get("ray_firewall", True)),
        version=version,
        venv=check_venv(get("ray_venv", DEFAULT_VENV)),
        extra=check_pins(get("ray_extra_packages")),
        port=check_port(get("ray_port", DEFAULT_PORT), "Ray port", "ray_port"),
        dashboard_host=_dashboard_host(get("ray_dashboard_host"), reach),
        index_url=get("pip_index_url"),
        find_links=get("pip_find_links"),
        proxy=get("pip_proxy"),
        systemd=not cli.get("no_systemd", False),
        uv_version=check_uv_version(get("uv_version", UV_VERSION)),
        wait=number_option(cli.get("timeout"), "--timeout", float) or DEFAULT_WAIT,
    )


# --------------------------------------------------------------------------- install


def downloads(remote: Remote, s: RaySettings) -> Downloads:
    """The pins this node lacks: then it wants the whole set (one closure for the cluster) and uv; nft where missing."""
    debs = tuple(apt.missing(FIREWALL_PACKAGES, apt.parse_installed(remote.run(apt.query_command(
        FIREWALL_PACKAGES)).stdout))) if s.firewall else ()
    versions = installed_versions(remote, s.venv, [pin_name(p) for p in s.pins])
    if versions is not None and not missing_pins(versions, s.pins):
        return Downloads(debs=debs)
    return Downloads(debs=debs, wheels=tuple(s.pins), uv=True)


def install_ray(remote: Remote, s: RaySettings) -> Outcome:
    """A venv owned by the SSH user holding exactly the pinned packages, installed by uv where it can be."""
    names = [pin_name(p) for p in s.pins]
    # nft for the firewall: Ray's servers listen on every interface.
    done: List[str] = ensure_packages(remote, FIREWALL_PACKAGES) if s.firewall else []
    versions = installed_versions(remote, s.venv, names)
    notes: List[str] = []
    if versions is not None and not missing_pins(versions, s.pins):
        return Outcome(done, [f"ray {versions.get('ray')} in {s.venv}"])
    with keeping_changes(done):
        # From here the venv may change, whether or not the install gets to its end: what it holds is
        # read from it again, never taken from before.
        remote.facts.forget(VERSIONS, s.venv)
        uv, changed, notes = ensure_uv(remote, s.uv_version, s.index_url, s.proxy)
        done += changed
        if versions is None:
            if not uv:
                done += ensure_packages(remote, ("python3-venv",))
            venv = shlex.quote(s.venv)
            remote.change(f"mkdir -p {venv} && chown {shlex.quote(remote.user)}: {venv}")
            make = f"UV_PYTHON_DOWNLOADS=never {uv} venv -q --python python3 {venv}" if uv else f"python3 -m venv {venv}"
            result = remote.change(make, sudo=False, warn=True)
            if result.exited != 0:
                raise HostError(f"cannot create the venv {s.venv}: {last_line(result.stderr)}")
            done.append(f"created venv {s.venv} ({'uv' if uv else 'python3 -m venv'})")
            versions = {}
        todo = missing_pins(versions, s.pins)
        peer = remote.peer
        result = None
        if uv and peer is not None and peer.hashes:
            # The cluster's one download: exactly the wheels the head fetched, each against its hash.
            wanted = wheel_requirements(peer.hashes, skip=("uv",))
            result = remote.change(
                f"printf '%s\\n' {' '.join(shlex.quote(x) for x in wanted)} | {direct(peer)}UV_NO_PROGRESS=1 {uv} pip install -q "
                f"--python {shlex.quote(s.venv + '/bin/python')} --no-index --find-links {shlex.quote(peer.wheels)} "
                "--require-hashes -r /dev/stdin", sudo=False, warn=True, timeout=1800)
            if result.exited == 0:
                done.append(f"installed {' '.join(todo)} (uv, from the cluster's one download)")
            else:
                notes.append(f"the head's wheels did not install ({last_line(result.stderr or result.stdout)}): "
                             "from the index instead")
        if result is None or result.exited != 0:
            # A venv uv made has no pip of its own: it gets one, as `python3 -m venv` would have.
            cmd = install_command(s.venv, [*todo, "pip"] if uv else todo, uv)
            if uv:
                cmd = uv_env() + cmd
            result = remote.change(cmd, sudo=False, warn=True, timeout=1800,
                                   secret_env=index_env(s.index_url, s.proxy, s.find_links))
            if result.exited != 0:
                raise HostError(f"{'uv ' if uv else ''}pip install {' '.join(todo)} failed: "
                                f"{last_line(result.stderr or result.stdout)}")
            done.append(f"installed {' '.join(todo)} ({'uv' if uv else 'pip'})")
        versions = {"ray": s.version} if remote.dry_run else installed_versions(remote, s.venv, names) or {}
    return Outcome(done, [f"ray {versions.get('ray')} in {s.venv}", *notes])


def versions_step(remote: Remote, venv: str) -> Outcome:
    versions = installed_versions(remote, venv, VERSION_PACKAGES)
    if versions is None:
        raise HostError(f"no Python environment at {venv} (run ray.install)")
    return Outcome([], [], versions)


# --------------------------------------------------------------------------- start / stop


def env_digest(state: Dict[str, FileState]) -> str:
    """A digest of the node's netenv file, written into the (world-readable) unit."""
    if not state[ENV_FILE].exists:
        return "none"
    return sha256(state[ENV_FILE].content or "")[:16]


def secrets_marker(state: Dict[str, FileState]) -> ManagedFile:
    """Which secrets Ray was last started with: root-only, so no reader can test guesses against it."""
    return ManagedFile(SECRETS_APPLIED, (state[SECRETS_FILE].digest or "none") + "\n", mode=0o600, secret=True)


def unit_plan(remote: Remote, inv: Inventory, s: RaySettings, digest: str) -> UnitPlan:
    """What this node's unit says (role, addresses, auth, firewall)."""
    node = remote.node
    if not node.private or not inv.head.private:
        raise HostError("no private address known for this node or the head")
    gpus = node.vars.get("gpus")
    return UnitPlan(
        role="head" if node.is_head else "worker",
        user=remote.user,
        venv=s.venv,
        address=node.private,
        head=inv.head.private,
        port=s.port,
        dashboard_host=s.dashboard_host or "",
        num_gpus=int(gpus) if gpus is not None else None,
        env_digest=digest,
        auth=s.auth,
        firewall=FIREWALL_FILE if s.firewall else None,
    )


def start_ray(remote: Remote, inv: Inventory, s: RaySettings, token_changed: bool = False) -> Outcome:
    """Install/refresh the node's unit and its firewall; restart only when the unit (or the token) changed,
    start if down."""
    if remote.node.is_head:
        try:  # the default, the head's private address, is held to the same rule as an explicit value
            check_bind_address(s.dashboard_host or inv.head.private, "Ray's dashboard", s.reach, "ray_dashboard_host")
        except InputError as exc:
            raise HostError(str(exc).removeprefix("ray_dashboard_host: ")) from None
    versions = installed_versions(remote, s.venv, ["ray"])
    if (not versions or versions.get("ray") != s.version) and not remote.dry_run:
        seen = (versions or {}).get("ray")
        raise HostError(f"ray {s.version} is not installed in {s.venv} (found {seen or 'none'}; run ray.install)")
    # One read: the env the unit depends on, this role's unit and the other role's.
    units = [f"{UNIT_DIR}/{u}" for u in (HEAD_UNIT, WORKER_UNIT)]
    state = remote.read_paths([ENV_FILE, "-d", SECRETS_FILE, "-d", SECRETS_APPLIED, *units, FIREWALL_FILE,
                               PORT_RANGE_FILE])
    p = unit_plan(remote, inv, s, env_digest(state))
    done = apply_firewall(remote, inv, s, state)
    if not s.systemd:
        out = _start_plain(remote, p)
        return Outcome(done + out.changes, out.notes)
    other = f"{UNIT_DIR}/{p.other_unit}"
    if state[other].exists:
        remote.change(f"systemctl disable --now {p.other_unit}; rm -f {other}", warn=True)
        done.append(f"removed {p.other_unit} (role changed)")
    unit = unit_file(p)
    changes = plan_files([unit, secrets_marker(state)], state)
    done += remote.write_files(changes)
    if changes or any("role changed" in d for d in done):
        remote.change("systemctl daemon-reload")
    if not remote.check(f"systemctl is-enabled --quiet {p.unit}"):
        remote.change(f"systemctl enable {p.unit}")
        done.append(f"enabled {p.unit}")
    active = remote.check(f"systemctl is-active --quiet {p.unit}")
    if changes or token_changed or not active:
        verb = "restarted" if active else "started"
        remote.change(f"systemctl restart {p.unit}")
        done.append(f"{verb} {p.unit}")
    return Outcome(done, [f"{p.role} on {p.address}" + (f" -> {p.head}:{p.port}" if p.role == "worker" else f":{p.port}")])


def apply_firewall(remote: Remote, inv: Inventory, s: RaySettings, state: Dict[str, FileState]) -> List[str]:
    """The node's Ray firewall file, loaded now when it changed (the unit loads it at every start); or,
    with `ray_firewall: false`, taken away."""
    if not s.firewall:
        if not state[FIREWALL_FILE].exists:
            return []
        remote.change(f"nft delete table {FIREWALL_TABLE} 2>/dev/null; rm -f {FIREWALL_FILE}", warn=True)
        return [f"removed Ray's firewall ({FIREWALL_FILE}, ray_firewall: false)"]
    wanted = firewall_file(inv, s, state[PORT_RANGE_FILE].content or "")
    changes = plan_files([wanted], state)
    done = remote.write_files(changes)
    if changes:
        loaded = remote.change(f"nft -f {FIREWALL_FILE}", warn=True, timeout=30)
        if loaded.exited != 0:
            raise HostError(f"cannot load Ray's firewall ({FIREWALL_FILE}): "
                            f"{last_line(loaded.stderr or loaded.stdout) or 'nft failed'}; set ray_firewall: false "
                            "to run Ray without it", changes=done)
        done.append(f"loaded {FIREWALL_FILE} (only the cluster's nodes reach Ray's ports)")
    return done


def refresh_firewall(session: Session, inv: Inventory, s: RaySettings, workers: Optional[int] = None
                     ) -> List[HostResult]:
    """Ray's firewall again on the nodes that have one, for a changed inventory: a node taken out can no
    longer reach the others' Ray ports, so it cannot rejoin by itself when it comes back (its unit is still
    enabled if it was off when it was removed)."""
    def one(remote: Remote) -> Outcome:
        state = remote.read_paths([FIREWALL_FILE, PORT_RANGE_FILE])
        if not state[FIREWALL_FILE].exists or not s.firewall:
            return Outcome()
        return Outcome(apply_firewall(remote, inv, s, state), [])

    return run_step(session, inv.nodes, one, workers=workers)


class ClusterToken:
    """The cluster's Ray token: the head's own (made there once), the same on every node; never shown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Optional[str] = None

    def of_head(self, head: Remote) -> Tuple[str, bool]:
        """(token, whether it was made now): read once a run from the head's ~/.ray, made there when missing."""
        with self._lock:
            if self._value is not None:
                return self._value, False
            found = head.run(f'cat "$HOME"/{TOKEN_DIR}/{TOKEN_NAME} 2>/dev/null; true').stdout.strip()
            made = not TOKEN_RE.match(found)
            self._value = secrets.token_hex(32) if made else found
            if made:
                head.write_home_files(TOKEN_DIR, {TOKEN_NAME: (self._value, 0o600)})
            return self._value, made


TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


def ensure_token(remote: Remote, token: str) -> bool:
    """This node's copy of the cluster's token (written as the SSH user, 0600); True when it was written."""
    have = remote.run(f'sha256sum < "$HOME"/{TOKEN_DIR}/{TOKEN_NAME} 2>/dev/null; true').stdout.split()
    if have[:1] == [sha256(token)]:
        return False
    remote.write_home_files(TOKEN_DIR, {TOKEN_NAME: (token, 0o600)})
    return True


def _start_plain(remote: Remote, p: UnitPlan) -> Outcome:
    """For hosts without systemd: `ray start` with the netenv loaded first."""
    if remote.check(RAYLET_RUNNING):
        return Outcome([], [f"{p.role}: Ray already running (not restarted)"])
    result = remote.change(start_command(p), sudo=False, warn=True, timeout=300)
    if result.exited != 0:
        raise HostError(f"ray start failed: {last_line(result.stderr or result.stdout)}")
    return Outcome([f"ray start ({p.role}, no systemd)"], [])


def stop_ray(remote: Remote, venv: str, force: bool) -> Outcome:
    done: List[str] = []
    for unit in (WORKER_UNIT, HEAD_UNIT):
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


def cluster_nodes(head: Remote, s: RaySettings) -> List[RayNode]:
    python = shlex.quote(f"{s.venv}/bin/python")
    address = f"{head.node.private}:{s.port}"
    result = head.run(f"{s.client_env}{python} -c {shlex.quote(NODES_CODE)} {shlex.quote(address)}", warn=True,
                      timeout=60)
    if result.exited != 0:
        raise HostError(f"cannot list Ray nodes on the head: {last_line(result.stderr) or 'no output'}")
    return parse_nodes(result.stdout)


def ray_log_tail(remote: Remote, node: Node, lines: int = 3) -> str:
    unit = HEAD_UNIT if node.is_head else WORKER_UNIT
    out = remote.run(f"journalctl -u {unit} -n {lines} --no-pager -o cat", sudo=True, warn=True).stdout
    return log_tail(out, lines)


def wait_for_nodes(session: Session, nodes: Sequence[Node], s: RaySettings, timeout: float,
                   gpus: Optional[int] = None) -> List[HostResult]:
    """Poll the head until every node is alive in Ray (and the GPUs add up), or time out.

    One result per node: ok when alive, failed with its last Ray log lines
    when it never joined.
    """
    head = remote_for(session, session.inventory.head)
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    alive: Dict[str, RayNode] = {}
    error = ""
    while True:
        try:
            alive = alive_by_ip(cluster_nodes(head, s))
            error = ""
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - head down or Ray not up yet: keep polling
            if session.stopping.is_set():
                raise Interrupted() from None
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
            results.append(HostResult(node, "ok", seconds=seconds, notes=[
                f"alive in Ray ({member.cpus:g} CPU, {member.gpus:g} GPU)"]))
            continue
        try:
            tail = ray_log_tail(remote_for(session, node), node)
        except Exception as exc:  # noqa: BLE001 - an unreachable node cannot show logs
            tail = f"none, node unreachable ({classify(exc, session.connect_timeout, session.known_hosts)[2]})"
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


def setup_cluster(session: Session, inv: Inventory, s: RaySettings, timeout: float,
                  workers: Optional[int] = None, *, nodes: Optional[Sequence[Node]] = None,
                  remotes: Optional[Dict[str, Remote]] = None, wait: bool = True) -> List[HostResult]:
    """Every node installs at once; the head starts as soon as it has, each worker as soon as it has
    and the head is up; then wait until every node is alive. One merged result per node.

    `nodes` narrows it to some nodes (a retry of failed workers leaves the
    running head alone); `wait=False` stops after starting (a dry run).
    """
    nodes = list(nodes if nodes is not None else inv.nodes)
    head = inv.head
    with_head = any(n.name == head.name for n in nodes)
    head_up = threading.Event()
    head_down: List[str] = []
    token = ClusterToken()
    head_remote = (remotes or {}).get(head.name) or remote_for(session, head)

    def one(remote: Remote) -> Outcome:
        is_head = remote.node.name == head.name
        try:
            installed = install_ray(remote, s)
            with keeping_changes(installed.changes):
                if not is_head and with_head:
                    head_up.wait()
                    if head_down:
                        raise HostError(f"the head {head.name} did not start")
                written = False
                if s.auth:
                    value, made = token.of_head(head_remote)
                    written = made if is_head else ensure_token(remote, value)
                    if written:
                        installed.changes.append(f"{'made' if is_head else 'copied'} the cluster's Ray token "
                                                 f"(~/{TOKEN_DIR}/{TOKEN_NAME}, 0600; not shown)")
                started = start_ray(remote, inv, s, token_changed=written)
        except BaseException:
            if is_head:
                head_down.append(head.name)
            raise
        finally:
            if is_head:
                head_up.set()
        return Outcome(installed.changes + started.changes, installed.notes + started.notes)

    # The head first in the pool, so that workers waiting for it never hold every slot.
    ordered = sorted(nodes, key=lambda n: n.name != head.name)
    results = {r.node.name: r for r in run_step(session, ordered, one, workers=workers, remotes=remotes)}
    done = [results[n.name] for n in nodes]
    waiting = [r.node for r in done if not r.failed]
    waited: List[HostResult] = []
    if wait and waiting and not head_down:
        waited = wait_for_nodes(session, waiting, s, timeout, expected_gpus(inv))
    return merge_phases(nodes, [done, waited])


def run_on(run: RunContext, nodes: Sequence[Node], s: RaySettings) -> List[HostResult]:
    return setup_cluster(run.session, run.inv, s, s.wait, run.workers, nodes=nodes, remotes=run.remotes,
                         wait=not run.dry_run)


def check(remote: Remote, s: RaySettings) -> Outcome:
    """The verify phase: Python and package versions in the node's venv; Ray's firewall loaded (read from nft)."""
    found = versions_step(remote, s.venv)
    if s.firewall and not remote.check(f"nft list table {FIREWALL_TABLE} >/dev/null 2>&1", sudo=True):
        raise HostError(f"Ray's firewall is not loaded (no nft table {FIREWALL_TABLE}): run ray.start", value=found.value)
    return found


def members(run: RunContext, nodes: Sequence[Node], s: RaySettings) -> List[HostResult]:
    """Every node must be alive in the head's Ray cluster."""
    try:
        alive = alive_by_ip(cluster_nodes(run.remotes[run.inv.head.name], s))
    except HostError as exc:
        return [HostResult(n, FAILED, 1, reason=exc.reason) for n in nodes]
    run.keep(NAME, alive)
    out = []
    for n in nodes:
        member = alive.get(n.private or "")
        if member is None:
            out.append(HostResult(n, FAILED, 1, reason="not alive in the Ray cluster"))
        else:
            out.append(HostResult(n, "ok", value=member))
    return out


def member(run: RunContext, node: Node) -> Optional[RayNode]:
    """This node in the head's Ray cluster, as the verify phase found it."""
    found = run.cluster_checked(NAME, node)
    return found.value if found is not None and not found.failed else None


def _cell(run: RunContext, node: Node) -> str:
    found = member(run, node)
    if found is None:
        return "-"
    return "alive (head)" if found.head else "alive"


def _report(run: RunContext, s: RaySettings) -> Tuple[List[str], List[str]]:
    alive_by = run.kept(NAME, dict) or {}
    known = {n.private for n in run.inv.nodes}
    alive = [x for ip, x in alive_by.items() if ip in known]
    total = len(run.inv.nodes)
    checks = [f"Ray: {len(alive)}/{total} nodes alive, {sum(x.cpus for x in alive):g} CPUs, "
              f"{sum(x.gpus for x in alive):g} GPUs"]
    warnings: List[str] = []
    if s.reach.allow_public:
        warnings.append(f"allow_public_networks is set: Ray's dashboard ({s.dashboard_host or run.inv.head.private}) "
                        "is not held to a private range")
    found = {n.name: run.checked(NAME, n) for n in run.verified() if run.checked(NAME, n) is not None}
    odd = mismatches(found)
    if odd:
        warnings += [f"version mismatch: {f} differs on {', '.join(names)}" for f, names in odd.items()]
        checks.append("Versions: MISMATCH (see warnings)")
    elif found:
        sample = next(iter(found.values()))
        checks.append(f"Versions: python {sample.get('python')}, ray {sample.get('ray')} on {len(found)}/{total} nodes")
    if found:
        guards = ([f"token authentication (RAY_AUTH_MODE=token; the head's ~/{TOKEN_DIR}/{TOKEN_NAME})"] if s.auth
                  else []) + ([f"only the cluster's nodes reach its ports (nft table {FIREWALL_TABLE} loaded on "
                              f"{len(found)}/{total} nodes)"] if s.firewall else [])
        checks.append("Ray security: " + ("; ".join(guards) if guards else "none (ray_auth and ray_firewall are off)"))
    if not s.auth:
        warnings.append("Ray runs without token authentication: anyone who reaches its ports can run code as "
                        f"the SSH user ({'ray_auth is off' if s.version and ray_has_auth(s.version) else 'ray ' + s.version + ' has none'})")
    return checks, warnings


def _access(run: RunContext, s: RaySettings) -> List[str]:
    head = run.inv.head
    target = run.ssh(head, run.aliases)[len("ssh "):]
    token = ([f"{run.ssh(head, run.aliases)} {s.venv}/bin/ray get-auth-token   # the token the dashboard asks for"]
             if s.auth else [])
    return token + [f"ssh -N -L {DASHBOARD_PORT}:{head.private}:{DASHBOARD_PORT} {target}   # then open http://localhost:{DASHBOARD_PORT}",
            "inv logs.tail /tmp/ray/session_latest/logs/raylet.out -n 50",
            f"{run.ssh(head, run.aliases)} journalctl -u {HEAD_UNIT} -f"]


def membership_seen(alive: Mapping[str, RayNode], nodes: Sequence[Node]) -> Dict[str, Seen]:
    """`gpufab status`: each node alive in the head's Ray cluster."""
    out = {}
    for n in nodes:
        member = alive.get(n.private or "")
        out[n.name] = (Seen("not alive", ("not alive in the Ray cluster",)) if member is None
                       else Seen("alive (head)" if member.head else "alive"))
    return out


def _status_cluster(run: RunContext, nodes: Sequence[Node], s: RaySettings) -> Dict[str, Seen]:
    head = run.inv.head
    if head.name not in {n.name for n in nodes}:
        return {n.name: Seen("unknown", (f"the head {head.name} cannot be asked",)) for n in nodes if not n.is_head}
    try:
        alive = alive_by_ip(cluster_nodes(run.remotes[head.name], s))
    except HostError as exc:
        return {n.name: Seen("unknown", (exc.reason,)) for n in nodes}
    return membership_seen(alive, nodes)


NAME = "ray"
STEP = Step(NAME, settings=read, run=run_on, needs_head=True, check=check, check_cluster=members,
            needs=("preflight", "fetch", "wheels", "limits", "netenv"), downloads=downloads,
            columns=(Column("ray", "Ray", _cell),), report=_report, access=_access, status_cluster=_status_cluster)


DECLARED = declare(
    "ops.ray",
    Setting("ray_version", "Ray on every node", DEFAULT_VERSION,
            kind=VERSION, check=check_version),
    Setting("ray_venv", "the venv Ray (and the all-reduce's default python) lives in", DEFAULT_VENV,
            kind=text("^(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+/?$", "absolute path"), check=check_venv),
    Setting("ray_extra_packages", "more pins into Ray's venv (`[torch==2.5.1]`)", "none",
            kind=listing("[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+_-]+"), check=check_pins),
    Setting("ray_port", "the head's GCS port", str(DEFAULT_PORT),
            kind=PORT, check=lambda v: check_port(v, "Ray port", "ray_port")),
    Setting("ray_dashboard_host", "the private address the dashboard listens on", "the head's private address",
            kind=TEXT),
    Setting("ray_firewall", "Ray's ports admit the cluster's nodes only", "true",
            kind=SWITCH, check=switch),
    Setting("ray_auth", "Ray's token authentication (RAY_AUTH_MODE=token)", "true, where the version has it",
            kind=SWITCH, check=switch),
    Setting("pip_find_links", "a directory or URL of wheels for Ray's venv", "none",
            kind=TEXT),
)


OWNED = owns("ops.ray", files=(SECRETS_APPLIED, f"{UNIT_DIR}/{HEAD_UNIT}", f"{UNIT_DIR}/{WORKER_UNIT}", FIREWALL_FILE),
             units=(HEAD_UNIT, WORKER_UNIT), trees=("/opt/gpufab",), home=(f"{TOKEN_DIR}/{TOKEN_NAME}",),
             withdrawn=(Withdrawal(FIREWALL_FILE, "removed Ray's firewall rules",
                                   f"nft delete table {FIREWALL_TABLE} 2>/dev/null; true"),))
# Phase 1, first: Ray stopped everywhere before anything it uses goes.
UNDONE = undoes("ops.ray", Undo(1, 10, lambda remote, venv: Outcome(stop_ray(remote, venv, force=False).changes),
                                settings=lambda config, inv, cli: read(config, inv, {}).venv))
