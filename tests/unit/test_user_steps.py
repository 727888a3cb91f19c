"""The operator's own steps: the inventory's `steps:` read, placed in the chain, planned and run.

The runner (templates/steps/run.sh) is run for real here, in a temporary
home: skipping, variables, exit status, log and the time limit are the
shell's doing, so they are tested in a shell.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

import pytest

from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import parse_inventory
from fabfile.ops import scripts as plan
from fabfile.ops.chain import CHAIN

from fakes import FakeRemote

HOME = "/home/gpu"


def inventory(steps: str, tmp_path, scripts=None):
    for name, body in (scripts or {"prep.sh": "echo prep\n"}).items():
        (tmp_path / name).write_text(body)
    text = textwrap.dedent("""\
        nodes:
          - {name: node1, public: 203.0.113.1, private: 10.0.0.1}
          - {name: node2, public: 203.0.113.2, private: 10.0.0.2, roles: [data]}
          - {name: node3, public: 203.0.113.3, private: 10.0.0.3}
        steps:
        """) + textwrap.indent(textwrap.dedent(steps), "  ")
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return parse_inventory(text, str(path))


def names(chain):
    return [s.name for s in chain]


# --------------------------------------------------------------------------- the inventory


def test_steps_join_the_chain_after_their_step_in_inventory_order(tmp_path):
    inv = inventory("""\
        - {script: prep.sh, where: head, after: storage}
        - {name: sync, command: uv sync, where: workers, after: storage}
        - {name: last, command: "true"}
        """, tmp_path)
    chain = plan.with_user_steps(CHAIN, inv)
    assert names(chain) == ["preflight", "fetch", "wheels", "limits", "docker", "images", "containers", "netenv", "mesh", "storage", "prep", "sync", "ray", "tools",
                            "allreduce", "last", "verify"]
    prep, sync = (next(s for s in chain if s.name == n) for n in ("prep", "sync"))
    # A workers' step needs the head alive; the head's own step does not.
    assert (prep.needs_head, sync.needs_head) == (False, True)
    steps = plan.user_steps(inv, names(CHAIN))
    assert steps[0].body == "#!/bin/sh\necho prep\n" and steps[0].source == "prep.sh"
    assert steps[1].body == "#!/bin/sh\nuv sync\n" and steps[1].source == "command"
    assert [n.name for n in inv.nodes if steps[1].runs_on(n)] == ["node2", "node3"]


def test_a_step_can_come_after_an_earlier_user_step_and_by_role(tmp_path):
    inv = inventory("""\
        - {script: prep.sh, where: data, after: netenv}
        - {name: use, command: "true", after: prep}
        """, tmp_path)
    chain = names(plan.with_user_steps(CHAIN, inv))
    assert chain.index("use") == chain.index("prep") + 1 == chain.index("netenv") + 2
    step = plan.user_steps(inv, names(CHAIN))[0]
    assert [n.name for n in inv.nodes if step.runs_on(n)] == ["node2"]


@pytest.mark.parametrize("steps, message, line", [
    ("- {script: prep.sh, when: later}", "steps #1: unknown key 'when'", 6),
    ("- {script: prep.sh, command: x}", "give script: (a local file) or command:, one of them", 6),
    ("- {command: ls}", "steps #1: name '(none)' must be lowercase", 6),
    ("- {script: gone.sh}", "step 'gone': no such script", 6),
    ("- {script: prep.sh, name: docker}", "step 'docker': a step of that name exists already", 6),
    ("- {script: prep.sh, after: nowhere}", "step 'prep': after 'nowhere' is not an earlier step", 6),
    ("- {script: prep.sh, after: verify}", "after 'verify' is not an earlier step", 6),
    ("- {script: prep.sh, where: gpu-big}", "where 'gpu-big' matches no node (all, head, workers or a role: data, head",
     6),
    ("- {script: prep.sh, env: {NID: 3}}", "env name 'NID' is not allowed", 6),
    ("- {script: prep.sh, env: {A: [1]}}", "env A must be a single value", 6),
    ("- {script: prep.sh, timeout: -5}", "timeout must be a positive whole number of seconds, not -5", 6),
    ("- {script: prep.sh, detached: yes please}", "detached must be true or false", 6),
    ("- {script: prep.sh}\n- {script: prep.sh}", "step 'prep': a step of that name exists already", 7),
    ("- just a string", "steps #1 must be a mapping", 5),
])
def test_a_bad_step_is_one_error_naming_the_line(tmp_path, steps, message, line):
    with pytest.raises(InputError) as err:
        plan.with_user_steps(CHAIN, inventory(steps, tmp_path))
    assert message in str(err.value)
    assert err.value.line == line and err.value.path.endswith("cluster.yaml")


def test_a_script_that_is_empty_binary_or_a_directory_is_named(tmp_path):
    (tmp_path / "bin.sh").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "dir.sh").mkdir()
    for script, message in (("empty.sh", "is empty"), ("bin.sh", "is not a text file"), ("dir.sh", "is a directory")):
        inv = inventory(f"- {{script: {script}}}", tmp_path, {"empty.sh": "  \n"})
        with pytest.raises(InputError, match=message):
            plan.user_steps(inv, names(CHAIN))


# --------------------------------------------------------------------------- per node


def test_each_node_gets_its_ids_and_the_heads_address_and_creates_is_filled_in(tmp_path):
    inv = inventory("- {script: prep.sh, creates: /mnt/shared/done.$NID, env: {DATA: /mnt/x}}", tmp_path)
    home_step = plan.user_steps(inventory("- {script: prep.sh, creates: $HOME/x.$NID.$Y}", tmp_path), names(CHAIN))[0]
    assert plan.node_values(home_step, inv, inv.head, 29500, HOME)["GPUFAB_CREATES"] == f"{HOME}/x.0.$Y"
    step = plan.user_steps(inv, names(CHAIN))[0]
    node2 = inv.by_name("node2")
    values = plan.node_values(step, inv, node2, 29500, HOME, {"node2": 4})
    assert {k: values[k] for k in ("NID", "IHN", "NODE_RANK", "NNODES", "NPROC_PER_NODE", "MASTER_ADDR",
                                   "RAY_HEAD_IP", "HEAD_PRIVATE_IP", "PRIVATE_IP")} == {
        "NID": "1", "IHN": "false", "NODE_RANK": "1", "NNODES": "3", "NPROC_PER_NODE": "4",
        "MASTER_ADDR": "10.0.0.1", "RAY_HEAD_IP": "10.0.0.1", "HEAD_PRIVATE_IP": "10.0.0.1", "PRIVATE_IP": "10.0.0.2"}
    assert values["GPUFAB_CREATES"] == "/mnt/shared/done.1" and values["GPUFAB_WORKDIR"] == HOME
    assert plan.node_values(step, inv, inv.head, 29500, HOME)["IHN"] == "true"


def test_the_env_file_gives_the_shell_exactly_the_values(tmp_path):
    inv = inventory("""- {script: prep.sh, env: {MSG: "it's a $HOME `x` \\"q\\""}, unless: "test -f /a && true"}""",
                    tmp_path)
    step = plan.user_steps(inv, names(CHAIN))[0]
    values = plan.node_values(step, inv, inv.head, 29500, HOME)
    path = tmp_path / "env"
    path.write_text(plan.env_file(step, inv.head, values))
    out = subprocess.run(["sh", "-c", '. "$1"; printf "%s|%s|%s" "$MSG" "$GPUFAB_UNLESS" "$NID"', "sh", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert out == "it's a $HOME `x` \"q\"|test -f /a && true|0"


# --------------------------------------------------------------------------- the runner, for real


@pytest.fixture
def stepdir(tmp_path):
    """A step directory as apply leaves it, in a temporary home; run(args) runs ./run there."""
    inv = inventory("- {script: prep.sh}", tmp_path)
    home = tmp_path / "home"
    home.mkdir()

    def make(body: str, **entry):
        step = plan.UserStep("prep", "#!/bin/sh\n" + body, "prep.sh", **entry)
        values = plan.node_values(step, inv, inv.by_name("node2"), 29500, str(home))
        d = home / plan.STATE_DIR / "prep"
        d.mkdir(parents=True, exist_ok=True)
        for name, (content, mode) in plan.wanted_files(step, plan.env_file(step, inv.by_name("node2"), values)).items():
            (d / name).write_text(content)
            os.chmod(d / name, mode)
        return d

    def run(d, *args):
        return subprocess.run([str(d / "run"), *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ["PATH"], "HOME": str(home)})

    return make, run, home


def test_the_runner_runs_the_script_with_the_node_values_in_the_workdir(stepdir):
    make, run, home = stepdir
    d = make('echo "$NID $IHN $RAY_HEAD_IP $(pwd)"; echo to-stderr >&2; exit 3')
    proc = run(d)
    assert proc.stdout == "ran\n"
    assert (d / "exit").read_text() == "3\n"
    assert (d / "log").read_text() == f"1 false 10.0.0.1 {home}\nto-stderr\n"
    assert oct((d / "log").stat().st_mode & 0o777) == "0o600"


def test_the_runner_skips_by_creates_or_unless_and_check_only_looks(stepdir, tmp_path):
    make, run, _ = stepdir
    marker = tmp_path / "done.1"
    d = make("touch " + str(marker), creates=str(tmp_path / "done.$NID"))
    assert run(d, "--check").stdout == "skip=no\n" and not marker.exists()
    assert run(d).stdout == "ran\n" and marker.exists()
    assert run(d).stdout == "skip=creates\n"
    d = make("exit 0", unless='[ "$NID" = 1 ]')
    assert run(d, "--check").stdout == "skip=unless\n"


def test_the_runner_ends_a_script_at_its_timeout(stepdir):
    make, run, _ = stepdir
    d = make("echo started; sleep 30", timeout=1)
    # The runner hands GPUFAB_TIMEOUT to timeout(1) as it is: a fifth of the shortest one gpufab writes.
    env = (d / "env").read_text()
    assert "GPUFAB_TIMEOUT=1\n" in env
    (d / "env").write_text(env.replace("GPUFAB_TIMEOUT=1\n", "GPUFAB_TIMEOUT=0.2\n"))
    proc = run(d)
    assert proc.stdout == "ran\n" and (d / "exit").read_text() == "124\n"
    step = plan.UserStep("prep", "", "prep.sh", timeout=1)
    assert plan.failure_reason(step, 124, ["started"]) == "prep.sh timed out after 1s: started"


# --------------------------------------------------------------------------- apply, facts in, commands out


def settings(**entry) -> plan.ScriptSettings:
    return plan.ScriptSettings(plan.UserStep("prep", "#!/bin/sh\necho hi\n", "prep.sh", **entry))


INV = parse_inventory("""
nodes:
  - {name: node1, public: 203.0.113.1, private: 10.0.0.1}
  - {name: node2, public: 203.0.113.2, private: 10.0.0.2}
