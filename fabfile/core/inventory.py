"""The cluster inventory: which nodes exist, how to reach them, who is head.

Everything here is pure: it reads text and returns typed values, and every
problem is raised as one `InputError` naming the file and line, before any
file or node is touched. Values from the inventory end up in shell commands
and rendered files on the nodes, so names and values are held to a strict
character set here rather than trusted later.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from .declared import CLUSTER, NODE, check_names, check_value_of
from .errors import InputError
from .networks import strict_ip

ROLES = ("head", "worker")
DEFAULT_USER = "root"
DEFAULT_PORT = 22

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
PATH_RE = re.compile(r"^[A-Za-z0-9_./~+-]+$")
VAR_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A Docker image reference (registry[:port]/path[:tag][@sha256:digest]): nothing a shell would read.
IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[0-9]+)?(/[A-Za-z0-9._-]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                          r"(@sha256:[a-f0-9]{64})?$")
#: Characters a shell gives meaning to; no inventory value may hold one.
SHELL_META = set(";&|$`<>(){}[]\\'\"*?!\n\r\t")

TOP_KEYS = {"ssh", "nodes", "vars", "docker", "steps"}
DOCKER_KEYS = {"daemon", "images", "containers"}
SSH_KEYS = {"user", "port", "key", "known_hosts"}
NODE_KEYS = {"name", "public", "private", "role", "roles", "user", "port", "key", "vars"}


@dataclass(frozen=True)
class Node:
    """One machine: how to reach it over SSH and where it sits in the cluster."""

    name: str
    public: str
    private: Optional[str]
    role: str = "worker"
    nid: int = 0
    #: None (only for `fab -H` hosts) leaves it to ~/.ssh/config and Fabric.
    user: Optional[str] = DEFAULT_USER
    port: Optional[int] = DEFAULT_PORT
    key: Optional[str] = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    #: Workload roles beyond head/worker (`prefill`, `decode`...), for `launch --role`.
    roles: Tuple[str, ...] = ()

    @property
    def is_head(self) -> bool:
        return self.role == "head"

    def has_role(self, name: str) -> bool:
        return name == self.role or name in self.roles


@dataclass(frozen=True)
class Entry:
    """One item of an inventory list whose meaning belongs to a step (`steps:`), with its lines."""

    data: Mapping[str, Any]
    line: Optional[int] = None
    #: The line of each of its keys, for errors that name the exact line.
    keylines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> Optional[int]:
        return self.keylines.get(key, self.line)


@dataclass(frozen=True)
class Inventory:
    nodes: Tuple[Node, ...]
    path: Optional[str] = None
    known_hosts: Optional[str] = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    #: Extra /etc/docker/daemon.json keys (`docker: daemon:` in the inventory).
    docker_daemon: Mapping[str, Any] = field(default_factory=dict)
    #: Images every node must hold, the same on each (`docker: images:`; names checked by ops/images.py).
    docker_images: Tuple[str, ...] = ()
    #: Containers kept running (`docker: containers:`; checked by ops/containers.py).
    docker_containers: Tuple[Entry, ...] = ()
    #: The operator's own steps (`steps:`), checked by the step that runs them.
    steps: Tuple[Entry, ...] = ()

    @property
    def head(self) -> Node:
        return next(n for n in self.nodes if n.is_head)

    @property
    def workers(self) -> Tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.is_head)

    def by_name(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise InputError(f"no node named {name!r}", path=self.path)


# --------------------------------------------------------------------------- #
# Loading YAML: bounded, and with line numbers for the inventory


class _Refused(yaml.constructor.ConstructorError):
    """Valid YAML, but refused: a key that is not a name, a duplicate key, a document built to exhaust us."""


#: More values than any inventory needs: a document that expands past it through aliases
#: (`&a [*b, *b, ...]` nested) is refused before it is built, not after it fills memory.
MAX_VALUES = 100_000
#: Deeper than any inventory or settings file nests: PyYAML composes (and we check) recursively,
#: so 3,000 `[` or a few hundred nested mappings would end in a RecursionError instead.
MAX_DEPTH = 50
MERGE_TAG = "tag:yaml.org,2002:merge"


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses, with the line, what only a hostile or broken file holds: deep nesting, alias bombs."""

    _depth = 0

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Optional[yaml.Node]:
        node = super().get_single_node()
        if node is not None and _expanded_size(node) > MAX_VALUES:
            raise _Refused(None, None, f"document expands to more than {MAX_VALUES} values through "
                           "aliases (&name / *name): write the values out", node.start_mark)
        return node


