"""The operator's own setup steps (`steps:` in the inventory, `inv script.run FILE`).

No tool can know that a cluster needs its training repo cloned into the
share, a project synced on every node or a dataset converted once on the
head. These steps run where the inventory says (all nodes, the head, the
workers, a role), after the built-in step they need, with the cluster's
values (NID, IHN, NODE_RANK, RAY_HEAD_IP ...) exported, like the seed's
hand-run `onstart.sh`.

On each node a step lives in the SSH user's `~/.local/state/gpufab/steps/NAME/`:
`script` (the user's, 0700), `env` (its variables, 0600), `run` (gpufab's
runner, templates/steps/run.sh) and, after a run, `log` and `exit`. Files are
written as the SSH user and only when their content differs. A step is
skipped where `creates:` exists or `unless:` succeeds (otherwise it runs
every time, and the plan says so). A `detached` step runs as a transient
systemd unit, so Ctrl-C or a dropped link does not stop it: the next run
finds it still going and waits for it instead of starting it twice.
"""

from __future__ import annotations

import os
import re
import shlex
import string
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core import programs
from ..core.chain import Column, Step
from ..core.declared import declare_section, owns
from ..core.cluster import setting
from ..core.errors import HostError, InputError, keeping_changes
from ..core.facts import parse_facts
from ..core.fanout import HostResult
from ..core.files import ManagedFile, plan_files, render, sha256, shipped
from ..core.inventory import VAR_KEY_RE, Entry, Inventory, Node
from ..core.remote import Remote
from ..core.steps import Outcome
from ..core.context import RunContext
from .shared import gpu
from .shared.launch import placements, rank_order
from .shared.ports import DEFAULT_MASTER_PORT, check_port

KEYS = ("name", "script", "command", "where", "after", "env", "creates", "unless", "detached", "timeout", "sudo")
#: A step's name is a directory and a unit name on the nodes, and a word for --skip/--only.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
WHERE = ("all", "head", "workers")
DEFAULT_TIMEOUT = 3600
#: Under the SSH user's home.
STATE_DIR = ".local/state/gpufab/steps"
#: A `sudo: true` step's files: root's, outside every home. Root never runs or writes what the SSH
#: user (or anything running as them, a Ray task) could have put in place.
ROOT_STATE_DIR = "/var/lib/gpufab/steps"
RUNNER = shipped("steps/run.sh")
#: Lines of a failed step's log kept for the report.
TAIL = 15
#: Seconds between looks at a detached step, and between progress lines of one node.
POLL = 2.0
SAY_EVERY = 5.0
#: Seconds past a step's timeout before gpufab stops waiting (the runner ends it at the timeout).
GRACE = 30
#: The variables the runner exports besides the step's own env.
NODE_VARIABLES = ("NID", "IHN", "NODE_NAME", "PRIVATE_IP", "NODE_RANK", "NNODES", "NPROC_PER_NODE", "MASTER_ADDR",
                  "MASTER_PORT", "RAY_HEAD_IP", "HEAD_PRIVATE_IP")
#: What the runner sets for itself; an env: entry may not take these names.
RESERVED = (*NODE_VARIABLES, "NIC", "GPUFAB_WORKDIR", "GPUFAB_TIMEOUT", "GPUFAB_CREATES", "GPUFAB_UNLESS")


@dataclass(frozen=True)
class UserStep:
    name: str
    #: The script's text (a `command:` becomes a two-line sh script).
    body: str
    #: Where it came from, for the report: the local path, or `command`.
    source: str
    #: all, head, workers, or a role from the inventory (`where:`; YAML reads a key `on:` as true).
    where: str = "all"
    #: The step of the chain it runs after (None: after the last built-in one).
    after: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    creates: Optional[str] = None
    unless: Optional[str] = None
    detached: bool = False
    timeout: int = DEFAULT_TIMEOUT
    sudo: bool = False

    @property
    def directory(self) -> str:
        """Its directory on a node: under the SSH user's home, or root's own for a `sudo: true` step."""
        return f"{ROOT_STATE_DIR}/{self.name}" if self.sudo else f"{STATE_DIR}/{self.name}"

    def path(self, home: str) -> str:
        return self.directory if self.sudo else f"{home}/{self.directory}"

    def shown(self, name: str) -> str:
        """A file of it as the report names it (`~/...` is the node's home, not the controller's)."""
        return f"{self.directory}/{name}" if self.sudo else f"~/{self.directory}/{name}"

    def runs_on(self, node: Node) -> bool:
        if self.where == "all":
            return True
        if self.where == "workers":
            return not node.is_head
        return node.has_role(self.where)

    def guard(self, creates: Optional[str] = None) -> str:
        """How the plan says whether it runs again (`creates` as filled in for the node)."""
        creates = creates or self.creates
        if creates and self.unless:
            return f"unless {creates} exists or `{self.unless}` succeeds"
        if creates:
            return f"unless {creates} exists"
        if self.unless:
            return f"unless `{self.unless}` succeeds"
        return "every time (no creates/unless)"


