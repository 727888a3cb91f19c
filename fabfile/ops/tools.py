"""`tools`: the packages an operator wants on every node (tmux, nvtop, htop ...).

Inventory var `packages: [tmux, nvtop, htop]`; the step is left out of the
chain when the list is empty, and installs only what a node is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Sequence, Tuple

from ..core.chain import Step, every_node
from ..core.cluster import setting
from ..core.errors import InputError
from ..core.inventory import Inventory
from ..core.packages import Downloads, missing, parse_installed, query_command
from ..core.remote import Remote, ensure_packages
from ..core.steps import Outcome
from ..core.declared import Setting, declare, listing
from ..core.context import RunContext

#: Debian package names (policy 5.6.1), and nothing a shell would read otherwise.
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class ToolsSettings:
    packages: Tuple[str, ...] = ()


def check_packages(value: Any) -> Tuple[str, ...]:
    items: Sequence[Any] = [] if value is None else value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"packages must be a list of package names, not {value!r}", path="packages")
    names = tuple(str(x).strip() for x in items if str(x).strip())
    for name in names:
        if not PACKAGE_RE.match(name):
            raise InputError(f"invalid package name {name!r}", path="packages")
    return names


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ToolsSettings:
    """CLI > inventory var `packages` > config `gpufab.packages` > none."""
    return ToolsSettings(check_packages(setting(config, inv, "packages", cli.get("packages"))))


def downloads(remote: Remote, s: ToolsSettings) -> Downloads:
    return Downloads(debs=tuple(missing(s.packages, parse_installed(remote.run(query_command(s.packages)).stdout))))


def apply(remote: Remote, s: ToolsSettings) -> Outcome:
    done = ensure_packages(remote, s.packages)
    return Outcome(done, [] if done else [f"{', '.join(s.packages)} installed"], s.packages)


def _report(run: RunContext, s: ToolsSettings) -> Tuple[List[str], List[str]]:
    have = [n for n in run.inv.nodes if run.value(NAME, n) == s.packages]
    return [f"Tools: {', '.join(s.packages)} on {len(have)}/{len(run.inv.nodes)} nodes"], []


NAME = "tools"
STEP = Step(NAME, settings=read, run=every_node(NAME, apply), wanted=lambda s: bool(s.packages), report=_report,
            needs=("preflight", "fetch"), downloads=downloads)


DECLARED = declare(
    "ops.tools",
    Setting("packages", "Debian packages for every node (`[tmux, nvtop]`); the tools step runs only with some",
            "none",
            kind=listing(PACKAGE_RE.pattern[1:-1]), check=check_packages),
)
