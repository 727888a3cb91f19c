"""What a `bootstrap` run leaves next to its inventory, and which hosts a run takes.

The failed-hosts file is what `--retry-failed` reads, so a run that dies
halfway still tells the next one where to pick up; `--hosts-from` reads the
same format written by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .errors import InputError
from .inventory import Inventory, Node
from .localfs import check_writable, read_text

# --------------------------------------------------------------------------- files next to the inventory


@dataclass(frozen=True)
class RunFiles:
    """Where a cluster's last report and failed-host list live."""

    markdown: str
    json: str
    failed: str


#: Names gpufab reads its inventories and reports by: never an output of its own.
OWN_SUFFIXES = (".yaml", ".yml", ".report.md", ".report.json", ".failed")


def check_own_output(path: str, inventory: str, files: "RunFiles", thing: str, instead: str) -> None:
    """-o must name a file of its own: never the inventory or a report file (what the command reads
    would be replaced by what it made of it), nor one named like them; and a place it can write."""
    own = {os.path.realpath(p): what for p, what in (
        (inventory, "the inventory"), (files.json, "the JSON report"), (files.markdown, "the Markdown report"),
        (files.failed, "the failed-hosts file"))}
    what = own.get(os.path.realpath(path))
    if what is None and os.path.basename(path).endswith(OWN_SUFFIXES):
        what = "an inventory or report file of gpufab, by its name"
    if what is not None:
        raise InputError(f"is {what}: give {thing} a file of its own ({instead})", path=path)
    check_writable([path])


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


def choose_targets(inv: Inventory, retry_failed: bool, hosts_from: Optional[str], failed_file: str) -> Optional[Tuple[Node, ...]]:
    """All nodes, or those of a hosts file; None when a retry finds nothing to retry."""
    if retry_failed and hosts_from:
        raise InputError("give --retry-failed or --hosts-from, not both", path="--hosts-from")
    if not (retry_failed or hosts_from):
        return inv.nodes
    path = hosts_from or failed_file
    text = read_text(path)
    if text is None:
        if retry_failed:
            return None
        raise InputError("no such hosts file", path=path)
    wanted = parse_hosts_file(text)
    if not wanted:
        return None
    return pick_nodes(inv, wanted, path)