@dataclass(frozen=True)
class ScriptSettings:
    step: UserStep
    master_port: int = DEFAULT_MASTER_PORT


@dataclass
class StepRun:
    """What a user step did on one node."""

    state: str  # ran, skipped, failed, would run
    exit: Optional[int] = None
    seconds: float = 0.0
    log: str = ""
    #: The last lines of its log (kept for a failure).
    tail: List[str] = field(default_factory=list)
    why: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {"state": self.state, "exit": self.exit, "seconds": round(self.seconds, 1), "log": self.log,
                "skipped_because": self.why or None, "tail": self.tail}


# --------------------------------------------------------------------------- reading the inventory


def _bool(entry: Entry, key: str, where: str, path: Optional[str]) -> bool:
    value = entry.data.get(key, False)
    if not isinstance(value, bool):
        raise InputError(f"{where}: {key} must be true or false, not {value!r}", path=path, line=entry.line_of(key))
    return value


def _text(entry: Entry, key: str, where: str, path: Optional[str]) -> Optional[str]:
    value = entry.data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise InputError(f"{where}: {key} must be a non-empty string", path=path, line=entry.line_of(key))
    return value.strip()


def read_script(path: str, where: str, inv_path: Optional[str], line: Optional[int]) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            body = fh.read()
    except FileNotFoundError:
        raise InputError(f"{where}: no such script {path}", path=inv_path, line=line) from None
    except IsADirectoryError:
        raise InputError(f"{where}: {path} is a directory, not a script", path=inv_path, line=line) from None
    except UnicodeDecodeError:
        raise InputError(f"{where}: {path} is not a text file", path=inv_path, line=line) from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read {path}: {exc.strerror}", path=inv_path, line=line) from None
    if not body.strip():
        raise InputError(f"{where}: {path} is empty", path=inv_path, line=line)
    return body if body.startswith("#!") else "#!/bin/sh\n" + body


def check_env(raw: Any, where: str, path: Optional[str], line: Optional[int]) -> Tuple[Tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise InputError(f"{where}: env must be a mapping of NAME: value", path=path, line=line)
    out = []
    for key, value in raw.items():
        if not VAR_KEY_RE.match(str(key)) or key in RESERVED:
            raise InputError(f"{where}: env name {key!r} is not allowed (a shell variable name, not one of gpufab's)",
                             path=path, line=line)
        if isinstance(value, (dict, list)) or value is None:
            raise InputError(f"{where}: env {key} must be a single value", path=path, line=line)
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if "\0" in text or "\n" in text:
            raise InputError(f"{where}: env {key} must be one line", path=path, line=line)
        out.append((str(key), text))
    return tuple(out)


def check_timeout(value: Any, where: str, path: Optional[str], line: Optional[int]) -> int:
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{where}: timeout must be a positive whole number of seconds, not {value!r}",
                         path=path, line=line)
    return value


def check_where(value: Any, inv: Inventory, where: str, path: Optional[str], line: Optional[int]) -> str:
    text = str(value).strip() if value is not None else "all"
    if text in WHERE:
        return text
    roles = sorted({r for n in inv.nodes for r in (n.role, *n.roles)})
    if text not in roles:
        raise InputError(f"{where}: where {text!r} matches no node (all, head, workers or a role: {', '.join(roles)})",
                         path=path, line=line)
    return text