""")
RUNNER = f"{HOME}/{plan.STATE_DIR}/prep/run"


def remote(**kw):
    r = FakeRemote([(r'echo "home=\$home"', f"home={HOME}\n", 0), (r"==log", "exit=0\n==log\nhi\n", 0),
                    (f"^'?{RUNNER}'?$", "ran\n", 0)], user="gpu", the_node=INV.by_name("node2"), **kw)
    return r


def said():
    lines = []
    return lines, lambda node, text: lines.append((node.name, text))


def test_first_run_installs_the_files_as_the_user_and_runs_it_then_a_guard_skips_it():
    r = remote()
    lines, say = said()
    out = plan.apply(r, settings(creates="/mnt/shared/x"), INV, say)
    assert out.changes[0] == f"installed prep.sh as ~/{plan.STATE_DIR}/prep/script"
    assert out.changes[1].startswith("ran prep.sh (exit 0,") and out.value.state == "ran"
    assert r.files[f"~/{plan.STATE_DIR}/prep/script"].mode == 0o700
    env = r.files[f"~/{plan.STATE_DIR}/prep/env"]
    assert env.mode == 0o600 and env.owner == "gpu"
    assert "GPUFAB_CREATES=/mnt/shared/x" in r.files[f"~/{plan.STATE_DIR}/prep/env"].content
    assert r.changes == []  # nothing as root: the files are the user's, the script runs as the user
    assert "NPROC_PER_NODE=1" in r.files[f"~/{plan.STATE_DIR}/prep/env"].content
    # The node now has the files (their digests in the facts) and the runner says the guard holds.
    digests = "".join(f"{n}={plan.sha256(r.files[f'~/{plan.STATE_DIR}/prep/{n}'].content)}\n"
                      for n in ("run", "script", "env"))
    r.answer(r'echo "home=\$home"', f"home={HOME}\n{digests}").answer(f"^'?{RUNNER}'?$", "skip=creates\n")
    again = plan.apply(r, settings(creates="/mnt/shared/x"), INV, say)
    assert again.changes == [] and again.notes == ["prep: skipped, /mnt/shared/x exists (creates)"]
    assert len(r.home_written) == 3 and lines == []


def test_a_failing_script_fails_the_node_with_its_last_log_line():
    r = remote().answer(r"==log", "exit=3\n==log\nstep one\nno data on node2\n")
    with pytest.raises(HostError) as err:
        plan.apply(r, settings(), INV, said()[1])
    assert err.value.reason == "prep.sh exited 3: no data on node2"
    assert err.value.value.tail == ["step one", "no data on node2"] and err.value.changes[0].startswith("installed")


def test_sudo_runs_the_runner_through_sudo():
    r = remote()
    plan.apply(r, settings(sudo=True), INV, said()[1])
    assert any(c.endswith("/prep/run'") or c.endswith("/prep/run") for c in r.commands)


def test_dry_run_says_what_would_run_and_changes_nothing():
    r = remote(dry_run=True)
    out = plan.apply(r, settings(), INV, said()[1])
    assert out.changes[-1] == "would run prep.sh on node2, every time (no creates/unless)"
    assert r.home_written == [] and not r.sent(RUNNER + "'?$")
    r = remote(dry_run=True).answer(r"^\[ -e ", "", 0)
    out = plan.apply(r, settings(creates="/mnt/done"), INV, said()[1])
    assert out.notes == ["prep: skipped, /mnt/done exists (creates)"] and out.value.state == "skipped"


def test_detached_is_started_as_a_unit_and_waited_for_with_progress(monkeypatch):
    monkeypatch.setattr(plan, "POLL", 0)
    monkeypatch.setattr(plan, "SAY_EVERY", 0)
    r = remote().answer(r"--check", "skip=no\n").answer(r"==log", "running=yes\n==log\nhalf way\n")
    r.after(r"==log", r"==log", "exit=0\n==log\nhalf way\ndone\n")
    lines, say = said()
    out = plan.apply(r, settings(detached=True), INV, say, stamp="20261122-1")
    start = r.sent("systemd-run")[0]
    assert "gpufab-step-prep-20261122-1 gpu /home/gpu" in start and start.endswith(f"{RUNNER}")
    assert ("node2", "prep: half way") in lines and out.value.state == "ran"


class Clock:
    """`time` for the scripts module: each reading a quarter second later, and sleeps that take no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 0.25
        return self.now

    def sleep(self, seconds: float) -> None:
        pass

    def __getattr__(self, name: str):  # strftime and the rest: the real ones
        return getattr(time, name)


