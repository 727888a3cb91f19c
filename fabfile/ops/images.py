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

from ..core.chain import Column, Step
from ..core.connection import Session
from ..core.errors import HostError, InputError
from ..core.fanout import FAILED, HostResult
from ..core.inventory import Inventory, Node
from ..core.remote import Remote, last_line
from ..core.steps import Outcome, run_step

#: A Docker image reference (registry[:port]/path[:tag][@sha256:digest]): nothing a shell would read.
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[0-9]+)?(/[A-Za-z0-9._-]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                    r"(@sha256:[a-f0-9]{64})?$")
#: One pull may be a large image over a slow link, but never unbounded.
PULL_TIMEOUT = 1800
NONE = "none"
#: `REF ID` a line (`none` where the node has no such image). Run as root: docker's socket is root's.
IDS_SCRIPT = r"""
for r in "$@"; do
  id=$(docker image inspect --format '{{.Id}}' "$r" 2>/dev/null)
  echo "$r ${id:-none}"
done
"""


def check_refs(value: Any, path: str = "docker.images") -> Tuple[str, ...]:
    items = [] if value is None else value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"images must be a list of image names, not {value!r}", path=path)
    refs = tuple(str(x).strip() for x in items if str(x).strip())
    for ref in refs:
        if len(ref) > 255 or not REF_RE.match(ref) or ".." in ref:
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
class ImagesSettings:
    images: Tuple[str, ...] = ()


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ImagesSettings:
    """CLI `--images` > the inventory's `docker: images:`."""
    given = cli.get("images")
    return ImagesSettings(check_refs(given, "--images") if given else tuple(inv.docker_images))


def pull(session: Session, inv: Inventory, nodes: Sequence[Node], s: ImagesSettings, workers: Optional[int] = None,
         dry_run: bool = False, **step_kw: Any) -> List[HostResult]:
    """Pull on `nodes` at once; then every inventory node's IDs compared (the others only read)."""
    if not s.images:
        raise InputError("no images: list them in the inventory (docker: images: [...]) or give --images",
                         path="--images")
    results = run_step(session, nodes, lambda r: pull_node(r, s.images), workers=workers, **step_kw)
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


def run_on(run: Any, nodes: Sequence[Node], s: ImagesSettings) -> List[HostResult]:
    return pull(run.session, run.inv, nodes, s, dry_run=run.dry_run, **run.step_kw(NAME))


def _cell(run: Any, node: Node) -> str:
    found = run.result(NAME, node)
    if found is None:
        return "-"
    if found.failed:
        return "differs" if " here, " in found.reason else "failed"
    return f"{len(found.value or {})} same"


def _report(run: Any, s: ImagesSettings) -> Tuple[List[str], List[str]]:
    results = run.results.get(NAME, [])
    same = [r for r in results if not r.failed]
    ids = next((r.value for r in same if r.value), {})
    shown = ", ".join(f"{ref} {short(ids.get(ref, NONE))}" for ref in s.images)
    return [f"Images: {shown} on {len(same)}/{len(run.inv.nodes)} nodes, the same image ID on each"], []


NAME = "images"
STEP = Step(NAME, settings=read, run=run_on, wanted=lambda s: bool(s.images),
            columns=(Column("images", "Images", 25, _cell),), report=_report)