def parse_step(entry: Entry, index: int, inv: Inventory, base_dir: str, taken: Sequence[str],
               path: Optional[str], label: str = "") -> UserStep:
    """One `steps:` entry, checked, its script read: every problem is one line naming the inventory line."""
    data = entry.data
    label = label or f"steps #{index + 1}"
    for key in data:
        if key not in KEYS:
            raise InputError(f"{label}: unknown key {key!r} (expected one of: {', '.join(KEYS)})",
                             path=path, line=entry.line_of(key))
    script, command = _text(entry, "script", label, path), _text(entry, "command", label, path)
    if (script is None) == (command is None):
        raise InputError(f"{label}: give script: (a local file) or command:, one of them", path=path, line=entry.line)
    default = os.path.splitext(os.path.basename(script))[0].lower() if script else None
    name = str(data.get("name") or default or "")
    if not NAME_RE.match(name):
        raise InputError(f"{label}: name {name or '(none)'!r} must be lowercase letters, digits, '-' or '_' "
                         "(a command needs a name:)", path=path, line=entry.line_of("name"))
    label = label if label == "script.run" else f"step {name!r}"
    if name in taken:
        raise InputError(f"{label}: a step of that name exists already", path=path, line=entry.line_of("name"))
    after = _text(entry, "after", label, path)
    if after is not None and (after not in taken or after == "verify"):
        raise InputError(f"{label}: after {after!r} is not an earlier step (one of: "
                         f"{', '.join(t for t in taken if t != 'verify')})", path=path, line=entry.line_of("after"))
    if script is not None:
        local = script if os.path.isabs(script) else os.path.join(base_dir, script)
        body, source = read_script(local, label, path, entry.line_of("script")), script
    else:
        body, source = f"#!/bin/sh\n{command}\n", "command"
    return UserStep(
        name=name, body=body, source=source,
        where=check_where(data.get("where"), inv, label, path, entry.line_of("where")),
        after=after,
        env=check_env(data.get("env"), label, path, entry.line_of("env")),
        creates=_text(entry, "creates", label, path),
        unless=_text(entry, "unless", label, path),
        detached=_bool(entry, "detached", label, path),
        timeout=check_timeout(data.get("timeout"), label, path, entry.line_of("timeout")),
        sudo=_bool(entry, "sudo", label, path),
    )


def user_steps(inv: Inventory, builtin: Sequence[str]) -> List[UserStep]:
    """The inventory's `steps:`, in order; a script path is relative to the inventory's directory."""
    base = os.path.dirname(os.path.abspath(inv.path)) if inv.path else os.getcwd()
    found: List[UserStep] = []
    for index, entry in enumerate(inv.steps):
        found.append(parse_step(entry, index, inv, base, [*builtin, *(s.name for s in found)], inv.path))
    return found


def with_user_steps(chain: Sequence[Step], inv: Inventory) -> List[Step]:
    """The chain with the inventory's steps put in: each after its `after:` step (in inventory order),
    else just before the last (verify)."""
    names = [s.name for s in chain] + [a for s in chain for a in s.aliases]
    out = list(chain)
    for user in user_steps(inv, names):
        if user.after is None:
            at = len(out) - 1
        else:
            at = next(i for i, s in enumerate(out) if s.name == user.after or user.after in s.aliases) + 1
            # After the user steps already put there, so inventory order holds.
            while at < len(out) - 1 and is_user_step(out[at]):
                at += 1
        out.insert(at, step_for(user))
    return out


# --------------------------------------------------------------------------- per node


def node_values(step: UserStep, inv: Inventory, node: Node, master_port: int, home: str,
                gpus: Optional[Mapping[str, int]] = None) -> Dict[str, str]:
    """Every variable of the step's env file on `node`: the same ranks as `launch`, whichever nodes run."""
    ranked = rank_order(inv.nodes)
    placement = placements(ranked, master_port, dict(gpus or {}))[[n.name for n in ranked].index(node.name)]
    head = inv.head.private or inv.head.public
    values = {"NID": str(node.nid), "IHN": "true" if node.is_head else "false", "NODE_NAME": node.name,
              "PRIVATE_IP": node.private or "", **placement.values, "RAY_HEAD_IP": head, "HEAD_PRIVATE_IP": head}
    own = {**values, **dict(step.env), "HOME": home}
    values.update({
        "GPUFAB_WORKDIR": home,
        "GPUFAB_TIMEOUT": str(step.timeout),
        # `creates: /mnt/shared/done.$NID`: the node's values filled in here, not by a shell.
        "GPUFAB_CREATES": string.Template(step.creates).safe_substitute(own) if step.creates else "",
        "GPUFAB_UNLESS": step.unless or "",
    })
    return values