def test_detached_that_dies_without_status_or_never_ends_fails_in_bounded_time(monkeypatch):
    monkeypatch.setattr(plan, "POLL", 0)
    monkeypatch.setattr(plan, "GRACE", 0)
    monkeypatch.setattr(plan, "time", Clock())  # the 1 s timeout below passes in four polls, not in a second
    r = remote().answer(r"--check", "skip=no\n").answer(r"==log", "running=no\n==log\n")
    with pytest.raises(HostError, match="stopped without an exit status"):
        plan.apply(r, settings(detached=True), INV, said()[1])
    r = remote().answer(r"--check", "skip=no\n").answer(r"==log", "running=yes\n==log\nzzz\n")
    with pytest.raises(HostError, match="still running after 1s"):
        plan.apply(r, settings(detached=True, timeout=1), INV, said()[1])


def test_a_run_still_going_from_an_earlier_bootstrap_is_waited_for_not_started_again(monkeypatch):
    monkeypatch.setattr(plan, "POLL", 0)
    r = remote().answer(r'echo "home=\$home"', f"home={HOME}\nrunning=yes\n")
    lines, say = said()
    out = plan.apply(r, settings(detached=True), INV, say)
    assert not r.sent("systemd-run") and r.home_written == []
    assert out.changes[0] == "waited for the run an earlier gpufab started"
    assert lines[0] == ("node2", "prep: still running from an earlier run; waiting for it")


