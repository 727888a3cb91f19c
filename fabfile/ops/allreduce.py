"""`allreduce`: prove the cluster trains, with a real collective across its nodes.

A cluster whose files are right can still hang at the first all-reduce:
Gloo/NCCL on docker0 or a veth, a NIC name that differs per node, a
firewall dropping the data ports. So gpufab runs one: its own small script
(templates/allreduce/allreduce.py, shipped to the SSH user's cache, nothing
pip-installed) through the launch path of `inv launch` (netenv loaded,
MASTER_ADDR/MASTER_PORT, ranks), with the node's training python. Every
process reports the interface its own environment gave it, which must be
the node's netenv NIC; beside busbw it measures the raw TCP link, so a
reader sees what fraction of the network the collective gets. `--pairs`
runs node pairs in turn to name a slow or broken link.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.chain import Step
from ..core.cluster import setting
from ..core.errors import HostError, InputError, number_option
from ..core.fanout import FAILED, OK, HostResult
from ..core.facts import human_bytes
from ..core.files import shipped
from ..core.inventory import Inventory, Node
from ..core.remote import Remote
from ..core.steps import Outcome, run_step
from .shared import infiniband, launch, nccl
from .shared.nodeenv import ENV_FILE, env_lines
from .shared.ports import DEFAULT_MASTER_PORT, check_port
from .shared.python import (DEFAULT_VENV, FIND_PYTHON_SCRIPT, PROBE, TrainPython, candidates, check_python,
                            parse_pythons)
from ..core.declared import CLUSTER, NODE, PORT, POSITIVE, Setting, choice, declare, listing, owns, text, whole
from ..core.context import RunContext

BACKENDS = ("auto", "nccl", "gloo")
DEFAULT_SIZES = "1M,16M,64M"
DEFAULT_ITERS = 10
WARMUP = 2
DEFAULT_TIMEOUT = 60.0
#: Beside the training jobs' MASTER_PORT, so a check never collides with one.
PORT_OFFSET = 17
#: `--pairs` tries every pair up to this many nodes, a ring of pairs above.
ALL_PAIRS_UP_TO = 8
MARK = "GPUFAB-ALLREDUCE "
MAX_BYTES = 4 << 30

SCRIPT = shipped("allreduce/allreduce.py")
#: Content-addressed: a new gpufab writes a new file, an old one is never half-replaced.
SCRIPT_PATH = f".cache/gpufab/allreduce-{hashlib.sha256(SCRIPT.encode()).hexdigest()[:12]}.py"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AllreduceSettings:
    backend: str = "auto"
    sizes: Tuple[int, ...] = (1 << 20, 16 << 20, 64 << 20)
    iters: int = DEFAULT_ITERS
    #: `--python`: the interpreter on every node, over any node's own train_python.
    python: Optional[str] = None
    #: The inventory's (or config's) train_python, for nodes that name none themselves.
    default_python: Optional[str] = None
    pairs: bool = False
    timeout: float = DEFAULT_TIMEOUT
    port: int = DEFAULT_MASTER_PORT + PORT_OFFSET
    venv: str = DEFAULT_VENV
    #: Inventory var `allreduce_expected_gbps`: the busbw this cluster must reach (over the public table).
    expected_gbps: Optional[float] = None


_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]?)(?:i?B)?$", re.I)
#: One size as the settings' schema admits it: 4 bytes to 4G, as parse_sizes takes them.
SIZE = r"(?:[4-9]|[1-9][0-9]{1,8}|[1-9][0-9]{0,3}[Kk]|[1-9][0-9]{0,2}[Mm]|[1-4][Gg])(?:[iI]?[bB])?"


def parse_sizes(text: Any) -> Tuple[int, ...]:
    """`1M,16M,64M` (binary units; plain numbers are bytes) -> bytes, each a whole float32 count."""
    items = text.split(",") if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    if not items:
        raise InputError(f"invalid sizes {text!r}: give sizes like 1M,16M,64M", path="--sizes")
    sizes = []
    for item in items:
        match = _SIZE_RE.match(str(item).strip())
        if not match:
            raise InputError(f"invalid size {str(item).strip()!r}: a number with K, M or G (e.g. 64M)", path="--sizes")
        n = int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]
        if not 4 <= n <= MAX_BYTES:
            raise InputError(f"size {str(item).strip()!r} out of range (4 bytes to 4G)", path="--sizes")
        sizes.append(n - n % 4)
    return tuple(sizes)


def check_backend(value: Any) -> str:
    if value not in BACKENDS:
        raise InputError(f"unknown backend {value!r} (one of {', '.join(BACKENDS)})", path="--backend")
    return str(value)


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> AllreduceSettings:
    """CLI > inventory vars (`allreduce_backend`, `allreduce_sizes`, `train_python` ...) > config > defaults.

    The CLI's values come under the variables' own names: `bootstrap --timeout` is Ray's, not this.
    """

    def get(key: str, default: Any = None) -> Any:
        return setting(config, inv, key, cli.get(key), default)

    master = check_port(setting(config, inv, "master_port", None, DEFAULT_MASTER_PORT))
    port = get("allreduce_port", master + PORT_OFFSET if master + PORT_OFFSET < 65536 else master - PORT_OFFSET)
    return AllreduceSettings(
        backend=check_backend(get("allreduce_backend", "auto")),
        sizes=parse_sizes(get("allreduce_sizes", DEFAULT_SIZES)),
        iters=number_option(get("allreduce_iters", DEFAULT_ITERS), "--iters"),
        python=check_python(cli.get("train_python"), "--python"),
        default_python=check_python(setting(config, inv, "train_python"), "train_python"),
        pairs=bool(cli.get("allreduce_pairs")),
        timeout=number_option(get("allreduce_timeout", DEFAULT_TIMEOUT), "--timeout", float),
        port=check_port(port, "all-reduce port", "allreduce_port"),
        venv=str(setting(config, inv, "ray_venv", None, DEFAULT_VENV)),
        expected_gbps=number_option(get("allreduce_expected_gbps"), "allreduce_expected_gbps", float),
    )


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class NodeReady:
    """What a node brings to the all-reduce (python None: no torch found, nothing asked for)."""

    python: Optional[TrainPython]
    nic: Optional[str]
    #: The node's InfiniBand/RoCE ports (read on GPU nodes only: what NCCL could use between nodes).
    ib: Optional[infiniband.IbFacts] = None
    #: The rails netenv named (NCCL_IB_HCA), the fabric NCCL should take.
    hcas: Tuple[str, ...] = ()


def no_torch(tried: Sequence[str], named: Sequence[str]) -> str:
    where = ", ".join(tried) if tried else f"{', '.join(named)} (not found)"
    return f"torch not found in {where} (set train_python)"


def prepare(remote: Remote, s: AllreduceSettings, required: bool = True) -> Outcome:
    """Find the node's training python and netenv NIC, ship the script.

    `required` False (bootstrap): a node without torch, where the user named no python, is
    no failure; the all-reduce is then left out.
    """
    pythons, named = candidates(remote.node, s)
    python, tried = parse_pythons(remote.script(FIND_PYTHON_SCRIPT, PROBE, *pythons, timeout=150).stdout)
    if python is None and (required or named):
        raise HostError(no_torch(tried, pythons))
    env = env_lines(remote.read_text(ENV_FILE) or "")
    nic = env.get("NCCL_SOCKET_IFNAME")
    hcas = tuple(nccl.rails_of(env.get("NCCL_IB_HCA", ""))) if env.get("NCCL_IB_DISABLE") == "0" else ()
    if python is None:
        return Outcome([], [no_torch(tried, pythons) + ": all-reduce left out"], NodeReady(None, nic))
    if nic is None and required:
        raise HostError(f"no netenv on this node ({ENV_FILE} missing): run inv netenv.setup first")
    done = []
    if not remote.check(f'[ -f "$HOME"/{shlex.quote(SCRIPT_PATH)} ]'):
        directory, name = SCRIPT_PATH.rsplit("/", 1)
        remote.write_home_files(directory, {name: (SCRIPT, 0o600)})
        done.append(f"shipped the all-reduce script to ~/{SCRIPT_PATH}")
    note = f"torch {python.torch} in {python.path}" + (f", {python.gpus} GPUs" if python.gpus else "")
    ib = remote.fact(infiniband.PORTS) if python.gpus else None
    return Outcome(done, [note], NodeReady(python, nic, ib, hcas))


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    backend: str
    #: Processes per node, by name (its GPUs with NCCL, 1 with Gloo).
    procs: Dict[str, int]


def choose_backend(wanted: str, ready: Mapping[str, NodeReady]) -> Plan:
    """NCCL, one process per GPU, where every node has GPUs and NCCL; else Gloo, one per node."""
    pythons = {name: r.python for name, r in ready.items() if r.python is not None}
    gpu_nodes = all(p.gpus > 0 and p.nccl for p in pythons.values()) and bool(pythons)
    if wanted == "nccl" and not gpu_nodes:
        lacking = sorted(name for name, p in pythons.items() if not (p.gpus > 0 and p.nccl))
        raise InputError(f"--backend nccl needs GPUs and NCCL on every node; not on {', '.join(lacking)}",
                         path="--backend")
    if wanted == "gloo" or not gpu_nodes:
        lacking = sorted(name for name, p in pythons.items() if not p.gloo)
        if lacking:
            raise InputError(f"this torch has no Gloo on {', '.join(lacking)}", path="--backend")
        return Plan("gloo", {name: 1 for name in pythons})
    return Plan("nccl", {name: p.gpus for name, p in pythons.items()})


def pairs_of(nodes: Sequence[Node]) -> List[Tuple[Node, Node]]:
    """Every pair up to ALL_PAIRS_UP_TO nodes; above, a ring (each node with the next) to stay linear."""
    if len(nodes) <= ALL_PAIRS_UP_TO:
        return list(itertools.combinations(nodes, 2))
    return [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))]


def job_commands(group: Sequence[Node], plan: Plan, ready: Mapping[str, NodeReady], s: AllreduceSettings,
                 link: bool = True) -> Dict[str, str]:
    """Per node of one group: the launch line (netenv, ranks) around the shipped script."""
    nodes = launch.rank_order(group)
    counts = [plan.procs[n.name] for n in nodes]
    bases = [sum(counts[:i]) for i in range(len(nodes))]
    out = {}
    for placement, base in zip(launch.placements(nodes, s.port, {n.name: plan.procs[n.name] for n in nodes}), bases):
        node = placement.node
        values = dict(placement.values, NPROC_PER_NODE=str(plan.procs[node.name]))
        python = ready[node.name].python
        assert python is not None
        # The processes end by themselves at --timeout; `timeout` (which signals the
        # whole process group) makes sure of it.
        job = " ".join([
            "timeout", "-k", "3", str(int(s.timeout) + 2), shlex.quote(python.path),
            f'"$HOME"/{shlex.quote(SCRIPT_PATH)}',
            "--backend", plan.backend, "--nproc", str(plan.procs[node.name]), "--rank-base", str(base),
            "--world", str(sum(counts)), "--node-bases", ",".join(map(str, bases)),
            "--sizes", ",".join(map(str, s.sizes)), "--iters", str(s.iters), "--warmup", str(WARMUP),
            "--timeout", str(max(5, int(s.timeout) - 3)),
        ] + (["--link"] if link else []))
        out[node.name] = launch.node_command(job, values)
    return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SizeRow:
    bytes: int
    seconds: float
    right: bool
    ranks: int

    @property
    def algbw(self) -> float:
        """Bytes per second, as nccl-tests counts it: the buffer size over the time."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def busbw(self) -> float:
        """algbw x 2(n-1)/n: what each link carries in a ring all-reduce (nccl-tests)."""
        return self.algbw * 2 * (self.ranks - 1) / self.ranks if self.ranks > 1 else self.algbw


