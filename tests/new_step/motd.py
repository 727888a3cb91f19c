"""`motd`: a line every login on a node shows (which cluster this is, whom to ask).

Not one of gpufab's steps: tests/unit/test_derived.py adds it to a copy of the package as a new
step is added (this module in ops/, one entry in ops/chain.py's CHAIN, `scripts/generate`) and
proves that nothing else had to change. It is real all the same: a setting read once and
declared, a file it owns and reset takes away, a report column, a check in the verify phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Tuple

from ..core.chain import Column, Step, every_node
from ..core.cluster import setting
from ..core.context import RunContext
from ..core.declared import TEXT, Setting, declare, owns
from ..core.errors import InputError
from ..core.files import ManagedFile, plan_files
from ..core.inventory import Inventory
from ..core.remote import Remote
from ..core.steps import Outcome

#: pam_motd shows every file of /etc/motd.d at login (Debian 12, Ubuntu).
MOTD_FILE = "/etc/motd.d/90-gpufab"


@dataclass(frozen=True)
class MotdSettings:
    text: str = ""


def check_text(value: Any) -> str:
    text = str(value).strip()
    if "\n" in text or len(text) > 200:
        raise InputError("motd is one line of at most 200 characters", path="motd")
    return text


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> MotdSettings:
    """CLI > inventory var `motd` > config `gpufab.motd` > none (the step is left out)."""
    value = setting(config, inv, "motd", cli.get("motd"))
    return MotdSettings(check_text(value) if value is not None else "")


def apply(remote: Remote, s: MotdSettings) -> Outcome:
    wanted = [ManagedFile(MOTD_FILE, s.text + "\n")]
    done = remote.write_files(plan_files(wanted, remote.read_state(wanted)))
    return Outcome(done, [], s.text)


def check(remote: Remote, s: MotdSettings) -> Outcome:
    return Outcome(value=(remote.read_text(MOTD_FILE) or "").strip())


def _cell(run: RunContext, node: Any) -> str:
    shown = run.value(NAME, node) or run.checked(NAME, node)
    return "set" if shown else "-"


def _report(run: RunContext, s: MotdSettings) -> Tuple[List[str], List[str]]:
    shown = [n for n in run.verified() if run.checked(NAME, n) == s.text]
    return [f"motd: {len(shown)}/{len(run.inv.nodes)} nodes show it at login"], []


NAME = "motd"
STEP = Step(NAME, settings=read, run=every_node(NAME, apply), wanted=lambda s: bool(s.text), check=check,
            needs=("preflight",), columns=(Column("motd", "MOTD", _cell),), report=_report)


DECLARED = declare(
    "ops.motd",
    Setting("motd", "a line every login on the nodes shows", "none", kind=TEXT, check=check_text),
)


OWNED = owns("ops.motd", files=(MOTD_FILE,), parents=("/etc/motd.d",))
