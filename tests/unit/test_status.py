"""`gpufab status` (issue 37): each step's probe as facts in, verdict out; the node's verdict from the dry
run's results; the share probe's remote program run here; the command's exit codes, text and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeRemote, node
from helpers import one_error_line
from inprocess import run_cli

from fabfile.core.chain import Run
from fabfile.core.fanout import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult
from fabfile.core.status import ClusterStatus, NodeStatus, Seen, StatusRun, verdict
from fabfile.ops import containers, doctor, limits, netenv, preflight, ray, storage
from fabfile.ops.chain import CHAIN
from fabfile.ops.storage.nfs import NfsPlan

HEAD = node("node1", "10.0.0.1")
WORKER = node("node2", "10.0.0.2", role="worker")
SHARE = NfsPlan(server="10.0.0.1", server_name="node1", export="/mnt/shared", mount="/mnt/shared", subnet=None)


# --------------------------------------------------------------------------- each step's probe


def test_gpu_doctor_probe_names_the_root_pass_problems():
    assert doctor.CHECK.status is doctor.seen  # carried by preflight: its status is the doctor's
    fine = doctor.Doctor(pci_gpus=0, smi_gpus=None, model="", driver="", cuda="", nvswitches=0, findings=())
    assert doctor.seen(fine) == Seen("GPUs none")
    bad = doctor.Doctor(pci_gpus=8, smi_gpus=7, model="H100", driver="550", cuda="12.4", nvswitches=0,
                        findings=(doctor.Finding(doctor.PROBLEM, "1 GPU missing", "reseat it"),))
    seen = doctor.seen(bad)
    assert seen.problems == (bad.problems[0].line(),) and seen.shown.startswith("GPUs 7 × H100")
    assert doctor.seen(None) == Seen("-")


def test_the_chains_preflight_says_what_its_carried_doctor_found_on_the_node():
    from types import SimpleNamespace
    step = next(s for s in CHAIN if s.name == preflight.NAME)
    bad = doctor.Doctor(pci_gpus=8, smi_gpus=7, model="H100", driver="550", cuda="12.4", nvswitches=0,
                        findings=(doctor.Finding(doctor.PROBLEM, "1 GPU missing", "reseat it"),))
    run = SimpleNamespace(value=lambda name, n: SimpleNamespace(looks={"doctor": bad}) if n is HEAD else None)
    assert step.status(run, SimpleNamespace(node=HEAD), None).problems == (bad.problems[0].line(),)
    assert step.status(run, SimpleNamespace(node=WORKER), None) == Seen("-")


def test_limits_probe_wants_the_nofile_the_step_sets():
    assert limits.limits_seen(65536, 65536) == Seen("nofile 65536")
    assert limits.limits_seen(1024, 65536) == Seen("nofile 1024", ("a login gets nofile 1024, not 65536",))


def test_limits_probe_reads_this_logins_ulimit():
    remote = FakeRemote([(r"^ulimit -n$", "4096\n", 0)])
    assert limits.STEP.status(None, remote, limits.LimitsSettings(65536)).problems == (
        "a login gets nofile 4096, not 65536",)


def test_netenv_probe_wants_the_file_and_the_nic_toward_the_head():
    text = "MASTER_ADDR=10.0.0.1\nNCCL_SOCKET_IFNAME=eth1\n"
    assert netenv.netenv_seen(text, "eth1") == Seen("NIC eth1")
    assert netenv.netenv_seen(None, "eth1") == Seen("missing", (f"no {netenv.ENV_FILE}",))
    assert netenv.netenv_seen(text, "ens5").problems == (
        f"{netenv.ENV_FILE} names NIC eth1; the node reaches the head over ens5",)
    assert netenv.netenv_seen("MASTER_ADDR=10.0.0.1\n", "eth1").problems == (
        f"{netenv.ENV_FILE} names NIC none; the node reaches the head over eth1",)


def test_containers_probe_wants_every_container_running():
    assert containers.containers_seen([("web", "running"), ("db", "running")]) == Seen("2/2 running")
    assert containers.containers_seen([("web", "running"), ("db", "exited")]) == Seen(
        "1/2 running", ("containers not running: db exited",))
    assert containers.containers_seen([]) == Seen("0/0 running")


@pytest.mark.parametrize("backend,who,facts,wanted", [
    ("sshfs", HEAD, {"dir": "yes", "unit": "active"}, Seen("sshfs shared")),
    ("sshfs", HEAD, {"dir": "no", "unit": "inactive"},
     Seen("sshfs shared", ("the export /mnt/shared is missing", "gpufab-sftp.service is inactive"))),
    ("nfs", HEAD, {"dir": "yes", "unit": "failed"}, Seen("nfs shared", ("nfs-server is failed",))),
    ("sshfs", WORKER, {"dir": "yes", "fstype": "fuse.sshfs", "live": "yes"}, Seen("sshfs mounted")),
    ("sshfs", WORKER, {"dir": "yes", "fstype": "", "live": "yes"},
     Seen("not mounted", ("/mnt/shared is not mounted",))),
    ("nfs", WORKER, {"dir": "no", "fstype": "nfs4", "live": "no"},
     Seen("nfs stale", ("/mnt/shared does not answer within 5 s (a stale mount?)",))),
    (None, WORKER, {}, Seen("unavailable")),
])
def test_share_probe_wants_the_export_served_and_each_mount_answering(backend, who, facts, wanted):
    assert storage.share_seen(backend, who, SHARE, facts) == wanted


def test_ray_probe_wants_every_node_alive_in_the_heads_cluster():
    alive = {"10.0.0.1": ray.RayNode("10.0.0.1", True, True, 2.0, 0.0, 1e9)}
    assert ray.membership_seen(alive, [HEAD, WORKER]) == {
        "node1": Seen("alive (head)"), "node2": Seen("not alive", ("not alive in the Ray cluster",))}


def test_the_share_probe_program_reads_a_directory_its_mount_and_a_unit(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"findmnt": 'echo fuse.sshfs', "systemctl": 'echo inactive; exit 3'}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(["sh", "-c", storage.STATUS_SCRIPT, "gpufab", str(tmp_path), "gpufab-sftp.service"],
                         capture_output=True, text=True, timeout=30, env=env).stdout
    assert out.splitlines() == ["dir=yes", "fstype=fuse.sshfs", "live=yes", "unit=inactive"]
    gone = subprocess.run(["sh", "-c", storage.STATUS_SCRIPT, "gpufab", str(tmp_path / "gone"), ""],
                          capture_output=True, text=True, timeout=30, env=env).stdout
    assert gone.splitlines() == ["dir=no", "fstype=fuse.sshfs", "live=no"]


def test_only_read_only_probes_are_declared_and_the_slow_checks_are_not_among_them():
    """Status must write nothing and be quick: the share's round trip, Ray's smoke tasks and the
    all-reduce are verify's, never a status probe."""
    probes = {s.name: (s.status is not None, s.status_cluster is not None) for s in CHAIN}
    assert {k for k, (one, _) in probes.items() if one} == {"preflight", "limits", "containers", "netenv", "storage"}
    assert {k for k, (_, across) in probes.items() if across} == {"ray"}


