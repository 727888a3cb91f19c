"""`images`: the inventory's Docker images pulled on every node at once, and the same image on all of them.

A tag names whatever the registry holds when it is asked: `latest` (or a
re-pushed `24.05`) pulled on Monday and on Tuesday are different images, and
nodes pulled at different times then run different code (NVIDIA
cloud-native-stack#140). So after pulling, every node's image ID for each
name is read back and compared across the whole inventory; a node holding
another image under the same name fails, named, with the ID the others hold.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.chain import Column, Step
from ..core.connection import Session
from ..core.errors import HostError, InputError, keeping_changes
from ..core.fanout import FAILED, HostResult
from ..core.files import ManagedFile, plan_files
from ..core.inventory import IMAGE_REF_RE, Inventory, Node, is_image_ref
from ..core.remote import Remote, last_line
from ..core.steps import Outcome, run_step
from .shared.secrets import load_secrets

from ..core.declared import Undo, owns, undoes
from ..core.context import RunContext

REF_RE = IMAGE_REF_RE
#: One pull may be a large image over a slow link, but never unbounded.
PULL_TIMEOUT = 1800
NONE = "none"
#: The registry login gpufab keeps for root's docker (registry, user, password a line): 0600, never shown.
LOGIN_FILE = "/etc/gpufab/registry-login"
#: A registry host[:port] as DOCKER_REGISTRY or the login file may name it.
REGISTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?$")
#: The controller's .env keys it is made from.
LOGIN_KEYS = ("DOCKER_USERNAME", "DOCKER_PASSWORD")
#: `docker login` as root with the password from LOGIN_FILE on stdin: never on a command line.
LOGIN_SCRIPT = programs.text("registry-login.sh")
#: Whether root's docker holds credentials for the registry ($1).
HAS_LOGIN = 'grep -qF "\"$1\"" /root/.docker/config.json 2>/dev/null'
#: `REF ID` a line (`none` where the node has no such image). Run as root: docker's socket is root's.
IDS_SCRIPT = programs.text("image-ids.sh")


def check_refs(value: Any, path: str = "docker.images") -> Tuple[str, ...]:
    items = [] if value is None else value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"images must be a list of image names, not {value!r}", path=path)
    refs = tuple(str(x).strip() for x in items if str(x).strip())
    for ref in refs:
        if not is_image_ref(ref):
            raise InputError(f"invalid image name {ref!r}", path=path)
    return refs


def parse_ids(text: str) -> Dict[str, str]:
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and (parts[1] == NONE or parts[1].startswith("sha256:")):
            found[parts[0]] = parts[1]
    return found


def short(image_id: str) -> str:
    return image_id if image_id == NONE else image_id.split(":", 1)[-1][:12]


def read_ids(remote: Remote, refs: Sequence[str]) -> Dict[str, str]:
    return parse_ids(remote.script(IDS_SCRIPT, *refs, sudo=True, timeout=120).stdout)


def pull_node(remote: Remote, refs: Sequence[str]) -> Outcome:
    """`docker pull` each image; changed only where the image a name points to changed."""
    before = read_ids(remote, refs)
    for ref in refs:
        pulled = remote.change(f"docker pull -q {shlex.quote(ref)}", warn=True, timeout=PULL_TIMEOUT)
        if pulled.exited != 0:
            raise HostError(f"docker pull {ref} failed: {last_line(pulled.stderr or pulled.stdout) or 'no reason given'}")
    if remote.dry_run:
        return Outcome([f"would pull {ref}" for ref in refs], [], before)
    after = read_ids(remote, refs)
    changes = [f"pulled {ref} ({short(after.get(ref, NONE))})" for ref in refs if after.get(ref) != before.get(ref)]
    notes = [f"{ref} {short(after.get(ref, NONE))}" for ref in refs if after.get(ref) == before.get(ref)]
    return Outcome(changes, notes, after)


def odd_ones(ids: Mapping[str, Mapping[str, str]], head: Optional[str]) -> Dict[str, List[str]]:
    """node -> what differs there: per image, the ID most nodes hold (the head's on a tie) is the cluster's."""
    problems: Dict[str, List[str]] = {}
    refs = sorted({ref for found in ids.values() for ref in found})
    for ref in refs:
        held = {node: found.get(ref, NONE) for node, found in ids.items()}
        counts = Counter(i for i in held.values() if i != NONE)
        if not counts:
            continue
        top = max(counts.values())
        leaders = sorted(i for i, n in counts.items() if n == top)
        wanted = held[head] if head in held and held[head] in leaders else leaders[0]
        others = sorted(n for n, i in held.items() if i == wanted)
        for node, image in held.items():
            if image != wanted:
                what = "no such image" if image == NONE else f"image {short(image)}"
                problems.setdefault(node, []).append(
                    f"{ref} is {what} here, {short(wanted)} on {', '.join(others)}")
    return problems


@dataclass(frozen=True)
class Login:
    registry: str
    username: str
    password: str

    def __repr__(self) -> str:  # a traceback or a debug print never shows the password
        return f"Login({self.registry!r}, {self.username!r}, password=***)"


def registry_of(ref: str) -> Optional[str]:
    """The registry host of an image name (`nvcr.io`, `198.18.0.1:5000`), None for Docker Hub's short names."""
    first, slash, _ = ref.partition("/")
    return first if slash and ("." in first or ":" in first or first == "localhost") else None


def read_login(env_file: str, refs: Sequence[str], values: Optional[Mapping[str, str]] = None) -> Login:
    """DOCKER_USERNAME and DOCKER_PASSWORD (and DOCKER_REGISTRY, else the images' registry) from the local .env."""
    values = load_secrets(env_file) if values is None else values
    missing = [k for k in LOGIN_KEYS if not values.get(k)]
    if missing:
        raise InputError(f"--login needs {' and '.join(missing)} in it", path=env_file)
    registries = sorted({r for r in map(registry_of, refs) if r})
    registry = values.get("DOCKER_REGISTRY") or (registries[0] if len(registries) == 1 else "")
    if not registry:
        raise InputError("--login: set DOCKER_REGISTRY (the images name " +
                         (f"{len(registries)} registries" if registries else "no registry") + ")", path=env_file)
    if not REGISTRY_RE.match(registry):
        raise InputError(f"invalid DOCKER_REGISTRY {registry!r}", path=env_file)
    if any(c in values[k] for k in LOGIN_KEYS for c in "\n\r"):
        raise InputError("DOCKER_USERNAME and DOCKER_PASSWORD must be one line each", path=env_file)
    return Login(registry, values["DOCKER_USERNAME"], values["DOCKER_PASSWORD"])


def log_in(remote: Remote, login: Login) -> Outcome:
    """The login file (root's, 0600, compared by digest), and `docker login` when it changed or docker lost it."""
    wanted = ManagedFile(LOGIN_FILE, f"{login.registry}\n{login.username}\n{login.password}\n", mode=0o600,
                         secret=True)
    done = remote.write_files(plan_files([wanted], remote.read_state([wanted])))
    if not done and remote.check(f"sh -c {shlex.quote(HAS_LOGIN)} gpufab {shlex.quote(login.registry)}", sudo=True):
        return Outcome([], [f"logged in to {login.registry} as {login.username}"])
    with keeping_changes(done):
        result = remote.script(LOGIN_SCRIPT, LOGIN_FILE, sudo=True, warn=True, timeout=120) if not remote.dry_run else None
        if result is not None and result.exited != 0:
            raise HostError(f"docker login to {login.registry} as {login.username} failed: "
                            f"{last_line(result.stdout) or last_line(result.stderr) or 'no reason given'}")
    return Outcome([f"logged in to {login.registry} as {login.username} (password not shown)"], [])


def log_out(remote: Remote) -> Outcome:
    """reset: root's docker forgets the login gpufab made (the login file itself goes with gpufab's files)."""
    registry = remote.run(f"sed -n 1p {LOGIN_FILE} 2>/dev/null; true", sudo=True).stdout.strip()
    if not registry or not REGISTRY_RE.match(registry):
        return Outcome()
    remote.change(f"docker logout {shlex.quote(registry)} >/dev/null 2>&1; true")
    return Outcome([f"docker logged out of {registry}"], [])


@dataclass(frozen=True)
class ImagesSettings:
    images: Tuple[str, ...] = ()
    #: `--login` (docker.pull) or `--secrets` (bootstrap): the .env's registry credentials.
    login: Optional[Login] = None


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ImagesSettings:
    """CLI `--images` > the inventory's `docker: images:`; `--login`/`--secrets` read the registry login from .env."""
    given = cli.get("images")
    refs = check_refs(given, "--images") if given else tuple(inv.docker_images)
    env_file = cli.get("env_file") or ".env"
    if not refs or not (cli.get("login") or cli.get("secrets")):
        return ImagesSettings(refs)
    values = load_secrets(env_file)
    # bootstrap --secrets logs in only where the .env holds a registry login; --login requires one.
    if not cli.get("login") and not all(k in values for k in LOGIN_KEYS):
        return ImagesSettings(refs)
    return ImagesSettings(refs, read_login(env_file, refs, values))


def pull(session: Session, inv: Inventory, nodes: Sequence[Node], s: ImagesSettings, workers: Optional[int] = None,
         dry_run: bool = False, **step_kw: Any) -> List[HostResult]:
    """Pull on `nodes` at once; then every inventory node's IDs compared (the others only read)."""
    if not s.images:
        raise InputError("no images: list them in the inventory (docker: images: [...]) or give --images",
                         path="--images")

    def one(remote: Remote) -> Outcome:
        first = log_in(remote, s.login) if s.login else Outcome()
        with keeping_changes(first.changes):
            pulled = pull_node(remote, s.images)
        return Outcome(first.changes + pulled.changes, first.notes + pulled.notes, pulled.value)

    results = run_step(session, nodes, one, workers=workers, **step_kw)
    if dry_run:
        return results
    pulled = {n.name for n in nodes}
    others = [n for n in inv.nodes if n.name not in pulled]
    read_only = run_step(session, others, lambda r: Outcome(value=read_ids(r, s.images)), workers=workers,
                         remotes=step_kw.get("remotes"))
    ids = {r.node.name: r.value for r in [*results, *read_only] if not r.failed and r.value is not None}
    odd = odd_ones(ids, inv.head.name)
    for r in [*results, *read_only]:
        if r.node.name in odd and not r.failed:
            r.status, r.exit_code, r.reason = FAILED, 1, "; ".join(odd[r.node.name])
    # The nodes only read are in the table when they differ: the run names them, even if it did not pull there.
    return results + [r for r in read_only if r.failed and r.node.name in odd]


def run_on(run: RunContext, nodes: Sequence[Node], s: ImagesSettings) -> List[HostResult]:
    """The nodes of this run get results; another node found holding a different image is a report warning."""
    names = {n.name for n in nodes}
    results = pull(run.session, run.inv, nodes, s, dry_run=run.dry_run, **run.step_kw(NAME))
    run.keep(NAME, [r for r in results if r.node.name not in names])
    return [r for r in results if r.node.name in names]


def _cell(run: RunContext, node: Node) -> str:
    found = run.result(NAME, node)
    if found is None:
        return "-"
    if found.failed:
        return "differs" if " here, " in found.reason else "failed"
    return f"{len(found.value or {})} same"


def _report(run: RunContext, s: ImagesSettings) -> Tuple[List[str], List[str]]:
    results = run.results.get(NAME, [])
    same = [r for r in results if not r.failed]
    ids = next((r.value for r in same if r.value), {})
    shown = ", ".join(f"{ref} {short(ids.get(ref, NONE))}" for ref in s.images)
    others = [f"images: {r.node.name} (not in this run): {r.reason}" for r in run.kept(NAME, list) or []]
    return [f"Images: {shown} on {len(same)}/{len(run.inv.nodes)} nodes, the same image ID on each"], others


NAME = "images"
STEP = Step(NAME, settings=read, run=run_on, wanted=lambda s: bool(s.images), needs=("preflight", "docker"),
            columns=(Column("images", "Images", _cell),), report=_report)


OWNED = owns("ops.images", files=(LOGIN_FILE,))
UNDONE = undoes("ops.images", Undo(2, 30, lambda remote, s: Outcome(log_out(remote).changes)))