class _LineLoader(BoundedLoader):
    """BoundedLoader that remembers the line of every mapping as key `__line__`."""


def load_yaml(text: str, path: Optional[str], loader: type = BoundedLoader) -> Any:
    """The document in `text`; anything wrong with it is one InputError naming the file and line."""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        what = problem if isinstance(exc, _Refused) else f"not valid YAML: {problem}"
        raise InputError(what, path=path, line=mark.line + 1 if mark else None) from None


def _expanded_size(root: yaml.Node) -> int:
    """How many values `root` becomes once every alias is expanded (aliases share nodes)."""
    sizes: Dict[int, int] = {}
    stack: List[Tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if children_done:
            sizes[id(node)] = min(MAX_VALUES + 1, 1 + sum(sizes.get(id(k), 0) for k in kids))
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes[id(root)]


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Dict[str, Any]:
    seen: Dict[str, int] = {}
    for key, _ in node.value:
        if key.tag == MERGE_TAG:  # `<<: *defaults` may be overridden by the keys written beside it
            continue
        if isinstance(key, yaml.ScalarNode) and key.value in seen:
            raise _Refused(None, None, f"duplicate key {key.value!r} (first on line {seen[key.value]})",
                           key.start_mark)
        seen[key.value] = key.start_mark.line + 1
    loader.flatten_mapping(node)
    for key, _ in node.value:
        # `1: x` or `yes: x` would reach code that expects names; said once, here, for every mapping.
        if not (isinstance(key, yaml.ScalarNode) and isinstance(loader.construct_object(key), str)):
            raise _Refused(None, None, f"key {key.value!r} is not a name (quote it)", key.start_mark)
        # The loader keeps its line numbers under `__line__`/`__keylines__`: a key of that shape was dropped unread.
        if key.value.startswith("__"):
            raise _Refused(None, None, f"key {key.value!r}: a name may not start with '__'", key.start_mark)
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__keylines__"] = {
        k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)
    }
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(mapping: Mapping[str, Any], key: Optional[str] = None) -> Optional[int]:
    if key is not None:
        line = mapping.get("__keylines__", {}).get(key)
        if line is not None:
            return line
    return mapping.get("__line__")


def _public(mapping: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in mapping.items() if not k.startswith("__")}