# --------------------------------------------------------------------------- a node's verdict


def results(**by_step):
    return {step: [r] for step, r in by_step.items()}


def test_a_well_node_has_no_problem_and_no_drift():
    found = verdict(["preflight", "netenv", "ray"],
                    results(preflight=HostResult(HEAD, OK), netenv=HostResult(HEAD, OK), ray=HostResult(HEAD, OK)),
                    HEAD, {"netenv": Seen("NIC eth1"), "ray": Seen("alive (head)")})
    assert found == NodeStatus("node1", True, {"netenv": Seen("NIC eth1"), "ray": Seen("alive (head)")}, {}, [])
    assert found.ok


def test_what_the_dry_run_would_change_is_drift_named_with_what():
    found = verdict(["preflight", "netenv", "ray"], results(
        preflight=HostResult(WORKER, OK), netenv=HostResult(WORKER, OK),
        ray=HostResult(WORKER, CHANGED, changes=["started gpufab-ray-worker.service"])),
        WORKER, {"ray": Seen("not alive", ("not alive in the Ray cluster",))})
    assert found.drift == {"ray": ["started gpufab-ray-worker.service"]}
    assert found.problems == ["ray: not alive in the Ray cluster",
                              "ray: drift, bootstrap would do: started gpufab-ray-worker.service"]