def env_file(step: UserStep, node: Node, values: Mapping[str, str]) -> str:
    quoted = {k: shlex.quote(v) for k, v in values.items()}
    return render("steps/step.env.j2", step=step.name, node=node.name, values=quoted,
                  env=[(k, shlex.quote(v)) for k, v in step.env])


def wanted_files(step: UserStep, env_text: str) -> Dict[str, Tuple[str, int]]:
    return {"run": (RUNNER, 0o700), "script": (step.body, 0o700), "env": (env_text, 0o600)}


#: $1 the step's directory (absolute, or under the SSH user's home), $2 the SSH user. Prints home=,
#: gpus= (with nvidia-smi; not where $3 is `known`: the run has the count), a digest per file, and
#: running=yes while a run is going.
FACTS_SCRIPT = programs.text("step-facts.sh", smi_timeout=gpu.SMI_TIMEOUT)

#: $1 the step's directory (absolute). Prints `exit=N` once the run has ended, `running=yes` or
#: `running=no` while it has not, then the last lines of its log.
STATUS_SCRIPT = programs.text("step-status.sh")

#: Root runs it. $1 unit, $2 user, $3 home, $4 runner. A transient unit where systemd runs, else nohup.
#: The last run's exit file goes first, as the user whose directory it is: root follows no link there.
START_SCRIPT = programs.text("step-start.sh")


def parse_status(text: str) -> Tuple[Optional[int], bool, List[str]]:
    """(exit status or None, still running, last log lines) from STATUS_SCRIPT's output."""
    head, _, log = text.partition("==log\n")
    facts = parse_facts(head)
    code = facts.get("exit")
    return (int(code) if code and code.lstrip("-").isdigit() else None, facts.get("running") == "yes",
            [line for line in log.splitlines() if line.strip()])


def failure_reason(step: UserStep, code: int, tail: Sequence[str]) -> str:
    what = f"timed out after {step.timeout}s" if code == 124 else f"exited {code}"
    return f"{step.source} {what}" + (f": {tail[-1][:160]}" if tail else " (no output)")


Say = Callable[[Node, str], None]


def wait_for(remote: Remote, step: UserStep, directory: str, log: str, say: Say,
             began: float) -> Tuple[int, List[str]]:
    """Poll a detached run until it has an exit status; its last log line is shown as it changes."""
    deadline = began + step.timeout + GRACE
    last, said, gone = "", 0.0, 0
    while True:
        status = remote.script(STATUS_SCRIPT, directory, str(TAIL), sudo=step.sudo, timeout=30).stdout
        code, running, tail = parse_status(status)
        if code is not None:
            return code, tail
        now = time.monotonic()
        if tail and tail[-1] != last and now - said >= SAY_EVERY:
            last, said = tail[-1], now
            say(remote.node, f"{step.name}: {last}")
        gone = 0 if running else gone + 1
        if gone >= 3:
            raise HostError(f"{step.source} stopped without an exit status (killed, or the node rebooted)",
                            value=StepRun("failed", None, now - began, log, tail))
        if now > deadline:
            raise HostError(f"{step.source} still running after {step.timeout}s (its timeout)",
                            value=StepRun("failed", None, now - began, log, tail))
        time.sleep(POLL)