def test_the_nodes_own_gpu_count_is_nproc_per_node_unless_the_inventory_says():
    r = remote().answer(r'echo "home=\$home"', f"home={HOME}\ngpus=8\n")
    plan.apply(r, settings(), INV, said()[1])
    assert "NPROC_PER_NODE=8" in r.files[f"~/{plan.STATE_DIR}/prep/env"].content


def test_a_dry_run_does_not_wait_for_a_run_still_going():
    r = remote(dry_run=True).answer(r'echo "home=\$home"', f"home={HOME}\nrunning=yes\n")
    out = plan.apply(r, settings(detached=True), INV, said()[1])
    assert out.notes == ["prep: still running from an earlier run"] and not r.sent("==log")


def test_a_sudo_step_runs_only_root_s_own_files_never_what_the_user_can_write():
    """Issue 32, item 4: root ran ~/.local/state/gpufab/steps/*/run, which the SSH user (a Ray task) can replace."""
    root_dir = f"{plan.ROOT_STATE_DIR}/prep"
    r = remote().answer(rf"^'?{root_dir}/run'?$", "ran\n")
    out = plan.apply(r, settings(sudo=True), INV, said()[1])
    assert out.changes[0] == f"installed prep.sh as {root_dir}/script"
    assert r.home_written == []
    written = {c.file.path: c.file for c in r.written}
    assert sorted(written) == [f"{root_dir}/env", f"{root_dir}/run", f"{root_dir}/script"]
    assert all(f.owner == "root" and f.group == "root" for f in written.values())
    assert written[f"{root_dir}/run"].mode == 0o700 and written[f"{root_dir}/env"].secret
    assert any(c.startswith("install -d -m 0700 -o root -g root") for c in r.changes)
    assert r.sent(rf"^'?{root_dir}/run'?$") and not r.sent(f"^'?{RUNNER}'?$")
    # Whatever root runs or reads for this step is root's, never in the user's home.
    assert not [c for c in r.as_root if HOME in c and "getent" not in c and "GPUFAB" not in c]
    assert out.notes == [f"log {root_dir}/log"]


def test_a_detached_step_removes_its_last_exit_file_as_its_own_user(tmp_path):
    planted = tmp_path / "victim"
    planted.mkdir()
    (planted / "exit").write_text("keep")
    (tmp_path / "d").symlink_to(planted)
    # The user's step directory is a link to somewhere only root may write: the user's rm cannot go there.
    planted.chmod(0o755)
    script = plan.START_SCRIPT.replace("[ -d /run/systemd/system ]", "false").replace("nohup setsid", "true")
    assert "systemd/system" not in script and "nohup setsid" not in script
    done = subprocess.run(["sh", "-c", script, "gpufab", "u", "nobody", "/", str(tmp_path / "d/run")],
                          capture_output=True, text=True, timeout=30)
    assert (planted / "exit").read_text() == "keep", done.stderr
