"""What `bootstrap` runs and what it leaves behind, as pure code.

Which steps run (chain order, `--skip`/`--only`, steps the inventory turns
off), which hosts (all, or the ones a previous run failed), and the final
report: a value built from the run's results that is printed, saved as
Markdown and JSON next to the inventory, and shown again by `inv report`
without touching the nodes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from tabulate import tabulate

from .errors import InputError
from .inventory import Inventory, Node

#: The chain, in order. Preflight always runs: every later step needs its facts.
STEPS = ("preflight", "limits", "docker", "netenv", "storage", "ray", "verify")
OPTIONAL_STEPS = STEPS[1:]
#: Inventory variable listing steps the cluster does without (e.g. [nfs]).
SKIP_VAR = "bootstrap_skip"
#: Steps that need the head to have come through (workers follow the head).
NEEDS_HEAD = ("netenv", "storage", "ray")
#: Older names of steps, still accepted: `--skip nfs` means the storage step.
ALIASES = {"nfs": "storage"}

REPORT_COLUMNS = ("Node", "Public IP", "Private IP", "NID", "Role", "NIC", "Docker", "NFS", "ulimit", "Ray", "GPUs", "Result")


def step_list(value: Union[None, str, Sequence[str]], what: str) -> List[str]:
    """`docker,nfs` (or a YAML list) -> ['docker', 'nfs'], each a known optional step."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [ALIASES.get(str(x).strip(), str(x).strip()) for x in items if str(x).strip()]
    for name in names:
        if name == "preflight":
            raise InputError("preflight cannot be skipped: every step needs its facts", path=what)
        if name not in OPTIONAL_STEPS:
            raise InputError(f"unknown step {name!r} (steps: {', '.join(OPTIONAL_STEPS)})", path=what)
    return names


def select_steps(skip: Optional[str], only: Optional[str], disabled: Union[None, str, Sequence[str]]) -> List[str]:
    """The steps of this run, in chain order.

    `--only` names exactly what runs (an explicit choice beats the inventory);
    otherwise every step runs except `--skip` and the inventory's `bootstrap_skip`.
    """
    skipped = step_list(skip, "--skip")
    chosen = step_list(only, "--only")
    off = step_list(disabled, SKIP_VAR)
    if skipped and chosen:
        raise InputError("give --skip or --only, not both", path="--only")
    if chosen:
        return ["preflight", *[s for s in OPTIONAL_STEPS if s in chosen]]
    return ["preflight", *[s for s in OPTIONAL_STEPS if s not in skipped and s not in off]]


# --------------------------------------------------------------------------- files next to the inventory


@dataclass(frozen=True)
class RunFiles:
    """Where a cluster's last report and failed-host list live."""

    markdown: str
    json: str
    failed: str


def run_files(inventory_path: str, from_cli_hosts: bool) -> RunFiles:
    """`inventory/lab.yaml` -> inventory/lab.report.md, lab.report.json, lab.failed.

    `fab -H` runs have no inventory file; theirs sit beside the default one,
    named `fab-hosts.*`, so they never overwrite an inventory cluster's.
    """
    directory = os.path.dirname(inventory_path) or "."
    stem = "fab-hosts" if from_cli_hosts else os.path.splitext(os.path.basename(inventory_path))[0]
    base = os.path.join(directory, stem)
    return RunFiles(markdown=f"{base}.report.md", json=f"{base}.report.json", failed=f"{base}.failed")


@dataclass(frozen=True)
class Failure:
    node: str
    public: str
    step: str
    reason: str


def failed_hosts_text(failures: Sequence[Failure]) -> str:
    """One host per line (name, address, step, reason); `--hosts-from` reads the first word."""
    lines = ["# Hosts the last gpufab bootstrap could not finish: inv bootstrap --retry-failed reruns them."]
    lines += [f"{f.node} {f.public} {f.step}: {f.reason}" for f in failures]
    return "\n".join(lines) + "\n"


