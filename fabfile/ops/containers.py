"""`containers`: the inventory's long-running containers (a sandbox, a model server), kept running on every node.

What a container was started with is hashed into a label (`gpufab.spec`);
a container whose label differs, or that runs an older image than its name
now holds (after `docker.pull`), is created again; a stopped one is
started; one that matches is left alone, so a second run changes nothing.
Published ports are bound to the node's private address unless an address
is given: a dashboard or sandbox is not put on the public network by default.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from ..core.chain import Column, Step, every_node
from ..core.declared import Undo, declare_section, undoes
from ..core.cluster import reach_of
from ..core.networks import Reach, check_bind_address
from ..core.errors import HostError, InputError, keeping_changes
from ..core.inventory import IMAGE_REF_RE, Entry, Inventory
from ..core.remote import Remote, last_line
from ..core.steps import Outcome, Seen
from ..core.context import RunContext

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESTART = ("no", "always", "unless-stopped", "on-failure")
PORT_RE = re.compile(r"^(?:(?P<ip>[0-9.]+):)?(?P<host>[0-9]{1,5}):(?P<inner>[0-9]{1,5})(?P<proto>/tcp|/udp)?$")
KEYS = {"name", "image", "command", "restart", "gpus", "infiniband", "env_file", "ports", "where"}
WHERE = ("all", "head", "workers")
LABEL = "gpufab.spec"
#: Seconds a started container gets to be seen running (a crash right after start is a finding).
SETTLE = 3
#: `STATUS IMAGE-ID SPEC` of the container, or `missing`.
INSPECT = ("docker inspect --format '{{{{.State.Status}}}} {{{{.Image}}}} "
           "{{{{index .Config.Labels \"" + LABEL + "\"}}}}' {name} 2>/dev/null || echo missing")


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: Tuple[str, ...] = ()
    restart: str = "unless-stopped"
    gpus: bool = False
    #: InfiniBand devices and what RDMA needs in a container: locked memory.
    infiniband: bool = False
    env_file: Optional[str] = None
    ports: Tuple[str, ...] = ()
    where: str = "all"

    @property
    def spec(self) -> str:
        """What the container is started with, as a short digest (its label)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fail(where: str, message: str, path: Optional[str], entry: Entry, key: str) -> InputError:
    return InputError(f"{where}: {message}", path=path, line=entry.line_of(key))


def parse_container(entry: Entry, index: int, path: Optional[str], reach: Reach = Reach()) -> Container:
    """One `docker: containers:` entry, every value checked before anything runs."""
    data = entry.data
    where = f"docker.containers #{index + 1}"
    for key in data:
        if key not in KEYS:
            raise _fail(where, f"unknown key {key!r} (expected one of: {', '.join(sorted(KEYS))})", path, entry, key)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail(where, f"invalid container name {name!r}", path, entry, "name")
    where = f"container {name}"
    image = data.get("image")
    if not isinstance(image, str) or not IMAGE_REF_RE.match(image) or ".." in image:
        raise _fail(where, f"invalid image name {image!r}", path, entry, "image")
    command = data.get("command", ())
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise _fail(where, f"command cannot be split into words ({exc})", path, entry, "command") from None
    if not isinstance(command, (list, tuple)) or not all(isinstance(c, str) and "\0" not in c for c in command):
        raise _fail(where, "command must be a string or a list of strings", path, entry, "command")
    restart = str(data.get("restart", "unless-stopped"))
    if restart.split(":")[0] not in RESTART or (":" in restart and not restart.startswith("on-failure:")):
        raise _fail(where, f"restart must be one of {', '.join(RESTART)} (on-failure:N), not {restart!r}",
                    path, entry, "restart")
    flags = {}
    for key in ("gpus", "infiniband"):
        value = data.get(key, False)
        if not isinstance(value, bool):
            raise _fail(where, f"{key} must be true or false, not {value!r}", path, entry, key)
        flags[key] = value
    env_file = data.get("env_file")
    if env_file is not None and (not isinstance(env_file, str) or not env_file.startswith("/")
                                 or any(c.isspace() for c in env_file)):
        raise _fail(where, f"env_file must be an absolute path on the nodes, not {env_file!r}", path, entry, "env_file")
    ports = data.get("ports", ())
    if not isinstance(ports, (list, tuple)) or not all(isinstance(p, (str, int)) for p in ports):
        raise _fail(where, "ports must be a list such as [\"8080:8080\"]", path, entry, "ports")
    for port in ports:
        m = PORT_RE.match(str(port))
        if not m or not all(0 < int(m.group(g)) < 65536 for g in ("host", "inner")):
            raise _fail(where, f"invalid port mapping {port!r} (HOST:CONTAINER, or IP:HOST:CONTAINER)", path, entry,
                        "ports")
        if m.group("ip"):  # an address given: held to the private rule like every listener
            try:
                check_bind_address(m.group("ip"), f"{where}'s port {port}", reach, "ports")
            except InputError as exc:
                raise _fail(where, str(exc).removeprefix("ports: "), path, entry, "ports") from None
    placed = str(data.get("where", "all"))
    if placed not in WHERE:
        raise _fail(where, f"where must be one of {', '.join(WHERE)}, not {placed!r}", path, entry, "where")
    return Container(name, image, tuple(command), restart, flags["gpus"], flags["infiniband"], env_file,
                     tuple(str(p) for p in ports), placed)