def apply(remote: Remote, s: ScriptSettings, inv: Inventory, say: Say, stamp: str = "") -> Outcome:
    """Bring the step's files up to date, then run it unless its guard says it is done."""
    step = s.step
    gpus_known = remote.facts.flag(gpu.GPUS)
    facts = parse_facts(remote.script(FACTS_SCRIPT, step.directory, remote.user, gpus_known, sudo=step.sudo,
                                      timeout=30).stdout)
    home = facts.get("home") or "~"
    directory = step.path(home)
    log = step.shown("log")
    gpus = remote.facts.kept(gpu.GPUS, gpus_known, lambda: facts.get("gpus", ""), remote)
    values = node_values(step, inv, remote.node, s.master_port, home,
                         {remote.node.name: int(gpus)} if gpus.isdigit() else {})
    files = wanted_files(step, env_file(step, remote.node, values))
    stale = {name: f for name, f in files.items() if facts.get(name) != sha256(f[0])}
    done: List[str] = []
    began = time.monotonic()
    if facts.get("running") == "yes":
        # Started by an earlier run (Ctrl-C, a dropped link): wait for it rather than start it twice.
        if remote.dry_run:
            return Outcome([], [f"{step.name}: still running from an earlier run"], StepRun("running", log=log))
        say(remote.node, f"{step.name}: still running from an earlier run; waiting for it")
        remote.facts.clear()  # the operator's command can change whatever a fact reads
        code, tail = wait_for(remote, step, directory, log, say, began)
        return finish(step, code, tail, time.monotonic() - began, log, ["waited for the run an earlier gpufab started"])
    if stale:
        write_step_files(remote, step, stale)
        done.append(f"installed {step.source} as {step.shown('script')}" if "script" in stale else
                    f"updated {', '.join(sorted(stale))} in {step.shown('')[:-1]}")
    runner = shlex.quote(f"{directory}/run")
    if remote.dry_run:
        if stale:
            skip = "creates" if step.creates and remote.check(
                f"[ -e {shlex.quote(values['GPUFAB_CREATES'])} ]", sudo=step.sudo) else None
        else:
            skip = guard_says(remote, step, runner)
        if skip:
            return Outcome(done, [skipped_note(step, skip, values)], StepRun("skipped", why=skip))
        would = f"would run {step.source} on {remote.node.name}, {step.guard(values['GPUFAB_CREATES'])}"
        return Outcome([*done, would], [], StepRun("would run"))
    remote.facts.clear()  # the operator's command can change whatever a fact reads
    if step.detached:
        skip = guard_says(remote, step, runner)
        if skip:
            return Outcome(done, [skipped_note(step, skip, values)], StepRun("skipped", why=skip, log=log))
        unit = f"gpufab-step-{step.name}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"
        user = "root" if step.sudo else remote.user
        with keeping_changes(done):
            started = remote.script(START_SCRIPT, unit, user, home, f"{directory}/run", sudo=True, warn=True,
                                    timeout=60)
            if started.exited != 0:
                raise HostError(f"could not start {step.source}: {(started.stderr or started.stdout).strip()[-200:]}")
            say(remote.node, f"{step.name}: started as {unit}; waiting (at most {step.timeout}s)")
            code, tail = wait_for(remote, step, directory, log, say, began)
        return finish(step, code, tail, time.monotonic() - began, log, done)
    result = remote.run(f"{runner}", sudo=step.sudo, warn=True, timeout=step.timeout + GRACE)
    skip = parse_facts(result.stdout).get("skip")
    if skip:
        return Outcome(done, [skipped_note(step, skip, values)], StepRun("skipped", why=skip, log=log))
    code, _, tail = parse_status(remote.script(STATUS_SCRIPT, directory, str(TAIL), sudo=step.sudo, timeout=30).stdout)
    if code is None:
        said = (result.stderr or result.stdout).strip()[-200:] or "no exit status"
        raise HostError(f"{step.source} did not finish: {said}", changes=done,
                        value=StepRun("failed", None, time.monotonic() - began, log, tail))
    return finish(step, code, tail, time.monotonic() - began, log, done)


def write_step_files(remote: Remote, step: UserStep, files: Mapping[str, Tuple[str, int]]) -> None:
    """The SSH user's own step: written as that user. A `sudo: true` step: root's files, in root's directory."""
    if not step.sudo:
        remote.write_home_files(step.directory, files)
        return
    remote.change(f"install -d -m 0700 -o root -g root {shlex.quote(ROOT_STATE_DIR)} {shlex.quote(step.directory)}")
    wanted = [ManagedFile(f"{step.directory}/{name}", content, mode=mode, secret=name == "env")
              for name, (content, mode) in files.items()]
    remote.write_files(plan_files(wanted, remote.read_state(wanted)))


def guard_says(remote: Remote, step: UserStep, runner: str) -> Optional[str]:
    """`creates` or `unless` when the step's guard skips it on this node, else None (runner --check)."""
    skip = parse_facts(remote.run(f"{runner} --check", sudo=step.sudo, warn=True, timeout=150).stdout).get("skip")
    return skip if skip and skip != "no" else None


def skipped_note(step: UserStep, why: str, values: Mapping[str, str]) -> str:
    if why == "creates":
        return f"{step.name}: skipped, {values['GPUFAB_CREATES']} exists (creates)"
    return f"{step.name}: skipped, `{step.unless}` succeeded (unless)"


def finish(step: UserStep, code: int, tail: List[str], seconds: float, log: str, done: List[str]) -> Outcome:
    if code != 0:
        raise HostError(failure_reason(step, code, tail), changes=done,
                        value=StepRun("failed", code, seconds, log, tail))
    return Outcome([*done, f"ran {step.source} (exit 0, {seconds:.1f}s)"], [f"log {log}"],
                   StepRun("ran", 0, seconds, log, tail))