def parse_hosts_file(text: str) -> List[str]:
    """Names or addresses, one per line; `#` comments and anything after the first word ignored."""
    out: List[str] = []
    for line in text.splitlines():
        word = line.split("#", 1)[0].split()
        if word and word[0] not in out:
            out.append(word[0])
    return out


def pick_nodes(inv: Inventory, wanted: Sequence[str], path: str) -> Tuple[Node, ...]:
    """The inventory's nodes named (by name or public address) in `wanted`, in inventory order."""
    known = {n.name for n in inv.nodes} | {n.public for n in inv.nodes}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise InputError(f"not in the inventory: {', '.join(unknown)}", path=path)
    return tuple(n for n in inv.nodes if n.name in wanted or n.public in wanted)


# --------------------------------------------------------------------------- the final report


@dataclass
class NodeRow:
    node: str
    public: str
    private: str
    nid: int
    role: str
    nic: str = "-"
    docker: str = "-"
    nfs: str = "-"
    ulimit: str = "-"
    ray: str = "-"
    gpus: str = "-"
    result: str = "-"

    def cells(self) -> List[Any]:
        return [self.node, self.public, self.private, self.nid, self.role, self.nic, self.docker,
                self.nfs, self.ulimit, self.ray, self.gpus, self.result]


@dataclass
class Report:
    """Everything the last bootstrap found: the table, the checks, what to type next."""

    created: str
    inventory: str
    steps: List[str]
    nodes: List[NodeRow]
    checks: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    access: List[str] = field(default_factory=list)
    summary: str = ""
    exit_code: int = 0
    #: Per node, per step: ok / changed / failed / not run.
    step_status: Dict[str, Dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, path: str) -> "Report":
        try:
            data = json.loads(text)
            data["nodes"] = [NodeRow(**row) for row in data["nodes"]]
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not a gpufab report ({exc}); run bootstrap again to rewrite it", path=path) from None

    def to_text(self) -> str:
        return self._render("simple", lambda title: f"\n{title}", lambda item: f"  {item}")

    def to_markdown(self) -> str:
        head = f"# gpufab cluster report\n\n{self.created}, inventory `{self.inventory}`, steps: {', '.join(self.steps)}\n"
        return head + self._render("github", lambda title: f"\n## {title}\n", lambda item: f"- {item}", code=True)

    def _render(self, fmt: str, title: Any, item: Any, code: bool = False) -> str:
        parts = [tabulate([r.cells() for r in self.nodes], headers=list(REPORT_COLUMNS), tablefmt=fmt)]
        sections: Iterable[Tuple[str, List[str]]] = (
            ("Verification", self.checks), ("Warnings", self.warnings), ("Quick access", self.access))
        for name, lines in sections:
            if not lines:
                continue
            parts.append(title(name))
            for line in lines:
                parts.append(item(f"`{line}`" if code and name == "Quick access" and not line.endswith(":") else line))
        if self.summary:
            parts += ["", self.summary]
        return "\n".join(parts) + "\n"


def ssh_aliases(ssh_config_text: Optional[str]) -> List[str]:
    """Host aliases defined in an ssh config (to offer `ssh rental0` rather than the address)."""
    names: List[str] = []
    for line in (ssh_config_text or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].lower() == "host":
            names += [f for f in fields[1:] if not any(c in f for c in "*?!")]
    return names


def ssh_command(node: Node, aliases: Sequence[str], known_hosts: Optional[str] = None) -> str:
    """How the user reaches a node by hand: its alias, else user, key, port and address."""
    if node.name in aliases:
        return f"ssh {node.name}"
    parts = ["ssh"]
    if known_hosts:
        parts += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if node.key:
        parts += ["-i", node.key]
    if node.port and node.port != 22:
        parts += ["-p", str(node.port)]
    parts.append(f"{node.user}@{node.public}" if node.user else node.public)
    return " ".join(parts)