@dataclass(frozen=True)
class RankRow:
    rank: int
    node: str
    interface: Optional[str]
    expected: Optional[str]
    device: str

    @property
    def right_nic(self) -> bool:
        return self.interface is not None and self.interface == self.expected


@dataclass(frozen=True)
class Link:
    sender: str
    receiver: str
    bytes_per_second: float
    tool: str


@dataclass
class GroupResult:
    """One all-reduce over a group of nodes (the whole cluster, or one pair)."""

    nodes: Tuple[str, ...]
    backend: str
    sizes: List[SizeRow] = field(default_factory=list)
    ranks: List[RankRow] = field(default_factory=list)
    links: List[Link] = field(default_factory=list)
    #: Per node that failed: why.
    failures: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: NCCL_DEBUG=INFO lines of each node's first rank (NCCL only).
    nccl_log: List[str] = field(default_factory=list)

    def transport(self) -> Optional[nccl.Transport]:
        return nccl.parse_debug_log("\n".join(self.nccl_log)) if self.nccl_log else None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        return "; ".join(f"{n}: {why}" for n, why in self.failures.items())

    def busbw_at_largest(self) -> Optional[SizeRow]:
        return max(self.sizes, key=lambda r: r.bytes) if self.sizes else None

    def slowest_link(self) -> Optional[Link]:
        return min(self.links, key=lambda link: link.bytes_per_second) if self.links else None

    def to_json(self) -> Dict[str, Any]:
        return {
            "nodes": list(self.nodes), "backend": self.backend, "ok": self.ok, "failures": dict(self.failures),
            "sizes": [{"bytes": r.bytes, "seconds": r.seconds, "algbw_bytes_per_s": r.algbw,
                       "busbw_bytes_per_s": r.busbw, "sum_right": r.right, "ranks": r.ranks} for r in self.sizes],
            "ranks": [{"rank": r.rank, "node": r.node, "interface": r.interface, "netenv_nic": r.expected,
                       "device": r.device} for r in self.ranks],
            "links": [{"from": link.sender, "to": link.receiver, "bytes_per_s": link.bytes_per_second,
                       "tool": link.tool} for link in self.links],
        }


