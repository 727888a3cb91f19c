"""The operator's own steps on the lab: where and when they run, their variables, guards, detached runs, retries.

Shared storage here is sshfs (the lab's kernels have no NFS server): the
head's step prepares data in the share, every node then writes its IDs into
it and the workers read the head's data through their mounts.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from helpers import cli, interrupt_when, one_error_line

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_bootstrap import progress
from .test_node_setup import LAB_NICS

HEAD_IP = "198.19.0.11"
STATE = ".local/state/gpufab/steps"

SCRIPTS = {
    "prep.sh": """\
        #!/bin/sh
        set -e
        mkdir -p /mnt/shared/prep /mnt/shared/ids
        echo "prepared on $NODE_NAME" > /mnt/shared/prep/data.txt
        """,
    "ids.sh": """\
        #!/bin/sh
        set -e
        grep -q prepared /mnt/shared/prep/data.txt   # the head's step came first
        echo "$NID $IHN $RAY_HEAD_IP" >> /mnt/shared/ids.txt
        touch "/mnt/shared/ids/$NID.done"
        """,
    "slow.sh": """\
        #!/bin/sh
        for i in 1 2 3; do echo "tick $i on $NODE_NAME"; sleep 2; done
        if [ "$NODE_NAME" = node2 ] && [ ! -e "$HOME/fixed" ]; then echo "no data on $NODE_NAME"; exit 3; fi
        echo "done on $NODE_NAME"
        """,
}

SHARED_STEPS = """\
    steps:
      - name: prep
        script: prep.sh
        where: head
        after: storage
        creates: /mnt/shared/prep/data.txt
      - script: ids.sh
        after: prep
        creates: /mnt/shared/ids/$NID.done
      - name: use
        command: cp /mnt/shared/prep/data.txt "$HOME/data.txt"
        where: workers
        after: ids
        creates: $HOME/data.txt
    """


def write_inventory(directory, name: str, steps: str, user: str = "root", extra_vars: str = "") -> dict:
    for script, body in SCRIPTS.items():
        (directory / script).write_text(textwrap.dedent(body))
    text = LAB_INVENTORY.read_text().replace("vars:\n", "vars:\n" + extra_vars)
    text = text.replace("  user: root", f"  user: {user}")
    path = directory / f"{name}.yaml"
    path.write_text(text + textwrap.dedent(steps))
    env = {"GPUFAB_INVENTORY": str(path)}
    if user != "root":
        env["INVOKE_SUDO_PASSWORD"] = "gpufab-lab"
    return env


@pytest.fixture(scope="module")
def shared(lab, tmp_path_factory):
    directory = tmp_path_factory.mktemp("steps")
    env = write_inventory(directory, "shared", SHARED_STEPS, extra_vars="  storage: sshfs\n")
    yield {"env": {**lab, **env}, "dir": directory}
    cli("inv", "storage.unmount", env={**lab, **env}, timeout=300)
    for node in NODES:
        on_host(node, f"rm -rf /root/{STATE} /root/data.txt /root/fixed /home/gpu/{STATE} /home/gpu/who.txt "
                      "/root/rootly.txt; rm -rf /mnt/shared/prep /mnt/shared/ids /mnt/shared/ids.txt", check=False)


ONLY = "storage,prep,ids,use"


def test_dry_run_lists_what_would_run_where_and_changes_nothing(shared):
    proc = cli("inv", "bootstrap", "--only", ONLY, "--dry-run", env=shared["env"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "steps: preflight, storage, prep, ids, use\n" in out
    node1, node2 = out[out.index("== node1"):out.index("== node2")], out[out.index("== node2"):out.index("== node3")]
    assert "- would run prep.sh on node1, unless /mnt/shared/prep/data.txt exists" in node1
    assert "prep:" not in node2 and "use:" not in node1
    assert "- would run ids.sh on node2, unless /mnt/shared/ids/1.done exists" in node2
    assert "- would run command on node2, unless /root/data.txt exists" in node2
    for node in NODES:
        assert on_host(node, f"ls /root/{STATE} 2>&1 || true").stdout.strip().endswith("No such file or directory")


def test_head_step_runs_first_then_every_node_writes_its_ids_into_the_share(shared):
    proc = cli("inv", "bootstrap", "--only", ONLY, env=shared["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert steps[("node1", "prep")] == "changed" and ("node2", "prep") not in steps and ("node3", "prep") not in steps
    assert {steps[(n, "ids")] for n in NODES} == {"changed"}
    assert {steps[(n, "use")] for n in ("node2", "node3")} == {"changed"} and ("node1", "use") not in steps
    lines = on_host("node1", "cat /mnt/shared/ids.txt").stdout.splitlines()
    assert sorted(lines) == [f"0 true {HEAD_IP}", f"1 false {HEAD_IP}", f"2 false {HEAD_IP}"]
    for node in ("node2", "node3"):
        assert on_host(node, "cat /root/data.txt").stdout == "prepared on node1\n"
    # The user's files: in the SSH user's home, the script 0700, its variables 0600.
    listing = on_host("node2", f"stat -c '%a %U %n' /root/{STATE}/ids/script /root/{STATE}/ids/env").stdout.split("\n")
    assert listing[0].startswith("700 root") and listing[1].startswith("600 root")
    report = json.loads((shared["dir"] / "shared.report.json").read_text())
    rows = {r["node"]: r for r in report["nodes"]}
    assert rows["node1"]["steps"] == "prep ran, ids ran" and rows["node2"]["steps"] == "ids ran, use ran"
    assert report["results"]["ids"]["node3"]["state"] == "ran"
    assert "Step ids (ids.sh, on all): 3 ran" in report["checks"]


def test_second_bootstrap_skips_every_step_through_creates_and_reports_ok(shared):
    proc = cli("inv", "bootstrap", "--only", ONLY, env=shared["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert {s for (n, step), s in steps.items() if step in ("prep", "ids", "use")} == {"ok"}, steps
    assert "bootstrap: 3 hosts: 0 changed, 3 ok, 0 failed, 0 unreachable" in proc.stdout
    assert len(on_host("node1", "cat /mnt/shared/ids.txt").stdout.splitlines()) == 3
    report = json.loads((shared["dir"] / "shared.report.json").read_text())
    assert report["results"]["ids"]["node2"]["skipped_because"] == "creates"
    assert {r["node"]: r["steps"] for r in report["nodes"]}["node3"] == "ids skipped, use skipped"


def test_a_detached_step_shows_progress_and_a_failure_on_one_node_is_retried_there_alone(shared):
    env = {**shared["env"], **write_inventory(shared["dir"], "slow", """\
        steps:
          - {script: slow.sh, detached: true, timeout: 120}
        """)}
    proc = cli("inv", "bootstrap", "--only", "slow", env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    # Progress from the log while it runs, then the end.
    assert re.search(r"^\[\s*[\d.]+s\] node3\s+slow\s+running\s+slow: tick \d on node3$", out, re.M), out
    steps = progress(out)
    assert [steps[(n, "slow")] for n in NODES] == ["changed", "failed", "changed"]
    assert "node2 failed at slow: slow.sh exited 3: no data on node2" in out
    assert "node2: step slow failed; last lines of ~/.local/state/gpufab/steps/slow/log:" in out
    assert "  | tick 3 on node2" in out and "  | no data on node2" in out
    assert "198.18.0.12 'tail -n 50 ~/.local/state/gpufab/steps/slow/log'" in out
    failed = (shared["dir"] / "slow.failed").read_text()
    assert "node2 198.18.0.12 slow: slow.sh exited 3" in failed and "node1" not in failed
    # It ran as a transient unit, which is gone; only node2 is retried, and passes once fixed.
    assert on_host("node2", "systemctl list-units --all 'gpufab-step-*' --no-legend").stdout.strip() == ""
    on_host("node2", "touch /root/fixed")
    again = cli("inv", "bootstrap", "--only", "slow", "--retry-failed", env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    steps = progress(again.stdout)
    assert steps == {("node2", "preflight"): "ok", ("node2", "slow"): "changed"}, steps
    assert on_host("node2", f"tail -n1 /root/{STATE}/slow/log").stdout == "done on node2\n"
    assert not (shared["dir"] / "slow.failed").exists()


def test_steps_as_the_sudo_user_run_as_that_user_in_its_home_and_as_root_when_asked(shared):
    env = {**shared["env"], **write_inventory(shared["dir"], "gpu", """\
        steps:
          - name: who
            command: 'id -un > who.txt; echo "$NID $IHN" >> who.txt'
            detached: true
            creates: $HOME/who.txt
          - {name: rootly, command: id -un > /root/rootly.txt, sudo: true, where: head}
        """, user="gpu")}
    proc = cli("inv", "bootstrap", "--only", "who,rootly", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for node, nid in (("node1", "0 true"), ("node2", "1 false"), ("node3", "2 false")):
        assert on_host(node, "cat /home/gpu/who.txt").stdout == f"gpu\n{nid}\n"
        assert on_host(node, "stat -c '%U %a' /home/gpu/who.txt /home/gpu/.local/state/gpufab/steps/who/script"
                       ).stdout.split("\n")[:2] == ["gpu 644", "gpu 700"]
    assert on_host("node1", "cat /root/rootly.txt").stdout == "root\n"
    assert on_host("node2", "ls /root/rootly.txt", check=False).returncode != 0
    again = cli("inv", "bootstrap", "--only", "who", env=env, timeout=600)
    assert again.returncode == 0 and progress(again.stdout)[("node3", "who")] == "ok", again.stdout


def test_script_run_ships_a_local_script_to_the_chosen_nodes(shared):
    script = shared["dir"] / "hello.sh"
    script.write_text('echo "hello $GREETING from $NODE_NAME rank $NODE_RANK of $NNODES on $NIC"\n')
    proc = cli("inv", "script.run", str(script), "--where", "workers", "--env", "GREETING=hi", env=shared["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "script.run hello: 2 hosts: 2 changed, 0 ok, 0 failed" in proc.stdout
    assert re.search(r"^node3\s+ran\s+0\s.*hello hi from node3 rank 2 of 3 on enp157s0f0np0$", proc.stdout, re.M)
    assert "node1" not in proc.stdout


def test_ctrl_c_while_waiting_stops_within_seconds_and_the_next_run_waits_for_the_same_run(shared):
    env = {**shared["env"], **write_inventory(shared["dir"], "long", """\
        steps:
          - {name: long, command: 'echo begun; sleep 15; echo finished', detached: true, timeout: 120}
        """)}
    proc, took = interrupt_when(["bootstrap", "--only", "long"], env, "long: started as", 3, timeout=30)
    out, err = proc.stdout, proc.stderr
    assert took < 8, (out, err)
    assert proc.returncode == 130 and err.strip().startswith("gpufab: interrupted (Ctrl-C)"), (out, err)
    assert "Traceback" not in out + err
    # The partial report and the failed-hosts file are written: every host was cut off in `long`.
    assert "bootstrap: 3 hosts: 0 changed, 0 ok, 3 failed" in out, out
    failed = (shared["dir"] / "long.failed").read_text()
    assert all(f"{n} 198.18.0.1{i + 1} long: interrupted (Ctrl-C)" in failed for i, n in enumerate(NODES)), failed
    assert json.loads((shared["dir"] / "long.report.json").read_text())["exit_code"] == 130
    # The step goes on by itself; the next run waits for that run instead of starting a second one.
    again = cli("inv", "bootstrap", "--only", "long", env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("long: still running from an earlier run; waiting for it") == 3, again.stdout
    for node in NODES:
        assert on_host(node, f"cat /root/{STATE}/long/log").stdout == "begun\nfinished\n"
        assert on_host(node, "systemctl list-units --all 'gpufab-step-*' --no-legend").stdout.strip() == ""


def test_a_step_sees_the_netenv_nic_and_the_secrets_and_never_prints_a_secret(shared):
    dotenv = shared["dir"] / "lab.env"
    dotenv.write_text("API_TOKEN=s3cr3t-value\n")
    env = {**shared["env"], **write_inventory(shared["dir"], "nic", """\
        steps:
          - name: nic
            command: 'test "$API_TOKEN" = s3cr3t-value && echo "$NIC $NCCL_SOCKET_IFNAME $NODE_RANK" > nic.txt'
        """)}
    proc = cli("inv", "bootstrap", "--only", "netenv,nic", "--secrets", "--env-file", str(dotenv), env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank, node in enumerate(NODES):
        assert on_host(node, "cat /root/nic.txt").stdout == f"{LAB_NICS[node]} {LAB_NICS[node]} {rank}\n"
    assert "s3cr3t" not in proc.stdout + proc.stderr + (shared["dir"] / "nic.report.json").read_text()
    for node in NODES:
        on_host(node, "rm -rf /etc/gpufab/netenv.env /etc/gpufab/secrets.env /etc/nccl.conf "
                      "/etc/profile.d/gpufab-netenv.sh /root/nic.txt")


@pytest.mark.parametrize("steps, message", [
    ("steps:\n  - {script: gone.sh}\n", "step 'gone': no such script"),
    ("steps:\n  - {script: slow.sh, where: gpus}\n", "where 'gpus' matches no node"),
    ("steps:\n  - {command: ls, name: Bad Name}\n", "name 'Bad Name' must be lowercase"),
])
def test_a_bad_step_is_one_error_line_and_touches_no_node(shared, steps, message):
    env = {**shared["env"], **write_inventory(shared["dir"], "bad", steps)}
    proc = cli("inv", "bootstrap", env=env)
    assert message in one_error_line(proc) and "bad.yaml:" in proc.stderr
    assert on_host("node2", f"ls /root/{STATE}/gone 2>&1 || true").stdout.strip().endswith("No such file or directory")


def test_script_run_bad_input_is_one_error_line(shared):
    assert "no such script" in one_error_line(cli("inv", "script.run", "/nonexistent.sh", env=shared["env"]))
    line = one_error_line(cli("inv", "script.run", str(shared["dir"] / "slow.sh"), "--env", "NOEQUALS",
                              env=shared["env"]))
    assert "'NOEQUALS' is not NAME=value" in line