def _plain(value: Any) -> Any:
    """The value without the loader's line bookkeeping, at any depth."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in _public(value).items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- #
# Field checks


def check_ip(value: Any, what: str, path: Optional[str], line: Optional[int]) -> str:
    """Return the canonical text of an IP address or raise naming the bad value."""
    try:
        return str(strict_ip(value.strip() if isinstance(value, str) else value))
    except ValueError:
        raise InputError(f"invalid IP address {value!r} for {what}", path=path, line=line) from None


def check_address(value: Any, what: str, path: Optional[str], line: Optional[int]) -> str:
    """An SSH address: an IP, or a DNS name / ssh_config alias."""
    if not isinstance(value, str):  # `public: yes` is YAML's True, not a host called "True"
        raise InputError(f"invalid address {value!r} for {what} (an IP address or host name; quote it)",
                         path=path, line=line)
    text = value.strip()
    if re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*", text):
        return check_ip(text, what, path, line)
    if not HOSTNAME_RE.match(text):
        raise InputError(f"invalid address {value!r} for {what}", path=path, line=line)
    return text


def check_name(value: Any, what: str, path: Optional[str], line: Optional[int]) -> str:
    text = str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not NAME_RE.match(text):
        raise InputError(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' only",
            path=path,
            line=line,
        )
    return text


def check_value(key: str, value: Any, path: Optional[str], line: Optional[int]) -> Any:
    """A free variable: a scalar or a list of scalars without shell metacharacters."""
    if isinstance(value, list):
        return [check_value(key, v, path, line) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        raise InputError(f"variable {key!r} must be a scalar or a list of scalars", path=path, line=line)
    bad = sorted(set(value) & SHELL_META)
    if bad:
        raise InputError(
            f"variable {key!r} holds shell metacharacter(s) {''.join(bad)!r} in {value!r}",
            path=path,
            line=line,
        )
    return value


def check_roles(raw: Any, node: str, path: Optional[str], line: Optional[int]) -> Tuple[str, ...]:
    """`roles: [prefill]` (or `prefill,decode`): names `launch --role` can select."""
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise InputError(f"'roles' of node {node!r} must be a list of names", path=path, line=line)
    return tuple(check_name(str(r).strip(), f"role of node {node!r}", path, line) for r in items)


#: Variables that count something (`gpus: 8`): every reader (slurm, ray, launch) takes them as whole numbers.
COUNT_VARS = ("gpus",)


def check_count(key: str, value: Any, path: Optional[str], line: Optional[int]) -> Optional[int]:
    """A count variable: a whole number of 0 or more (`8` or `"8"`); `-2`, `1.5` and `abc` are refused here."""
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.isascii() and text.isdigit():
        return int(text)
    if isinstance(text, bool) or not isinstance(text, int) or text < 0:
        raise InputError(f"variable {key!r} must be a whole number of 0 or more, not {value!r}", path=path, line=line)
    return text


def check_vars(raw: Any, path: Optional[str], line: Optional[int], place: str = CLUSTER) -> Dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError("'vars' must be a mapping of name: value", path=path, line=line)
    out: Dict[str, Any] = {}
    for key, value in _public(raw).items():
        kline = _line(raw, key)
        if not isinstance(key, str) or not VAR_KEY_RE.match(key):
            raise InputError(f"invalid variable name {key!r}", path=path, line=kline)
        check_names([key], place, path, lambda _: kline)
        out[key] = check_count(key, value, path, kline) if key in COUNT_VARS else check_value(key, value, path, kline)
        check_value_of(key, out[key], path, kline)
    return out


def check_docker(raw: Any, path: Optional[str], line: Optional[int]) -> Dict[str, Any]:
    """`docker: {daemon: {...}}`: daemon.json keys, any JSON value (written to a file, not a shell)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError("'docker' must be a mapping (daemon: {...}, images: [...], containers: [...])", path=path,
                         line=line)
    _check_keys(raw, DOCKER_KEYS, "docker", path)
    daemon = raw.get("daemon")
    if daemon is None:
        return {}
    if not isinstance(daemon, dict):
        raise InputError("'docker.daemon' must be a mapping of daemon.json keys", path=path, line=_line(raw, "daemon"))
    plain = _plain(daemon)
    try:
        json.dumps(plain)
    except (TypeError, ValueError) as exc:
        raise InputError(f"'docker.daemon' is not JSON-compatible: {exc}", path=path, line=_line(raw, "daemon")) from None
    return plain


def is_image_ref(text: str) -> bool:
    """A name docker can pull and no shell reads more into: the one rule for docker.images and --images."""
    return len(text) <= 255 and bool(IMAGE_REF_RE.match(text)) and ".." not in text


def check_docker_images(raw: Any, path: Optional[str]) -> Tuple[str, ...]:
    """`docker: {images: [name, ...]}`: image references, checked here where the file and line are known.

    Left to the steps, the first to read one named its own setting: `gpu_test_image` (its default).
    """
    images = raw.get("images") if isinstance(raw, dict) else None
    if images is None:
        return ()
    if not isinstance(images, list) or not all(isinstance(x, str) and x.strip() for x in images):
        raise InputError("'docker.images' must be a list of image names", path=path, line=_line(raw, "images"))
    bad = next((x for x in images if not is_image_ref(x.strip())), None)
    if bad is not None:
        raise InputError(f"invalid image name {bad!r} in docker.images", path=path, line=_line(raw, "images"))
    return tuple(x.strip() for x in images)