def test_an_unreachable_node_is_one_problem_and_a_failing_step_another():
    gone = verdict(["preflight", "ray"], results(preflight=HostResult(WORKER, UNREACHABLE, 255,
                                                                      reason="connection refused")), WORKER, {})
    assert (gone.reachable, gone.problems) == (False, ["unreachable: connection refused"])
    failed = verdict(["preflight", "ray"], results(
        preflight=HostResult(WORKER, OK), ray=HostResult(WORKER, FAILED, 1, reason="no private address")), WORKER, {})
    assert failed.problems == ["ray: no private address"]


def test_a_step_the_cluster_does_without_on_this_node_is_no_problem():
    found = verdict(["preflight", "storage"], results(
        preflight=HostResult(WORKER, OK), storage=HostResult(WORKER, SKIPPED, reason="unavailable on these kernels")),
        WORKER, {})
    assert found.ok


# --------------------------------------------------------------------------- the command


def canned(*nodes: NodeStatus) -> ClusterStatus:
    return ClusterStatus(list(nodes), ["netenv", "ray"], 1.25)


WELL = NodeStatus("a", True, {"netenv": Seen("NIC eth1"), "ray": Seen("alive (head)")})
DRIFTED = NodeStatus("a", True, {"netenv": Seen("NIC eth1"), "ray": Seen("alive (head)")},
                     {"netenv": ["updated /etc/gpufab/netenv.env"]},
                     ["netenv: drift, bootstrap would do: updated /etc/gpufab/netenv.env"])


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text("nodes:\n  - name: a\n    public: 198.18.0.250\n    private: 198.19.0.250\n")
    return path


def run_status(monkeypatch, inventory: Path, found: ClusterStatus, *args: str):
    module = sys.modules["fabfile.status"]  # the package's `status` is the task
    seen = {}

    def fake(run):
        seen["run"] = run
        return found

    monkeypatch.setattr(module, "status_of", fake)
    proc = run_cli("gpufab", "status", *args, env={"GPUFAB_INVENTORY": str(inventory)}, timeout=60)
    return proc, seen.get("run")


def test_status_exits_0_when_all_is_well_and_runs_the_chain_dry_side_by_side(monkeypatch, inventory):
    proc, run = run_status(monkeypatch, inventory, canned(WELL))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "status: 1 nodes: 1 well, 0 with problems; 1.2s; nothing was changed"
    assert "NIC eth1" in proc.stdout and "alive (head)" in proc.stdout
    assert isinstance(run, StatusRun) and isinstance(run, Run) and run.dry_run and run.side_by_side
    assert run.names[0] == "preflight" and run.names[-1] == "verify"
    assert not (inventory.parent / "hosts.report.json").exists()


def test_status_exits_1_naming_the_drift_and_json_has_the_same_answer(monkeypatch, inventory):
    proc, _ = run_status(monkeypatch, inventory, canned(DRIFTED))
    assert proc.returncode == 1
    assert "  a: netenv: drift, bootstrap would do: updated /etc/gpufab/netenv.env" in proc.stdout
    assert "status: 1 nodes: 0 well, 1 with problems (a)" in proc.stdout
    as_json, _ = run_status(monkeypatch, inventory, canned(DRIFTED), "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "ok": False, "seconds": 1.25, "columns": ["netenv", "ray"],
        "nodes": [{"node": "a", "ok": False, "reachable": True,
                   "seen": {"netenv": {"shown": "NIC eth1", "problems": []},
                            "ray": {"shown": "alive (head)", "problems": []}},
                   "drift": {"netenv": ["updated /etc/gpufab/netenv.env"]},
                   "problems": ["netenv: drift, bootstrap would do: updated /etc/gpufab/netenv.env"]}]}