def events(text: str) -> List[Dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith(MARK):
            try:
                found = json.loads(line[len(MARK):])
            except ValueError:
                continue
            if isinstance(found, dict):
                out.append(found)
    return out


def read_group(group: Sequence[Node], plan: Plan, ready: Mapping[str, NodeReady],
               outputs: Mapping[str, Tuple[int, str, str]], s: AllreduceSettings) -> GroupResult:
    """Each node's (exit code, stdout, failure) -> the group's result, every failure named."""
    nodes = launch.rank_order(group)
    world = sum(plan.procs[n.name] for n in nodes)
    result = GroupResult(tuple(n.name for n in nodes), plan.backend)
    for node in nodes:
        code, stdout, failure = outputs.get(node.name, (1, "", "no result"))
        found = events(stdout)
        for e in found:
            kind = e.get("event")
            if kind == "rank":
                result.ranks.append(RankRow(int(e["rank"]), node.name, e.get("interface"), ready[node.name].nic,
                                            str(e.get("device", ""))))
            elif kind == "size":
                result.sizes.append(SizeRow(int(e["bytes"]), float(e["seconds"]), bool(e["right"]), world))
            elif kind == "nccl":
                result.nccl_log += [str(x) for x in e.get("lines") or []]
            elif kind == "link" and 0 < int(e["node_rank"]) < len(nodes):
                sender = nodes[int(e["node_rank"])].name
                result.links.append(Link(sender, nodes[0].name, float(e["bytes_per_second"]), str(e["tool"])))
        errors = [str(e.get("message")) for e in found if e.get("event") in ("error", "link_error")]
        wrong = [e for e in found if e.get("event") == "wrong"]
        if failure:
            result.failures[node.name] = failure
        elif code in (124, 137):
            result.failures[node.name] = f"timed out after {s.timeout:g} s" + (f" ({errors[0]})" if errors else "")
        elif code != 0 or errors:
            result.failures[node.name] = errors[0] if errors else f"exit code {code}"
        elif wrong:
            result.failures[node.name] = (f"wrong sum at {human_bytes(int(wrong[0]['bytes']), whole=True)}: "
                                          f"{wrong[0]['got']:g}, expected {wrong[0]['expected']:g}")
    for row in result.ranks:
        if not row.right_nic and row.node not in result.failures:
            result.failures[row.node] = (f"rank {row.rank} used interface {row.interface or '(unset)'}, "
                                         f"not the netenv NIC {row.expected or '(none)'}")
    if not result.failures:
        if any(not r.right for r in result.sizes):
            result.failures[nodes[0].name] = "a rank got a wrong sum"
        elif len(result.sizes) != len(s.sizes) or len(result.ranks) != world:
            result.failures[nodes[0].name] = (f"{len(result.sizes)} of {len(s.sizes)} sizes and "
                                              f"{len(result.ranks)} of {world} ranks reported")
    return result


def rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e9:.2f} GB/s"