def run_args(c: Container, private: Optional[str]) -> List[str]:
    """`docker create` arguments (quoted words): published ports on the private address by default."""
    args = ["docker", "create", "--name", c.name, "--restart", c.restart, "--label", f"{LABEL}={c.spec}"]
    if c.gpus:
        args += ["--gpus", "all"]
    if c.infiniband:
        args += ["--device", "/dev/infiniband", "--cap-add", "IPC_LOCK", "--ulimit", "memlock=-1"]
    if c.env_file:
        args += ["--env-file", c.env_file]
    for port in c.ports:
        m = PORT_RE.match(port)
        bind = m.group("ip") if m and m.group("ip") else private
        args += ["-p", f"{bind}:{port}" if bind and not (m and m.group("ip")) else port]
    return [*args, c.image, *c.command]


def parse_inspect(text: str) -> Tuple[str, str, str]:
    """(status, image ID, spec label) of a container; status `missing` when there is none."""
    parts = text.split()
    if not parts or parts[0] == "missing":
        return "missing", "", ""
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 and parts[2] != "<no" else ""


def keep_running(remote: Remote, c: Container) -> Outcome:
    """Create (or create again), start, and see it running."""
    q = shlex.quote(c.name)
    status, running_image, label = parse_inspect(remote.run(INSPECT.format(name=q), sudo=True).stdout)
    image_id = remote.run(f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(c.image)} 2>/dev/null",
                          sudo=True, warn=True).stdout.strip()
    done: List[str] = []
    with keeping_changes(done):
        if not image_id:
            pulled = remote.change(f"docker pull -q {shlex.quote(c.image)}", warn=True, timeout=1800)
            if pulled.exited != 0:
                raise HostError(f"container {c.name}: docker pull {c.image} failed: {last_line(pulled.stderr)}")
            done.append(f"pulled {c.image}")
        stale = status != "missing" and (label != c.spec or (image_id and running_image != image_id))
        if stale:
            remote.change(f"docker rm -f {q} >/dev/null")
            done.append(f"removed container {c.name} (" + ("its settings changed" if label != c.spec else
                                                            "its image name holds a newer image") + ")")
        if status == "missing" or stale:
            made = remote.change(" ".join(shlex.quote(a) for a in run_args(c, remote.node.private)), warn=True,
                                 timeout=120)
            if made.exited != 0:
                raise HostError(f"container {c.name}: docker create failed: {last_line(made.stderr)}")
            done.append(f"created container {c.name}")
        if status != "running" or stale:
            started = remote.change(f"docker start {q} >/dev/null", warn=True, timeout=120)
            if started.exited != 0:
                raise HostError(f"container {c.name} does not start: {last_line(started.stderr)}")
            done.append(f"started container {c.name}")
            if not remote.dry_run:
                now = remote.run(f"sleep {SETTLE}; " + INSPECT.format(name=q), sudo=True).stdout
                if parse_inspect(now)[0] != "running":
                    logs = remote.run(f"docker logs --tail 3 {q} 2>&1", sudo=True, warn=True).stdout
                    raise HostError(f"container {c.name} stopped right after start: {last_line(logs) or 'no output'}")
    return Outcome(done, [] if done else [f"container {c.name} running"], c.name)