@pytest.mark.parametrize("args,message", [
    (("--workers", "x"), "--workers"),
    (("--workers", "0"), "--workers"),
])
def test_bad_status_options_are_one_error_line(inventory, args, message):
    proc = run_cli("inv", "status", *args, env={"GPUFAB_INVENTORY": str(inventory)}, timeout=60)
    assert message in one_error_line(proc)


def test_inv_and_gpufab_both_spell_it_status(inventory):
    for tool in ("inv", "gpufab"):
        proc = run_cli(tool, "status", "--help", env={"GPUFAB_INVENTORY": str(inventory)}, timeout=60)
        assert proc.returncode == 0 and "--json" in proc.stdout and "read-only" in proc.stdout, proc.stdout


def test_status_runs_the_gpu_doctor_without_its_container_run(monkeypatch, tmp_path):
    """`docker run --gpus all` on every node is neither read-only nor quick: status leaves it to bootstrap."""
    path = tmp_path / "hosts.yaml"
    path.write_text("vars:\n  gpu_test_image: nvcr.io/nvidia/cuda:12.4.1-base\n"
                    "nodes:\n  - name: a\n    public: 198.18.0.250\n    private: 198.19.0.250\n")
    proc, run = run_status(monkeypatch, path, canned(WELL))
    assert proc.returncode == 0, proc.stderr
    assert run.settings["preflight"].checks["doctor"].image is None


def test_a_step_that_runs_every_time_by_design_is_not_drift():
    would = HostResult(WORKER, CHANGED, changes=["would run warmup.sh on node2, every time (no creates/unless)"])
    assert verdict(["preflight", "warmup"], results(preflight=HostResult(WORKER, OK), warmup=would),
                   WORKER, {}, routine={"warmup"}).ok
    assert not verdict(["preflight", "warmup"], results(preflight=HostResult(WORKER, OK), warmup=would),
                       WORKER, {}).ok
    from fabfile.ops import scripts
    from fabfile.core.inventory import parse_inventory
    inv = parse_inventory("nodes:\n  - {name: a, public: 198.18.0.250, private: 198.19.0.250}\n"
                          "steps:\n  - {name: always, command: 'true'}\n"
                          "  - {name: once, command: 'true', creates: /tmp/x}\n", "hosts.yaml")
    drifts = {s.name: s.drifts for s in scripts.with_user_steps(CHAIN, inv) if scripts.is_user_step(s)}
    assert drifts == {"always": False, "once": True}


def test_a_cluster_probe_that_hangs_or_drops_is_named_on_each_node_not_a_traceback():
    from types import SimpleNamespace
    from invoke.exceptions import CommandTimedOut
    from fabfile.core.chain import Step

    def hangs(run, nodes, settings):
        raise CommandTimedOut(SimpleNamespace(command="ray status", stdout="", stderr="", exited=-1), 60)

    step = Step("ray", settings=lambda *a: None, run=lambda *a: [], status_cluster=hangs)
    saw = {}
    probe = SimpleNamespace(settings={}, workers=None, _errors=[],
                            session=SimpleNamespace(connect_timeout=5, known_hosts=None),
                            _saw=lambda step, node, found: saw.setdefault(node, found))
    StatusRun._probe(probe, step, [HEAD, WORKER])
    assert probe._errors == []
    assert set(saw) == {"node1", "node2"} and all(s.shown == "failed" and s.problems for s in saw.values())
    assert saw["node1"].problems == ("command timed out after 60s",), saw


def test_a_probe_is_bounded_like_a_fact_not_like_a_step():
    from types import SimpleNamespace
    session = SimpleNamespace(connection=lambda n: object(), sudo_password=lambda n=None: None,
                              step_timeout=1800, fact_timeout=60)
    probe = SimpleNamespace(session=session, _lock=__import__("threading").Lock(), _own={},
                            remotes={"node1": SimpleNamespace(facts="the run's facts")})
    own = StatusRun._remote(probe, HEAD)
    assert own.timeout == 60 and own.facts == "the run's facts" and own.dry_run