# --------------------------------------------------------------------------- on the nodes

def cleanup_command() -> str:
    """Run after a group as the SSH user: the job's processes, if any are left, are ended."""
    # `[.]` matches the dot but not this command line itself (its shell would match the plain path).
    return f"pkill -KILL -f -- {shlex.quote(SCRIPT_PATH.replace('.', '[.]'))} >/dev/null 2>&1; true"


def run_group(session: Any, remotes: Optional[Mapping[str, Remote]], group: Sequence[Node], plan: Plan,
              ready: Mapping[str, NodeReady], s: AllreduceSettings, link: bool = True) -> GroupResult:
    """Start the job on every node of the group at once and read what each process said."""
    commands = job_commands(group, plan, ready, s, link)

    def one(remote: Remote) -> Outcome:
        result = remote.run(commands[remote.node.name], warn=True, timeout=s.timeout + 20)
        return Outcome(value=(result.exited, result.stdout, ""))

    # Every rank must be up at once for the rendezvous: no worker bound here.
    mine = dict(remotes) if remotes else None
    found = run_step(session, group, one, workers=len(group), remotes=mine)
    # Whatever a failed rank left behind is ended (as the SSH user: only its own processes).
    run_step(session, group, lambda remote: Outcome(value=remote.run(cleanup_command(), warn=True, timeout=15)),
             workers=len(group), remotes=mine)
    outputs = {r.node.name: (r.value if not r.failed else (1, "", r.reason)) for r in found}
    result = read_group(group, plan, ready, outputs, s)
    result.seconds = max((r.seconds for r in found), default=0.0)
    return result


