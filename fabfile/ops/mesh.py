"""`mesh`: every node reaches every other over SSH by name, as the SSH user.

What `mpirun`, DeepSpeed's pdsh launcher and Horovod need besides Ray, and
what users otherwise copy by hand between nodes. Each node makes its own key,
whose private half never leaves it; every node accepts each peer's public
half from that peer's private address only, so a key copied off one node is
no use anywhere else, and taking a node out revokes its key alone. (A node's
SSH user, and so its root, can still log in to every other node as the SSH
user: that is what the mesh is for.) Host keys are never
trusted on first use inside the cluster: each node's keys are read over
gpufab's own connection to it, which checked that node's key, and written
into every node's known_hosts. Names resolve to private addresses
(/etc/hosts), and /etc/gpufab/hostfile lists the nodes with a slot per GPU.

Files gpufab shares with the user or the system (/etc/hosts, ~/.ssh/*) get a
marked block and nothing else, so that `mesh.remove` gives them back byte for
byte; a file gpufab created for the block goes again with it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.chain import Column, Step
from ..core.connection import Session
from ..core.errors import HostError, InputError, keeping_changes
from ..core.facts import parse_facts
from ..core.fanout import HostResult
from ..core.files import (ABSENT_SUFFIX, BEFORE_DIR, FileState, ManagedFile, plan_files, render, replace_block,
                          split_managed_block)
from ..core.cluster import switch
from ..core.inventory import HOSTNAME_RE, Inventory, Node
from ..core.networks import strict_ip
from ..core.remote import Remote, last_line
from ..core.steps import Outcome, run_step
from .shared import gpu
from .shared import nodeenv
from ..core.declared import NODE, SWITCH, Setting, Undo, declare, owns, undoes, whole
from ..core.context import RunContext

#: `name slots=N` a line (OpenMPI and DeepSpeed read it), and one name a line; the env file names both (shared/nodeenv.py).
HOSTFILE = nodeenv.MESH_HOSTFILE
HOSTS_LIST = nodeenv.MESH_HOSTS
ETC_HOSTS = "/etc/hosts"
#: In ~/.ssh: gpufab's own files (this node's mesh key), and the user's files it adds a block to.
KEY_NAME = "gpufab_mesh_ed25519"
KEY_COMMENT = "gpufab-mesh@"
#: The one cluster key of older gpufab, copied to every node: removed where it is found.
OLD_KEY_NAME = "gpufab_cluster_ed25519"
AUTHORIZED_KEYS = "authorized_keys"
KNOWN_HOSTS = "known_hosts"
SSH_CONFIG = "config"
#: Not a prefix of the other gpufab blocks' markers: one never finds another's.
BEGIN = "# BEGIN gpufab-mesh managed block"
END = "# END gpufab-mesh managed block"
HOST_KEY_RE = re.compile(r"^(ssh|ecdsa|sk)-[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}$")
#: A node's slots without GPUs (the hostfile needs at least one).
MAX_SLOTS = 1024
#: Seconds one `ssh peer true` of mesh.verify gets, connection included.
PAIR_TIMEOUT = 20

#: Who the SSH user is there, the node's host keys and its mesh key ($1 the key's name); one line
#: each; `oldkey=yes` where older gpufab's shared key ($2) is still there; `gpus=` unless $3 is `known`
#: (the run has read the GPU count already). Run as the SSH user.
FACTS_SCRIPT = programs.text("mesh-facts.sh", smi_timeout=gpu.SMI_TIMEOUT)

#: This node's mesh key: made once by the SSH user; only its public half is printed, derived from the
#: private one (which never leaves the node). $1 the key's name, $2 its comment.
KEY_SCRIPT = programs.text("mesh-key.sh")

#: `ssh NAME true` to every name given, at once; prints `NAME EXIT last-line-of-its-output`.
PAIRS_SCRIPT = programs.text("mesh-pairs.sh")


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class NodeFacts:
    """Read on one node: its SSH user, their home, its GPUs and its host keys (`type base64`)."""

    user: str
    group: str
    home: str
    gpus: int = 0
    host_keys: Tuple[str, ...] = ()
    #: The public half of this node's mesh key (`ssh-ed25519 AAAA...`), when it has one.
    mesh_key: Optional[str] = None
    #: Older gpufab's one cluster key (the same private key on every node) is still in ~/.ssh.
    old_key: bool = False


PUBLIC_KEY_RE = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/]+={0,3}$")


def parse_node_facts(text: str) -> NodeFacts:
    values = parse_facts(text)
    found = (line[len("hostkey="):].strip() for line in text.splitlines() if line.startswith("hostkey="))
    # Only `type base64` goes into known_hosts files: nothing else a line of them could say.
    keys = tuple(k for k in found if HOST_KEY_RE.match(k))
    gpus = values.get("gpus", "0")
    if not values.get("user") or not values.get("home", "").startswith("/"):
        raise ValueError("cannot tell the SSH user's home directory")
    mesh_key = values.get("meshkey", "").strip()
    return NodeFacts(values["user"], values.get("group") or values["user"], values["home"],
                     int(gpus) if gpus.isdigit() else 0, keys, mesh_key if PUBLIC_KEY_RE.match(mesh_key) else None,
                     values.get("oldkey") == "yes")


def read_facts(remote: Remote) -> NodeFacts:
    gpus_known = remote.facts.flag(gpu.GPUS)
    text = remote.script(FACTS_SCRIPT, KEY_NAME, OLD_KEY_NAME, gpus_known, timeout=60).stdout
    gpus = remote.facts.kept(gpu.GPUS, gpus_known, lambda: parse_facts(text).get("gpus", "0"), remote)
    try:
        return replace(parse_node_facts(text), gpus=gpu.count_of(gpus))
    except ValueError as exc:
        raise HostError(str(exc)) from None


@dataclass(frozen=True)
class NodeKey:
    """A node's mesh key as the others see it: its public half only."""

    public: str  # `ssh-ed25519 AAAA...`
    generated: bool = False