def remove_all(remote: Remote) -> Outcome:
    """reset: the containers gpufab started (its label on them), none other; their images stay, like packages."""
    if not remote.check("command -v docker >/dev/null 2>&1"):
        return Outcome()
    names = remote.run(f"docker ps -a --filter label={LABEL} --format '{{{{.Names}}}}' 2>/dev/null; true",
                       sudo=True).stdout.split()
    names = [n for n in names if NAME_RE.match(n)]
    if not names:
        return Outcome()
    remote.change("docker rm -f " + " ".join(shlex.quote(n) for n in names) + " >/dev/null", timeout=120)
    return Outcome([f"removed container {', '.join(names)}"], [])


@dataclass(frozen=True)
class ContainersSettings:
    containers: Tuple[Container, ...] = ()


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ContainersSettings:
    reach = reach_of(config, inv)
    parsed = tuple(parse_container(e, i, inv.path, reach) for i, e in enumerate(inv.docker_containers))
    names = [c.name for c in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"docker.containers: {', '.join(twice)} named twice", path=inv.path)
    return ContainersSettings(parsed)


def mine(c: Container, is_head: bool) -> bool:
    return c.where == "all" or (c.where == "head") == is_head


def apply(remote: Remote, s: ContainersSettings) -> Outcome:
    done: List[str] = []
    notes: List[str] = []
    ran = []
    with keeping_changes(done):
        for c in s.containers:
            if mine(c, remote.node.is_head):
                out = keep_running(remote, c)
                done += out.changes
                notes += out.notes
                ran.append(c.name)
    return Outcome(done, notes, tuple(ran))


def check(remote: Remote, s: ContainersSettings) -> Outcome:
    """The verify phase: each of this node's containers running (`docker ps`), else the node fails, named."""
    wanted = [c for c in s.containers if mine(c, remote.node.is_head)]
    stopped = []
    for c in wanted:
        status = parse_inspect(remote.run(INSPECT.format(name=shlex.quote(c.name)), sudo=True).stdout)[0]
        if status != "running":
            stopped.append(f"{c.name} {status}")
    if stopped:
        raise HostError(f"containers not running: {', '.join(stopped)}", value=(len(wanted) - len(stopped), len(wanted)))
    return Outcome(value=(len(wanted), len(wanted)))


def _cell(run: RunContext, node: Any) -> str:
    found = run.checked(NAME, node)
    if found is None:
        result = run.result(NAME, node)
        return "-" if result is None else ("failed" if result.failed else "-")
    return f"{found[0]}/{found[1]} running"


def _report(run: RunContext, s: ContainersSettings) -> Tuple[List[str], List[str]]:
    verified = run.verified()
    names = ", ".join(c.name for c in s.containers)
    return [f"Containers: {names} running on {len(verified)}/{len(run.inv.nodes)} nodes (docker ps)"], []


def containers_seen(states: Sequence[Tuple[str, str]]) -> Seen:
    """`gpufab status`: (name, docker's state) of each of this node's containers: all running."""
    stopped = [f"{name} {state}" for name, state in states if state != "running"]
    shown = f"{len(states) - len(stopped)}/{len(states)} running"
    return Seen(shown, (f"containers not running: {', '.join(stopped)}",) if stopped else ())


def _status(run: RunContext, remote: Remote, s: ContainersSettings) -> Seen:
    wanted = [c for c in s.containers if mine(c, remote.node.is_head)]
    return containers_seen([(c.name, parse_inspect(remote.run(INSPECT.format(name=shlex.quote(c.name)),
                                                               sudo=True).stdout)[0]) for c in wanted])


NAME = "containers"
STEP = Step(NAME, settings=read, run=every_node(NAME, apply), wanted=lambda s: bool(s.containers), check=check,
            status=_status,
            needs=("preflight", "docker", "images"),
            columns=(Column("containers", "Containers", _cell),), report=_report)


SECTION = declare_section("ops.containers", "docker.containers", {
    "type": "object", "additionalProperties": False, "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern}, "image": {"type": "string", "pattern": IMAGE_REF_RE.pattern},
        "command": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "restart": {"type": "string", "pattern": "^(no|always|unless-stopped|on-failure(:[0-9]+)?)$"},
        "gpus": {"type": "boolean"}, "infiniband": {"type": "boolean"},
        "env_file": {"type": "string", "pattern": "^/\\S*$"},
        "ports": {"type": "array", "items": {"anyOf": [{"type": "string", "pattern": re.sub(r"\(\?P<\w+>", "(?:",
                                                                                            PORT_RE.pattern)},
                                                        {"type": "integer"}]}},
        "where": {"enum": list(WHERE)},
    },
})


UNDONE = undoes("ops.containers", Undo(2, 20, lambda remote, s: Outcome(remove_all(remote).changes)))