def prepare_all(session: Any, remotes: Optional[Mapping[str, Remote]], nodes: Sequence[Node], s: AllreduceSettings,
                workers: Optional[int] = None, required: bool = True) -> List[HostResult]:
    """`prepare` on every node: one HostResult each (value NodeReady)."""
    return run_step(session, nodes, lambda remote: prepare(remote, s, required), workers=workers,
                    remotes=dict(remotes) if remotes is not None else None)


def groups_of(nodes: Sequence[Node], pairs: bool) -> List[Tuple[Node, ...]]:
    return [tuple(p) for p in pairs_of(launch.rank_order(nodes))] if pairs else [tuple(launch.rank_order(nodes))]


# --------------------------------------------------------------------------- what the user reads


def size_table(result: GroupResult) -> List[Tuple[str, str, str, str, str]]:
    return [(human_bytes(r.bytes, whole=True), f"{r.seconds * 1e3:.2f}", f"{r.algbw / 1e9:.3f}", f"{r.busbw / 1e9:.3f}",
             "right" if r.right else "WRONG") for r in sorted(result.sizes, key=lambda r: r.bytes)]


SIZE_HEADERS = ["Size", "Time (ms)", "algbw (GB/s)", "busbw (GB/s)", "Sum"]
RANK_HEADERS = ["Rank", "Node", "Interface used", "netenv NIC", "Device"]
PAIR_HEADERS = ["Pair", "Result", "busbw (GB/s)", "Link (GB/s)", "Time", "Reason"]


def rank_table(result: GroupResult) -> List[Tuple[Any, ...]]:
    return [(r.rank, r.node, r.interface or "(unset)", r.expected or "-", r.device)
            for r in sorted(result.ranks, key=lambda r: r.rank)]


def pair_table(results: Sequence[GroupResult]) -> List[Tuple[Any, ...]]:
    rows = []
    for r in results:
        top = r.busbw_at_largest()
        link = r.slowest_link()
        rows.append(("-".join(r.nodes), "ok" if r.ok else "FAILED", f"{top.busbw / 1e9:.3f}" if top and r.ok else "-",
                     f"{link.bytes_per_second / 1e9:.3f}" if link else "-", f"{r.seconds:.1f}s", r.reason or ""))
    return rows


def link_line(result: GroupResult) -> str:
    if not result.links:
        return "Link: not measured"
    tool = result.links[0].tool
    each = "; ".join(f"{link.sender}\u2192{link.receiver} {rate(link.bytes_per_second)}" for link in result.links)
    return f"Link (TCP over the private network, one stream, {tool}): {each}"