def check_entries(raw: Any, what: str, path: Optional[str], line: Optional[int]) -> Tuple[Entry, ...]:
    """A list of mappings, kept with their lines; what the keys mean is checked by their step."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InputError(f"'{what}' must be a list of mappings", path=path, line=line)
    out = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InputError(f"{what} #{index + 1} must be a mapping (name: ..., script: ...)", path=path, line=line)
        out.append(Entry(_plain(item), _line(item), dict(item.get("__keylines__", {}))))
    return tuple(out)


def _check_keys(mapping: Mapping[str, Any], allowed: set, where: str, path: Optional[str]) -> None:
    for key in _public(mapping):
        if key not in allowed:
            raise InputError(
                f"unknown key {key!r} in {where} (expected one of: {', '.join(sorted(allowed))})",
                path=path,
                line=_line(mapping, key),
            )


def check_ssh_port(value: Any, path: Optional[str], line: Optional[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InputError(f"invalid SSH port {value!r}", path=path, line=line)
    return value


def check_file_path(value: Any, what: str, path: Optional[str], line: Optional[int]) -> str:
    text = str(value)
    if not PATH_RE.match(text):
        raise InputError(f"invalid {what} path {value!r}", path=path, line=line)
    return text


def check_user(value: Any, path: Optional[str], line: Optional[int]) -> str:
    text = str(value)
    if not USER_RE.match(text):
        raise InputError(f"invalid SSH user {value!r}", path=path, line=line)
    return text


# --------------------------------------------------------------------------- #
# Building the inventory


Lines = Dict[str, Optional[int]]  # field -> line of a node ("node": its first line)


def assign_roles(drafts: Sequence[Dict[str, Any]], lines: Sequence[Lines], path: Optional[str]) -> List[Node]:
    """Settle roles and NIDs: one head (the first node unless one says so), NID 0.

    Workers get NIDs 1.. in the order they were listed.
    """
    heads = [i for i, d in enumerate(drafts) if d.get("role") == "head"]
    if len(heads) > 1:
        first = drafts[heads[0]]["name"]
        raise InputError(
            f"two heads: {first!r} and {drafts[heads[1]]['name']!r}; exactly one node may have role: head",
            path=path,
            line=lines[heads[1]].get("role"),
        )
    head = heads[0] if heads else 0
    nodes: List[Node] = []
    nid = 1
    for i, draft in enumerate(drafts):
        if i == head:
            nodes.append(Node(**{**draft, "role": "head", "nid": 0}))
        else:
            nodes.append(Node(**{**draft, "role": "worker", "nid": nid}))
            nid += 1
    return nodes


def check_unique(nodes: Sequence[Node], lines: Sequence[Lines], path: Optional[str]) -> None:
    """No two nodes share a name, an SSH endpoint or an address.

    A node may use one address for both roles (a single-NIC machine), and
    several nodes may sit behind one public address on different ports
    (a NAT gateway); any other repeat is a typo that would send work twice
    to one machine.
    """
    names: Dict[str, int] = {}
    owner: Dict[str, int] = {}  # address -> node index
    endpoints: Dict[Tuple[str, Optional[int]], int] = {}
    for i, node in enumerate(nodes):
        if node.name in names:
            raise InputError(f"duplicate node name {node.name!r}", path=path, line=lines[i].get("name"))
        names[node.name] = i
        for field_name, addr in (("public", node.public), ("private", node.private)):
            if addr is None:
                continue
            other = owner.get(addr)
            # Same public address as another node's: a gateway, told apart by port below.
            shared_gateway = field_name == "public" and other is not None and nodes[other].public == addr
            if other is not None and other != i and not shared_gateway:
                raise InputError(
                    f"duplicate address {addr} (node {node.name!r} and node {nodes[other].name!r})",
                    path=path,
                    line=lines[i].get(field_name),
                )
            owner.setdefault(addr, i)
        if (node.public, node.port) in endpoints:
            other_name = nodes[endpoints[(node.public, node.port)]].name
            raise InputError(
                f"duplicate address {node.public} (node {node.name!r} and node {other_name!r})",
                path=path,
                line=lines[i].get("public"),
            )
        endpoints[(node.public, node.port)] = i


def parse_inventory(text: str, path: Optional[str] = None) -> Inventory:
    """Parse and validate inventory YAML text."""
    data = load_yaml(text, path, _LineLoader)
    if data is None:
        raise InputError("inventory is empty", path=path)
    if not isinstance(data, dict):
        raise InputError("inventory must be a mapping with a 'nodes' list", path=path, line=1)
    _check_keys(data, TOP_KEYS, "inventory", path)

    ssh = data.get("ssh") or {}
    if not isinstance(ssh, dict):
        raise InputError("'ssh' must be a mapping", path=path, line=_line(data, "ssh"))
    _check_keys(ssh, SSH_KEYS, "ssh", path)
    default_user = check_user(ssh.get("user", DEFAULT_USER), path, _line(ssh, "user"))
    default_port = check_ssh_port(ssh.get("port", DEFAULT_PORT), path, _line(ssh, "port"))
    default_key = ssh.get("key")
    if default_key is not None:
        default_key = check_file_path(default_key, "SSH key", path, _line(ssh, "key"))
    known_hosts = ssh.get("known_hosts")
    if known_hosts is not None:
        known_hosts = check_file_path(known_hosts, "known_hosts", path, _line(ssh, "known_hosts"))

    raw_nodes = data.get("nodes")
    if not raw_nodes:
        raise InputError("inventory lists no nodes", path=path, line=_line(data, "nodes"))
    if not isinstance(raw_nodes, list):
        raise InputError("'nodes' must be a list", path=path, line=_line(data, "nodes"))

    drafts: List[Dict[str, Any]] = []
    lines: List[Lines] = []
    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            raise InputError(f"node #{index + 1} must be a mapping with name/public/private", path=path)
        line = _line(raw)
        _check_keys(raw, NODE_KEYS, "node", path)
        for required in ("name", "public"):
            if raw.get(required) in (None, ""):
                raise InputError(f"node #{index + 1} has no {required!r}", path=path, line=line)
        name = check_name(raw["name"], "node name", path, _line(raw, "name"))
        role = raw.get("role")
        if role is not None and role not in ROLES:
            raise InputError(
                f"unknown role {role!r} for node {name!r} (expected one of: {', '.join(ROLES)})",
                path=path,
                line=_line(raw, "role"),
            )
        private = raw.get("private")
        key = raw.get("key", default_key)
        drafts.append(
            dict(
                name=name,
                public=check_address(raw["public"], f"node {name!r} public", path, _line(raw, "public")),
                private=None if private in (None, "") else check_ip(private, f"node {name!r} private", path, _line(raw, "private")),
                role=role or "worker",
                user=check_user(raw.get("user", default_user), path, _line(raw, "user")),
                port=check_ssh_port(raw.get("port", default_port), path, _line(raw, "port")),
                key=None if key is None else check_file_path(key, "SSH key", path, _line(raw, "key")),
                vars=check_vars(raw.get("vars"), path, _line(raw, "vars"), NODE),
                roles=check_roles(raw.get("roles"), name, path, _line(raw, "roles")),
            )
        )
        lines.append({k: _line(raw, k) for k in ("name", "public", "private", "role")})

    nodes = assign_roles(drafts, lines, path)
    check_unique(nodes, lines, path)
    return Inventory(
        nodes=tuple(nodes),
        path=path,
        known_hosts=known_hosts,
        vars=check_vars(data.get("vars"), path, _line(data, "vars")),
        docker_daemon=check_docker(data.get("docker"), path, _line(data, "docker")),
        docker_images=check_docker_images(data.get("docker"), path),
        docker_containers=check_entries((data.get("docker") or {}).get("containers")
                                        if isinstance(data.get("docker"), dict) else None, "docker.containers", path,
                                        _line(data, "docker")),
        steps=check_entries(data.get("steps"), "steps", path, _line(data, "steps")),
    )


def load_inventory(path: str) -> Inventory:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InputError("inventory file not found (set GPUFAB_INVENTORY, or run inv inventory.import / inv lab.up)", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read inventory: {exc.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise InputError("inventory is not UTF-8 text", path=path) from None
    return parse_inventory(text, path)


def nodes_from_hosts(hosts: Sequence[str], user: Optional[str] = None, port: Optional[int] = None) -> Inventory:
    """An inventory for `fab -H a,b,c`: first host is head, private unknown yet.

    Host strings may be `user@host:port` like Fabric's. The node name is the
    host part, so output is labelled with what the user typed.
    """
    drafts: List[Dict[str, Any]] = []
    for raw in hosts:
        text = raw.strip()
        if not text:
            raise InputError("empty host in the host list", path="--hosts")
        h_user, h_port, host = user, port, text
        if "@" in host:
            h_user, host = host.rsplit("@", 1)
        port_text = None
        if host.startswith("["):  # [v6]:port
            host, closed, rest = host[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise InputError(f"invalid host {raw!r} (write [v6-address]:port)", path="--hosts")
            port_text = rest[1:] if rest else None
        elif host.count(":") == 1:
            host, port_text = host.split(":")
        if port_text is not None:
            if not (port_text.isascii() and port_text.isdigit()):
                raise InputError(f"invalid port in host {raw!r}", path="--hosts")
            h_port = int(port_text)
        drafts.append(
            dict(
                name=host if ":" in host else check_name(host, "host", "--hosts", None),
                public=check_address(host, f"host {raw!r}", "--hosts", None),
                private=None,
                user=check_user(h_user, "--hosts", None) if h_user else None,
                port=check_ssh_port(h_port, "--hosts", None) if h_port is not None else None,
                key=None,
                vars={},
                role="worker",
            )
        )
    lines: List[Lines] = [{} for _ in drafts]
    nodes = assign_roles(drafts, lines, "--hosts")
    check_unique(nodes, lines, "--hosts")
    return Inventory(nodes=tuple(nodes), path=None)


def with_private(inv: Inventory, private: Mapping[str, str]) -> Inventory:
    """The same inventory with discovered private addresses filled in."""
    from dataclasses import replace

    nodes = tuple(replace(n, private=private.get(n.name, n.private)) for n in inv.nodes)
    return replace(inv, nodes=nodes)


def without_node(text: str, name: str, path: Optional[str] = None) -> str:
    """The inventory text with node `name`'s entry cut out; every other line, comments included, as it was.

    The cut is checked by parsing the result: the same nodes less that one,
    or an error asking for the edit by hand (a flow-style list, say).
    """
    before = parse_inventory(text, path)
    before.by_name(name)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    nodes = next((v for k, v in root.value if k.value == "nodes"), None)
    entry = None
    if isinstance(nodes, yaml.SequenceNode) and not nodes.flow_style:
        entry = next((item for item in nodes.value if isinstance(item, yaml.MappingNode)
                      and any(k.value == "name" and v.value == name for k, v in item.value)), None)
    cut = None
    if entry is not None:
        lines = text.splitlines(keepends=True)
        start, mark = entry.start_mark.line, entry.end_mark
        # The end mark is where the next token starts (exclusive), or just after the entry's last text at EOF.
        end = mark.line + (1 if mark.line < len(lines) and lines[mark.line][:mark.column].strip() else 0)
        while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1  # comments and blank lines after the entry belong to what follows
        cut = "".join(lines[:start] + lines[end:])
        try:
            after = parse_inventory(cut, path)
        except InputError:
            cut = None
        else:
            if [n.name for n in after.nodes] != [n.name for n in before.nodes if n.name != name] or \
                    after.vars != before.vars or [e.data for e in after.steps] != [e.data for e in before.steps]:
                cut = None
    if cut is None:
        raise InputError(f"cannot cut node {name!r} out of this inventory by itself: remove its entry by hand", path=path)
    return cut