# --------------------------------------------------------------------------- in the chain


def run_in_chain(run: RunContext, nodes: Sequence[Node], s: ScriptSettings) -> List[HostResult]:
    """On the step's nodes among those still going, all at once; live lines from detached runs."""
    mine = [n for n in nodes if s.step.runs_on(n)]
    if not mine:
        return []
    width = max(len(n.name) for n in run.inv.nodes)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def say(node: Node, text: str) -> None:
        run.progress.line(f"{node.name:<{width}} {s.step.name:<9} {'running':<11}  {text}")

    return run.each(s.step.name, mine, lambda remote: apply(remote, s, run.inv, say, stamp))


def reader(step: UserStep) -> Callable[[Any, Inventory, Mapping[str, Any]], ScriptSettings]:
    def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ScriptSettings:
        return ScriptSettings(step, check_port(setting(config, inv, "master_port", None, DEFAULT_MASTER_PORT)))

    return read


def _runs(run: RunContext, name: str) -> List[Tuple[Node, StepRun]]:
    return [(r.node, r.value) for r in run.results.get(name, []) if isinstance(r.value, StepRun)]


def _cell(run: RunContext, node: Node) -> str:
    words = []
    for name in [s.name for s in run.steps if is_user_step(s)]:
        found = run.result(name, node)
        if found is None:
            continue
        state = found.value.state if isinstance(found.value, StepRun) else found.status
        words.append(f"{name} {state}")
    return ", ".join(words) or "-"


def _report(run: RunContext, s: ScriptSettings) -> Tuple[List[str], List[str]]:
    runs = _runs(run, s.step.name)
    if not runs:
        return [], []
    counts = {}
    for _, r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    line = f"Step {s.step.name} ({s.step.source}, on {s.step.where}): " + ", ".join(
        f"{v} {k}" for k, v in counts.items())
    warnings = []
    for node, r in runs:
        if r.state == "failed":
            warnings.append(f"{node.name}: step {s.step.name} failed; last lines of {r.log}:")
            warnings += [f"  | {line}" for line in r.tail[-TAIL:]] or ["  | (no output)"]
    return [line], warnings


def _access(run: RunContext, s: ScriptSettings) -> List[str]:
    runs = _runs(run, s.step.name)
    failed = [n for n, r in runs if r.state == "failed"]
    shown = failed[0] if failed else (runs[0][0] if runs else None)
    if shown is None:
        return []
    # Quoted: the node's ~, not the controller's.
    tail = f"sudo tail -n 50 {s.step.shown('log')}" if s.step.sudo and shown.user != "root" else \
        f"tail -n 50 {s.step.shown('log')}"
    return [f"{run.ssh(shown, run.aliases)} '{tail}'"]


def _data(run: RunContext, s: ScriptSettings) -> Any:
    return {node.name: r.to_json() for node, r in _runs(run, s.step.name)}


def is_user_step(step: Step) -> bool:
    return step.run is run_in_chain


def step_for(user: UserStep) -> Step:
    return Step(
        user.name,
        settings=reader(user),
        run=run_in_chain,
        # Workers' steps need the head's; a head-only step does not need itself to be alive elsewhere.
        needs_head=user.where != "head",
        columns=(Column("steps", "Your steps", _cell),),
        report=_report,
        access=_access,
        data=_data,
        drifts=bool(user.creates or user.unless),
    )


_TEXT = {"type": "string", "minLength": 1}
SECTION = declare_section("ops.scripts", "steps", {
    "type": "object", "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern}, "script": _TEXT, "command": _TEXT,
        "where": {"type": "string", "description": "all, head, workers or a role of the inventory"},
        "after": {"type": "string", "description": "an earlier step"},
        "env": {"type": "object", "propertyNames": {"pattern": VAR_KEY_RE.pattern},
                "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "creates": _TEXT, "unless": _TEXT, "detached": {"type": "boolean"},
        "timeout": {"type": "integer", "minimum": 1}, "sudo": {"type": "boolean"},
    },
    "oneOf": [{"required": ["script"]}, {"required": ["command"]}],
})


OWNED = owns("ops.scripts", trees=(ROOT_STATE_DIR,), home=(STATE_DIR.rsplit("/", 1)[0],))