def summary(result: GroupResult, nics: str = "the netenv NICs") -> str:
    """`3 nodes, gloo over the netenv NICs, busbw 0.90 GB/s at 64 MiB (link 1.10 GB/s)`."""
    top = result.busbw_at_largest()
    text = f"{len(result.nodes)} nodes, {result.backend} over {nics}"
    if top is not None:
        text += f", busbw {rate(top.busbw)} at {human_bytes(top.bytes, whole=True)}"
    link = result.slowest_link()
    if link is not None:
        text += f" (link {rate(link.bytes_per_second)}"
        text += f", slowest {link.sender}\u2192{link.receiver})" if len(result.links) > 1 else ")"
    return text


def slowest_pair(results: Sequence[GroupResult]) -> Optional[GroupResult]:
    fine = [r for r in results if r.ok and r.busbw_at_largest() is not None]
    return min(fine, key=lambda r: r.busbw_at_largest().busbw) if len(fine) > 1 else None  # type: ignore[union-attr]


# --------------------------------------------------------------------------- in bootstrap


def _prepare_step(run: RunContext, nodes: Sequence[Node], s: AllreduceSettings) -> List[HostResult]:
    return run.each(NAME, nodes, lambda remote: prepare(remote, s, required=False))


def check_cluster(run: RunContext, nodes: Sequence[Node], s: AllreduceSettings) -> List[HostResult]:
    """The verify phase: one all-reduce across every verified node that has torch."""
    ready = {n.name: run.value(NAME, n) for n in nodes}
    # Nodes outside this run (--retry-failed verifies the whole cluster) are read now.
    unread = [n for n in nodes if ready[n.name] is None]
    for r in prepare_all(run.session, run.remotes, unread, s, run.workers, required=False):
        ready[r.node.name] = r.value
    missing = sorted(name for name, r in ready.items() if r is None or r.python is None)
    no_nic = sorted(name for name, r in ready.items() if r is not None and r.python is not None and r.nic is None)
    if missing or no_nic or not nodes:
        why = (f"torch not found on {', '.join(missing)} (set train_python)" if missing
               else f"no netenv on {', '.join(no_nic)}")
        run.keep(NOT_RUN, f"not run: {why}")
        return [HostResult(n, OK) for n in nodes]
    try:
        plan = choose_backend(s.backend, ready)
    except InputError as exc:
        run.keep(NOT_RUN, f"not run: {exc}")
        return [HostResult(n, OK) for n in nodes]
    result = run_group(run.session, run.remotes, nodes, plan, ready, s)
    run.keep(NAME, result)
    judged = judge(result, ready, s) if result.ok else None
    if judged is not None:
        run.keep(JUDGED, judged)
    out = [HostResult(n, OK) if n.name not in result.failures else
           HostResult(n, FAILED, 1, reason=f"all-reduce: {result.failures[n.name]}") for n in nodes]
    if judged is not None and (judged.problem or not judged.fast_enough):
        # The collective worked, but not as the hardware allows: the head carries the finding.
        at = next(i for i, r in enumerate(out) if r.node.is_head or i == len(out) - 1)
        out[at] = HostResult(out[at].node, FAILED, 1, reason=f"all-reduce: {judged.problem or judged.verdict}")
    return out


@dataclass(frozen=True)
class Judgement:
    """What the all-reduce says of the hardware: how NCCL moved the data, and busbw against its reference."""

    transport: Optional[str]
    verdict: str
    fast_enough: bool
    #: The verdict less its `busbw X at Y` (the report's line says that already).
    tail: str
    #: A socket fall-back where fabric ports are active, InfiniBand without GPUDirect RDMA: named.
    problem: Optional[str] = None
    reference: Optional[nccl.Reference] = None

    def to_json(self) -> Dict[str, Any]:
        ref = self.reference
        return {"transport": self.transport, "verdict": self.verdict, "fast_enough": self.fast_enough,
                "problem": self.problem,
                "expected": None if ref is None else {"gbps": ref.gbps, "bytes": ref.size, "for": ref.what,
                                                      "source": ref.source}}