def parse_key(text: str) -> NodeKey:
    public = next((line.split(" ", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("==gpufab-public ")), "")
    if not PUBLIC_KEY_RE.match(public):
        raise ValueError("this node's mesh key cannot be read")
    return NodeKey(public, "==gpufab-generated" in text.split())


def own_key(remote: Remote) -> NodeKey:
    """This node's key, made here first if it has none (its private half stays here)."""
    if remote.dry_run and not remote.check(f'test -s "$HOME"/.ssh/{KEY_NAME}'):
        return NodeKey(f"ssh-ed25519 GENERATEDON{remote.node.name.replace('-', '').replace('.', '').upper()}", True)
    result = remote.script(KEY_SCRIPT, KEY_NAME, KEY_COMMENT + remote.node.name, warn=True, timeout=60)
    try:
        return parse_key(result.stdout)
    except ValueError as exc:
        raise HostError(f"{exc}: {last_line(result.stderr) or 'ssh-keygen failed'}") from None


# --------------------------------------------------------------------------- the plan (pure)


@dataclass(frozen=True)
class Peer:
    """One node as the others see it."""

    node: str  # its inventory name
    address: str  # private
    #: The name other nodes use for it (None when the inventory name is an address or not a hostname).
    alias: Optional[str]
    port: int
    user: str
    slots: int
    host_keys: Tuple[str, ...] = ()
    #: The public half of its mesh key (None: not known now; its old line is kept).
    public_key: Optional[str] = None

    @property
    def name(self) -> str:
        return self.alias or self.address

    @property
    def patterns(self) -> str:
        return f"{self.alias} {self.address}" if self.alias else self.address

    def known_hosts_names(self) -> str:
        names = [self.alias, self.address] if self.alias else [self.address]
        return ",".join(n if self.port == 22 else f"[{n}]:{self.port}" for n in names if n)


def alias_of(name: str) -> Optional[str]:
    """A node's inventory name, where it can be a host name (not `1.2.3.4`, not `a_b`)."""
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        return name if HOSTNAME_RE.match(name) and not name.replace(".", "").isdigit() else None


def check_slots(value: Any, node: str) -> int:
    try:
        slots = int(str(value))
    except ValueError:
        slots = 0
    if not 1 <= slots <= MAX_SLOTS:
        raise InputError(f"invalid slots {value!r} for {node}: give 1..{MAX_SLOTS}", path="slots")
    return slots


def peers_of(inv: Inventory, facts: Mapping[str, NodeFacts], slots: Mapping[str, int],
             keys: Optional[Mapping[str, str]] = None) -> List[Peer]:
    """Every inventory node as a Peer; a node without facts (unreachable now) has no host keys here.

    `keys`: the mesh keys made this run, by node (the others come from their facts, if any)."""
    peers = []
    for n in inv.nodes:
        found = facts.get(n.name)
        user = (found.user if found else None) or n.user or "root"
        count = slots.get(n.name) or (found.gpus if found and found.gpus else 1)
        public = (keys or {}).get(n.name) or (found.mesh_key if found else None)
        peers.append(Peer(n.name, n.private or n.public, alias_of(n.name), n.port or 22, user, count,
                          found.host_keys if found else (), public))
    return peers


def block_lines(text: str) -> List[str]:
    return [line for line in split_managed_block(text, BEGIN, END)[0] if line and not line.startswith("#")]


def known_hosts_lines(peers: Sequence[Peer], current: str) -> List[str]:
    """Each peer's keys under its name and address; a peer whose keys were not read keeps its old lines."""
    old = block_lines(current)
    lines: List[str] = []
    for p in peers:
        if p.host_keys:
            lines += [f"{p.known_hosts_names()} {key}" for key in p.host_keys]
        else:
            lines += [line for line in old if line.split(" ", 1)[0] == p.known_hosts_names()]
    return lines


def authorized_lines(peers: Sequence[Peer], current: str) -> List[str]:
    """Each peer's own key, from its own address only; a peer whose key is not known now keeps its old line."""
    old = {line.rsplit(" ", 1)[-1]: line for line in block_lines(current) if KEY_COMMENT in line}
    lines = []
    for p in peers:
        comment = KEY_COMMENT + p.node
        if p.public_key:
            try:
                address = strict_ip(p.address)
            except ValueError:
                raise HostError(f"{p.node} has no private address: its mesh key is accepted only from one") from None
            lines.append(f'from="{address}",no-agent-forwarding,no-X11-forwarding {p.public_key} {comment}')
        elif comment in old:
            lines.append(old[comment])
    return lines


def ssh_dir(home: str) -> str:
    return home.rstrip("/") + "/.ssh"


@dataclass(frozen=True)
class UserFiles:
    """Paths in the SSH user's ~/.ssh on one node."""

    home: str

    @property
    def key(self) -> str:
        return f"{ssh_dir(self.home)}/{KEY_NAME}"

    @property
    def old_key(self) -> str:
        return f"{ssh_dir(self.home)}/{OLD_KEY_NAME}"

    @property
    def blocks(self) -> Tuple[str, str, str]:
        d = ssh_dir(self.home)
        return f"{d}/{AUTHORIZED_KEYS}", f"{d}/{KNOWN_HOSTS}", f"{d}/{SSH_CONFIG}"


#: Mode of a file gpufab creates for its block (an existing file keeps its own).
NEW_MODES = {AUTHORIZED_KEYS: 0o600, KNOWN_HOSTS: 0o644, SSH_CONFIG: 0o600, "hosts": 0o644}


def _with_block(state: Optional[FileState], path: str, block: str, owner: str, group: str, mode: int,
                first: bool = False) -> ManagedFile:
    old = state.content if state is not None and state.exists and state.content is not None else ""
    keep = state is not None and state.exists and state.mode is not None
    return ManagedFile(path, replace_block(old, block, path, BEGIN, END, first=first),
                       mode=state.mode if keep else mode, owner=owner, group=group)


def mesh_files(peers: Sequence[Peer], me: NodeFacts, found: Mapping[str, FileState]) -> List[ManagedFile]:
    """Every file of the mesh on one node, given what its files hold now (its own key is made by own_key)."""
    u = UserFiles(me.home)
    auth, known, config = u.blocks
    owner, group = me.user, me.group
    current_known = found.get(known)
    current_auth = found.get(auth)
    return [
        ManagedFile(HOSTFILE, render("mesh/hostfile.j2", peers=peers)),
        ManagedFile(HOSTS_LIST, render("mesh/hosts.j2", peers=peers)),
        _with_block(found.get(ETC_HOSTS), ETC_HOSTS, render("mesh/hosts-block.j2", peers=peers), "root", "root",
                    NEW_MODES["hosts"]),
        _with_block(current_auth, auth, render("mesh/authorized-keys-block.j2", lines=authorized_lines(
            peers, current_auth.content or "" if current_auth else "")), owner, group, NEW_MODES[AUTHORIZED_KEYS]),
        _with_block(current_known, known, render("mesh/known-hosts-block.j2", lines=known_hosts_lines(
            peers, current_known.content or "" if current_known else "")), owner, group, NEW_MODES[KNOWN_HOSTS]),
        _with_block(found.get(config), config, render("mesh/ssh-config-block.j2", peers=peers, key_name=KEY_NAME),
                    owner, group, NEW_MODES[SSH_CONFIG], first=True),
    ]


def unmesh_files(found: Mapping[str, FileState], created: Mapping[str, bool], owner: str, group: str,
                 paths: Sequence[str]) -> Tuple[List[ManagedFile], List[str]]:
    """(files written back without gpufab's block, files removed): a file gpufab created for its block goes."""
    keep: List[ManagedFile] = []
    remove: List[str] = []
    for path in paths:
        state = found.get(path)
        if state is None or not state.exists or state.content is None or BEGIN not in state.content:
            continue
        left = replace_block(state.content, "", path, BEGIN, END)
        if not left and created.get(path):
            remove.append(path)
        else:
            own = ("root", "root") if path == ETC_HOSTS else (owner, group)
            keep.append(ManagedFile(path, left, mode=state.mode or 0o644, owner=state.owner or own[0],
                                    group=state.group or own[1]))
    return keep, remove


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class MeshSettings:
    #: Inventory var `mesh: false` leaves the step out of bootstrap.
    enabled: bool = True
    #: node -> slots given in the inventory (node var `slots`); else a slot per GPU, at least one.
    slots: Mapping[str, int] = field(default_factory=dict)


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> MeshSettings:
    """Inventory var `mesh` (default on), node vars `slots`."""
    slots = {n.name: check_slots(n.vars["slots"], n.name) for n in inv.nodes if n.vars.get("slots") is not None}
    return MeshSettings(nodeenv.mesh_on(config, inv), slots)


# --------------------------------------------------------------------------- on the nodes


def apply_node(remote: Remote, peers: Sequence[Peer], key: NodeKey, me: NodeFacts) -> Outcome:
    """One node's mesh files, in one read and one write: only the ones that differ."""
    u = UserFiles(me.home)
    probe = [ManagedFile(p, "") for p in (HOSTFILE, HOSTS_LIST, ETC_HOSTS, *u.blocks)]
    found = remote.read_state(probe)
    files = mesh_files(peers, me, found)
    done = [f"generated this node's mesh key ~/.ssh/{KEY_NAME}"] if key.generated else []
    done += remote.write_files(plan_files(files, found))
    if me.old_key:
        old = shlex.quote(u.old_key)
        remote.change(f"rm -f -- {old} {old}.pub", sudo=False)
        done.append(f"removed the old shared cluster key ~/.ssh/{OLD_KEY_NAME}")
    notes = [f"{len(peers)} nodes in {HOSTFILE} ({sum(p.slots for p in peers)} slots)"]
    missing = [p.node for p in peers if not p.host_keys]
    if missing:
        notes.append(f"host keys of {', '.join(missing)} not read now (unreachable?): their old lines kept")
    return Outcome(done, notes, me)


def setup(session: Session, inv: Inventory, nodes: Sequence[Node], s: MeshSettings,
          facts: Optional[Mapping[str, NodeFacts]] = None, workers: Optional[int] = None,
          **step_kw: Any) -> List[HostResult]:
    """Every node's own key first, then every node's files at once.

    Facts come from preflight's round where bootstrap read them; the other
    inventory nodes (not in this run) are asked now, and one that does not
    answer keeps its entries as the nodes have them.
    """
    remotes = step_kw.get("remotes")
    known: Dict[str, NodeFacts] = dict(facts or {})
    missing = [n for n in inv.nodes if n.name not in known]
    asked = run_step(session, missing, lambda r: Outcome(value=read_facts(r)), workers=workers, remotes=remotes)
    known.update({r.node.name: r.value for r in asked if not r.failed})
    failed = {r.node.name: r for r in asked if r.failed}
    keyed = run_step(session, [n for n in nodes if n.name in known], lambda r: Outcome(value=own_key(r)),
                     workers=workers, remotes=remotes)
    keys = {r.node.name: r.value for r in keyed if not r.failed}
    failed.update({r.node.name: r for r in keyed if r.failed})
    peers = peers_of(inv, known, s.slots, {name: k.public for name, k in keys.items()})
    ready = [n for n in nodes if n.name in keys]
    results = run_step(session, ready, lambda r: apply_node(r, peers, keys[r.node.name], known[r.node.name]),
                       workers=workers, **step_kw)
    return [*results, *(failed[n.name] for n in nodes if n.name in failed)]


def refresh(session: Session, inv: Inventory, s: MeshSettings, workers: Optional[int] = None) -> List[HostResult]:
    """The mesh again on the nodes that have one, for a changed inventory (a node removed)."""
    if not s.enabled:
        return []
    probed = run_step(session, inv.nodes, lambda r: Outcome(value=r.check(f"test -e {HOSTS_LIST}")), workers=workers)
    meshed = [r.node for r in probed if r.value]
    return [*(r for r in probed if r.failed), *(setup(session, inv, meshed, s, workers=workers) if meshed else [])]


def run_on(run: RunContext, nodes: Sequence[Node], s: MeshSettings) -> List[HostResult]:
    facts = {n.name: run.gathered(NAME, n) for n in run.inv.nodes if run.gathered(NAME, n) is not None}
    results = setup(run.session, run.inv, nodes, s, facts, **run.step_kw(NAME))
    order = {n.name: i for i, n in enumerate(nodes)}
    return sorted(results, key=lambda r: order.get(r.node.name, 0))


# --------------------------------------------------------------------------- verify


def parse_pairs(text: str) -> Dict[str, Tuple[int, str]]:
    """`NAME EXIT last-line` lines -> name -> (exit code, why)."""
    found: Dict[str, Tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            found[parts[0]] = (int(parts[1]), parts[2].strip() if len(parts) > 2 else "")
    return found


def pair_problems(targets: Sequence[Peer], found: Mapping[str, Tuple[int, str]]) -> List[str]:
    problems = []
    for p in targets:
        code, why = found.get(p.name, (-1, "no answer"))
        if code == 124 or code == 137:
            why = f"no answer in {PAIR_TIMEOUT}s"
        if code != 0:
            problems.append(f"ssh {p.name}: {why or f'exit {code}'}")
    return problems


@dataclass(frozen=True)
class Reach:
    """From one node: the peers it reached over SSH, of how many."""

    reached: int
    tried: int
    problems: Tuple[str, ...] = ()


def reach_peers(remote: Remote, peers: Sequence[Peer]) -> Outcome:
    """`ssh NAME true` in BatchMode, as the SSH user, to every other node at once."""
    targets = [p for p in peers if p.node != remote.node.name]
    if not targets:
        return Outcome([], ["no other node to reach"], Reach(0, 0))
    result = remote.script(PAIRS_SCRIPT, str(PAIR_TIMEOUT), *(p.name for p in targets), warn=True,
                           timeout=PAIR_TIMEOUT + 30)
    problems = pair_problems(targets, parse_pairs(result.stdout))
    reach = Reach(len(targets) - len(problems), len(targets), tuple(problems))
    if problems:
        raise HostError("; ".join(problems), value=reach)
    return Outcome([], [f"reached {reach.reached}/{reach.tried} nodes by name over SSH"], reach)


def verify(session: Session, inv: Inventory, nodes: Sequence[Node], s: MeshSettings,
           workers: Optional[int] = None, among: Optional[Sequence[Node]] = None, **step_kw: Any) -> List[HostResult]:
    """From every node to every other node (`among` them only: bootstrap leaves out the nodes that failed)."""
    peers = peers_of(inv, {}, s.slots)
    names = {n.name for n in (among if among is not None else inv.nodes)}
    targets = [p for p in peers if p.node in names]

    def one(remote: Remote) -> Outcome:
        listed = (remote.read_text(HOSTS_LIST) or "").split()
        if listed != [p.name for p in peers]:
            raise HostError(f"{HOSTS_LIST} does not list this inventory's nodes (run mesh.setup)",
                            value=Reach(0, len(targets) - 1))
        return reach_peers(remote, targets)

    return run_step(session, nodes, one, workers=workers, **step_kw)


def check_cluster(run: RunContext, nodes: Sequence[Node], s: MeshSettings) -> List[HostResult]:
    return verify(run.session, run.inv, nodes, s, workers=run.workers, among=nodes, remotes=run.remotes)


# --------------------------------------------------------------------------- remove


def remove_node(remote: Remote, also_root: bool = False) -> Outcome:
    """gpufab's blocks out of /etc/hosts and ~/.ssh's files, its key and hostfiles gone.

    `also_root` (reset): root's ~/.ssh too, where a run as root before this
    login (the inventory's user changed) meshed it; only root writes there.
    """
    logins = [read_facts(remote)]
    if also_root and not remote.is_root:
        logins.append(NodeFacts("root", "root", "/root"))
    shared = [ETC_HOSTS, *(p for me in logins for p in UserFiles(me.home).blocks)]
    found = remote.read_paths([*shared, *(BEFORE_DIR + p + ABSENT_SUFFIX for p in shared)])
    created = {p: found[BEFORE_DIR + p + ABSENT_SUFFIX].exists for p in shared}
    done: List[str] = []
    with keeping_changes(done):
        for me in logins:
            paths = [p for p in shared if p == ETC_HOSTS or p.startswith(ssh_dir(me.home) + "/")]
            keep, gone = unmesh_files(found, created, me.user, me.group, paths if me is logins[0] else paths[1:])
            done += [line.replace("updated", "took gpufab's block out of") for line in
                     remote.write_files(plan_files(keep, found))]
            mine = remote.user == me.user
            for path in gone:
                remote.change(f"rm -f -- {shlex.quote(path)}", sudo=path == ETC_HOSTS or not mine)
                done.append(f"removed {path} (gpufab had created it)")
            for path in (UserFiles(me.home).key, UserFiles(me.home).old_key):
                key = shlex.quote(path)
                if remote.check(f"test -e {key} -o -e {key}.pub", sudo=not mine):
                    remote.change(f"rm -f -- {key} {key}.pub", sudo=not mine)
                    done.append(f"removed {path}")
        for path in (HOSTFILE, HOSTS_LIST):
            if remote.check(f"test -e {path}"):
                remote.change(f"rm -f -- {path}")
                done.append(f"removed {path}")
        # Its directory too, when nothing else of gpufab's is left in it.
        remote.change(f"rmdir {os.path.dirname(HOSTFILE)} 2>/dev/null; true")
    return Outcome(done, [])


# --------------------------------------------------------------------------- the report


def _reach(run: RunContext, node: Node) -> Optional[Reach]:
    found = run.cluster_checked(NAME, node)
    return found.value if found is not None and isinstance(found.value, Reach) else None


def _cell(run: RunContext, node: Node) -> str:
    reach = _reach(run, node)
    if reach is not None:
        return f"{reach.reached}/{reach.tried} peers" if not reach.problems else f"{reach.reached}/{reach.tried} peers!"
    result = run.result(NAME, node)
    return "-" if result is None else ("failed" if result.failed else result.status)


def _reaches(run: RunContext) -> List[Reach]:
    return [r for r in (_reach(run, n) for n in run.verified()) if r is not None]


def _report(run: RunContext, s: MeshSettings) -> Tuple[List[str], List[str]]:
    found = _reaches(run)
    checked = [run.cluster_checked(NAME, n) for n in run.inv.nodes]
    problems = [f"SSH mesh: {r.node.name}: {r.reason}" for r in checked if r is not None and r.failed]
    if not found and not problems:
        return [], []
    pairs = sum(r.tried for r in found)
    ok = sum(r.reached for r in found)
    lines = [f"SSH mesh: {ok}/{pairs} node pairs reach each other by name (ssh, BatchMode); "
             f"hostfile {HOSTFILE} ({len(run.inv.nodes)} nodes)"]
    return lines, problems


def _access(run: RunContext, s: MeshSettings) -> List[str]:
    return [f"mpirun --hostfile {HOSTFILE} ... (on any node, as the SSH user)"]


def _data(run: RunContext, s: MeshSettings) -> Dict[str, int]:
    found = _reaches(run)
    return {"pairs": sum(r.tried for r in found), "reached": sum(r.reached for r in found)}


NAME = "mesh"
STEP = Step(NAME, settings=read, run=run_on, needs_head=True, wanted=lambda s: s.enabled, gather=read_facts,
            needs=("preflight",),
            check_cluster=check_cluster, columns=(Column("mesh", "SSH mesh", _cell),), report=_report,
            access=_access, data=_data)


DECLARED = declare(
    "ops.mesh",
    Setting("mesh", "SSH between the nodes (a hostfile, each node's key); false leaves the mesh step out", "true",
            kind=SWITCH, check=switch),
    Setting("slots", "this node's slots in the MPI/DeepSpeed hostfile", "its GPUs, else 1", (NODE,),
            kind=whole(1, MAX_SLOTS), check=lambda v: check_slots(v, "a node")),
)


OWNED = owns("ops.mesh", undone_by_step=(HOSTFILE, HOSTS_LIST, ETC_HOSTS))
# Before gpufab's backups go (reset's whole files, at 80): they say which of the user's files gpufab created.
UNDONE = undoes("ops.mesh", Undo(2, 70, lambda remote, s: Outcome(remove_node(remote, also_root=True).changes)))
