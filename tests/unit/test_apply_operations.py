"""The cluster operations' node code (run.detached / run.kill, gpu.status) against a fake node."""

import pytest

from fabfile.core.errors import HostError
from fabfile.core.fanout import FAILED, OK
from fabfile.ops import detached
from fabfile.ops.shared import gpu

from fakes import FakeRemote


def test_detached_start_names_how_it_runs_and_its_log():
    remote = FakeRemote([(r"systemd-run", "how=systemd unit gpufab-run-1.service\nlog=/home/gpu/x.log\n", 0)], user="gpu")
    out = detached.start_detached(remote, "gpufab-run-1", "x.log", "python train.py")
    assert out.changes == ["started (systemd unit gpufab-run-1.service)"] and out.value == "/home/gpu/x.log"
    assert remote.commands[0].endswith("gpufab-run-1 x.log gpu python train.py")
    remote.answer(r"systemd-run", "Failed to start transient service unit", 1)
    with pytest.raises(HostError, match="could not start it: fake: failed"):
        detached.start_detached(remote, "gpufab-run-1", "x.log", "python train.py")


def test_kill_lists_then_signals_exactly_the_listed_pids_and_names_survivors():
    remote = FakeRemote([(r"pgrep", "101 python train.py\n102 python train.py --rank 1\n", 0)])
    listed = detached.list_matches(remote, "train.py").value
    assert [m.pid for m in listed] == [101, 102]
    remote.answer(r"kill", "signalled 101\nsignalled 102\ngone 101\ngone 102\n")
    out = detached.kill_matches(remote, "TERM", "train.py", [101, 102])
    assert out.changes == ["SIGTERM to 2 processes"] and remote.commands[-1].endswith("TERM train.py 101 102")
    remote.answer(r"kill", "signalled 101\nalive 101\n")
    with pytest.raises(HostError, match="still running after SIGTERM: 101"):
        detached.kill_matches(remote, "TERM", "train.py", [101])


def test_gpu_query_reads_every_gpu_and_names_a_node_without_any():
    csv = "0, NVIDIA H100 80GB HBM3, 1024, 81559, 3\n1, NVIDIA H100 80GB HBM3, 0, 81559, 0\n"
    found = gpu.query_gpus(FakeRemote([(r"nvidia-smi", csv, 0)]), "node1", 10)
    assert found.status == OK and [g.index for g in found.value] == ["0", "1"]
    none = gpu.query_gpus(FakeRemote([(r"nvidia-smi", gpu.NO_SMI, 0)]), "node1", 10)
    assert none.value is None and "nvidia-smi not found" in none.reason
    broken = gpu.query_gpus(FakeRemote([(r"nvidia-smi", "NVIDIA-SMI has failed", 9)]), "node1", 10)
    assert broken.status == FAILED and broken.exit_code == 9


def test_versions_table_keeps_a_mismatched_node_and_stars_its_odd_value():
    from fabfile.core.fanout import HostResult
    from fabfile.ray import versions_table
    from fakes import node

    same = {"python": "3.11.2", "ray": "2.60.0", "torch": None}
    results = [HostResult(node("node1"), OK, value=same), HostResult(node("node2", role="worker"), OK, value=same),
               HostResult(node("node3", role="worker"), FAILED, 1, reason="ray 2.59.0 differs from the other nodes",
                          value={**same, "ray": "2.59.0"})]
    table = versions_table(results)
    assert "*2.59.0*" in table and "mismatch: ray differs on node3 (Ray will not join these)" in table