def judge(result: GroupResult, ready: Mapping[str, NodeReady], s: AllreduceSettings) -> Optional[Judgement]:
    """The verdict on a finished all-reduce, against the expected figure for the nodes' GPUs and fabric."""
    top = result.busbw_at_largest()
    if top is None:
        return None
    models = [r.device for r in result.ranks if r.device and r.device != "cpu"]
    model = max(set(models), key=models.count) if models else ""
    per_node = nccl.per_node({n: sum(1 for r in result.ranks if r.node == n) for n in result.nodes}) if model else 0
    rails = [len(ready[n].hcas) for n in result.nodes if n in ready and ready[n].hcas]
    rates = [p.rate_gbps for n in result.nodes if n in ready and ready[n].ib for p in ready[n].ib.rails()]
    ref, why = nccl.expected(model, per_node, len(result.nodes), min(rails) if len(rails) == len(result.nodes) else 0,
                             nccl.fastest(rates), s.expected_gbps)
    text, ok = nccl.verdict(top.busbw / 1e9, top.bytes, ref, why)
    transport = result.transport()
    active = sum(len(r.ib.rails()) for r in ready.values() if r.ib is not None)
    problem = nccl.transport_problem(transport, active) if transport is not None else None
    tail = text.split("; ", 1)[1] if ref is None else text.split(", ", 1)[1]
    return Judgement(transport.describe() if transport else None, text, ok, tail, problem, ref)


def _report(run: RunContext, s: AllreduceSettings) -> Tuple[List[str], List[str]]:
    found, not_run = run.kept(NAME, GroupResult), run.kept(NOT_RUN, str)
    if found is None:
        return [], [f"All-reduce: {not_run}"] if not_run else []
    if not found.ok:
        return [f"All-reduce: FAILED: {found.reason}"], []
    judged = run.kept(JUDGED, Judgement)
    if judged is None:
        return [f"All-reduce: {summary(found)}; sums right"], []
    over = f", {judged.transport}" if judged.transport else ""
    return [f"All-reduce: {summary(found)}{over}; sums right; {judged.tail}"], [judged.problem] if judged.problem else []


def _data(run: RunContext, s: AllreduceSettings) -> Any:
    found = run.kept(NAME, GroupResult)
    if found is None:
        return {"not_run": run.kept(NOT_RUN, str)}
    judged = run.kept(JUDGED, Judgement)
    return {**found.to_json(), **({"judgement": judged.to_json()} if judged is not None else {})}


#: The run's judgement of its all-reduce, and why it did not run (Run.keep keys).
JUDGED = "allreduce-judgement"
NOT_RUN = "allreduce-not-run"


NAME = "allreduce"
STEP = Step(NAME, settings=read, run=_prepare_step, check_cluster=check_cluster, report=_report, data=_data,
            needs=("preflight", "netenv"))


DECLARED = declare(
    "ops.allreduce",
    Setting("allreduce_backend", "auto (nccl on GPU nodes, else gloo), nccl or gloo", "auto",
            kind=choice(*BACKENDS), check=check_backend),
    Setting("allreduce_sizes", "message sizes", DEFAULT_SIZES,
            kind=listing(SIZE, "sizes", 1), check=parse_sizes),
    Setting("allreduce_iters", "timed iterations per size", str(DEFAULT_ITERS),
            kind=whole(1), check=lambda v: number_option(v, "--iters")),
    Setting("allreduce_timeout", "seconds the whole job may take", f"{DEFAULT_TIMEOUT:g}",
            kind=POSITIVE, check=lambda v: number_option(v, "--timeout", float)),
    Setting("allreduce_port", "its rendezvous port", "master_port + 17",
            kind=PORT, check=lambda v: check_port(v, "all-reduce port", "allreduce_port")),
    Setting("allreduce_expected_gbps", "the busbw the cluster should reach (the judgement's reference)",
            "from the GPUs and fabric",
            kind=POSITIVE, check=lambda v: number_option(v, "allreduce_expected_gbps", float)),
    Setting("train_python", "the training python (a path); per node too", "Ray's venv, else python3",
            (CLUSTER, NODE),
            kind=text("^[A-Za-z0-9_./+-]+$", "python"), check=check_python),
)


OWNED = owns("ops.allreduce", home=(SCRIPT_PATH.rsplit("/", 1)[0],))
