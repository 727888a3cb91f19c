"""A real Ray cluster on the lab: setup, proof of membership, idempotency, reboots, versions."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_node_setup import LAB_NICS, statuses

PRIVATE = {"node1": "198.19.0.11", "node2": "198.19.0.12", "node3": "198.19.0.13"}


@pytest.fixture(scope="module", autouse=True)
def netenv(lab):
    """Ray must start with each node's NCCL/Gloo environment in place."""
    proc = cli("inv", "netenv.setup", env=lab)
    assert proc.returncode == 0, proc.stdout


def unit_of(node: str) -> str:
    return "gpufab-ray-head" if node == "node1" else "gpufab-ray-worker"


def main_pids() -> dict:
    return {n: on_host(n, f"systemctl show {unit_of(n)} -p MainPID --value").stdout.strip() for n in NODES}


def test_ray_setup_builds_a_cluster_of_every_node(lab):
    proc = cli("inv", "ray.setup", env=lab, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert statuses(proc) == {n: "changed" for n in NODES}
    assert proc.stdout.count("alive in Ray") == 3
    status = cli("inv", "ray.status", env=lab)
    assert status.returncode == 0, status.stdout + status.stderr
    for node, ip in PRIVATE.items():
        assert re.search(rf"^{node}\s+{re.escape(ip)}\s+yes\s", status.stdout, re.M), status.stdout
    assert "ray: 3/3 inventory nodes alive" in status.stdout
    assert "ssh -L 8265:198.19.0.11:8265 root@198.18.0.11" in status.stdout
    # The dashboard listens on the private address only.
    listening = on_host("node1", "ss -ltnH 'sport = :8265'").stdout.split()
    assert "198.19.0.11:8265" in listening and "0.0.0.0:8265" not in listening
    # Ray runs with the node's netenv loaded (its own NIC).
    for node, nic in LAB_NICS.items():
        pid = on_host(node, "pgrep -o -f raylet/raylet").stdout.strip()
        env = on_host(node, f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout
        assert f"NCCL_SOCKET_IFNAME={nic}" in env.splitlines()


def test_second_setup_restarts_nothing(lab):
    before = main_pids()
    proc = cli("inv", "ray.setup", env=lab, timeout=600)
    assert proc.returncode == 0, proc.stdout
    assert statuses(proc) == {n: "ok" for n in NODES}
    assert not re.search(r"started|restarted|installed|created", proc.stdout)
    assert main_pids() == before


def test_smoke_runs_a_task_on_every_node(lab):
    proc = cli("inv", "ray.smoke", env=lab, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ray.smoke: 3 tasks ran on 3 distinct nodes" in proc.stdout
    assert {line.split()[1] for line in proc.stdout.splitlines() if re.match(r"^\s+\d+\s+node", line)} == set(NODES)


def test_a_changed_unit_restarts_only_that_node_which_rejoins(lab, tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace(
        "    private: 198.19.0.13\n", "    private: 198.19.0.13\n    vars:\n      gpus: 0\n"))
    before = main_pids()
    proc = cli("inv", "ray.setup", env={**lab, "GPUFAB_INVENTORY": str(inventory)}, timeout=600)
    assert proc.returncode == 0, proc.stdout
    assert statuses(proc) == {"node1": "ok", "node2": "ok", "node3": "changed"}
    assert "restarted gpufab-ray-worker.service" in proc.stdout
    assert "--num-gpus=0" in on_host("node3", "systemctl cat gpufab-ray-worker").stdout
    after = main_pids()
    assert after["node1"] == before["node1"] and after["node2"] == before["node2"]
    assert after["node3"] != before["node3"]
    back = cli("inv", "ray.setup", env=lab, timeout=600)
    assert back.returncode == 0 and statuses(back)["node3"] == "changed", back.stdout


def test_wait_names_a_dead_worker_and_a_rebooted_one_rejoins(lab, node3_off):
    start = time.monotonic()
    proc = cli("inv", "ray.wait", "--timeout", "15", env=lab, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    assert statuses(proc) == {"node1": "ok", "node2": "ok", "node3": "failed"}
    assert "node3: not in the cluster after 15s; last Ray log: none, node unreachable (connection refused)" in proc.stdout
    assert elapsed < 15 + 20
    on = cli("inv", "lab.poweron", "node3")
    assert on.returncode == 0
    # Nothing but systemd brings it back: the unit waits for the head and rejoins.
    back = cli("inv", "ray.wait", "--timeout", "120", env=lab, timeout=300)
    assert back.returncode == 0, back.stdout
    assert "3 ok" in back.stdout


def test_versions_flag_a_node_with_another_ray(lab):
    on_host("node3", "systemctl stop gpufab-ray-worker")
    on_host("node3", "/opt/gpufab/venv/bin/pip install -q --no-deps ray==2.59.0")
    try:
        proc = cli("inv", "ray.versions", env=lab)
        assert proc.returncode == 1
        assert re.search(r"^node3\s+3\.11\.\d+\s+\*2\.59\.0\*", proc.stdout, re.M), proc.stdout
        assert "mismatch: ray differs on node3 (Ray will not join these)" in proc.stdout
        assert "node3: ray 2.59.0 differs from the other nodes" in proc.stdout
        alias = cli("inv", "pyenv.check", env=lab)
        assert alias.returncode == 1 and "*2.59.0*" in alias.stdout
        refused = cli("inv", "ray.start", "--nodes", "node3", env=lab)
        assert refused.returncode == 1 and "ray 2.60.0 is not installed" in refused.stdout
    finally:
        fixed = cli("inv", "ray.install", "--nodes", "node3", env=lab, timeout=900)
        assert fixed.returncode == 0 and "installed ray[default]==2.60.0" in fixed.stdout, fixed.stdout
        on_host("node3", "systemctl start gpufab-ray-worker")
    assert cli("inv", "ray.versions", env=lab).returncode == 0
    assert cli("inv", "ray.wait", "--timeout", "120", env=lab, timeout=300).returncode == 0


def test_cluster_yaml_for_ray_up(lab, tmp_path):
    out = tmp_path / "cluster.yaml"
    proc = cli("inv", "ray.cluster-yaml", "--output", str(out), env=lab)
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(out.read_text())
    assert data["provider"] == {"type": "local", "head_ip": "198.18.0.11", "worker_ips": ["198.18.0.12", "198.18.0.13"]}
    assert data["auth"]["ssh_user"] == "root" and data["auth"]["ssh_private_key"].endswith("id_ed25519")
    assert "--node-ip-address=198.19.0.11" in data["head_start_ray_commands"][1]
    again = cli("inv", "ray.cluster-yaml", "--output", str(out), env=lab)
    assert "unchanged" in again.stdout


def test_ray_bad_input_is_one_line(lab):
    assert "not pinned as name==version" in one_error_line(cli("inv", "ray.install", "--extra", "torch", env=lab))
    assert "invalid Ray version" in one_error_line(cli("inv", "ray.install", "--version", "latest;rm", env=lab))


def test_stop_workers_then_head(lab):
    proc = cli("inv", "ray.stop", env=lab, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.count("stopped gpufab-ray-worker.service") == 2
    assert "stopped gpufab-ray-head.service" in proc.stdout
    for node in NODES:
        assert on_host(node, f"systemctl is-active {unit_of(node)}", check=False).stdout.strip() == "inactive"
    status = cli("inv", "ray.status", env=lab)
    assert status.returncode != 0 and "Traceback" not in status.stdout + status.stderr
    again = cli("inv", "ray.stop", env=lab)
    assert again.returncode == 0 and "0 changed, 3 ok" in again.stdout


def test_without_systemd_plain_ray_start_with_the_netenv(lab):
    head = cli("inv", "ray.start", "--head", "--no-systemd", env=lab, timeout=300)
    assert head.returncode == 0, head.stdout
    assert "ray start (head, no systemd)" in head.stdout
    workers = cli("inv", "ray.start", "--no-systemd", env=lab, timeout=300)
    assert workers.returncode == 0 and workers.stdout.count("ray start (worker, no systemd)") == 2, workers.stdout
    assert cli("inv", "ray.wait", "--timeout", "120", env=lab, timeout=300).returncode == 0
    pid = on_host("node2", "pgrep -o -f raylet/raylet").stdout.strip()
    assert "NCCL_SOCKET_IFNAME=ens14np0" in on_host("node2", f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
    again = cli("inv", "ray.start", "--head", "--no-systemd", env=lab)
    assert again.returncode == 0 and "Ray already running (not restarted)" in again.stdout
    stop = cli("inv", "ray.stop", "--force", env=lab, timeout=300)
    assert stop.returncode == 0 and stop.stdout.count("ray stop --force") == 3, stop.stdout
    assert on_host("node2", "pgrep -f raylet/raylet", check=False).returncode == 1
