"""Grow and shrink: a third node joins a bootstrapped pair, then `node.remove` takes it out again.

As the rented login does it: the `gpu` user with password sudo.
"""

from __future__ import annotations

import time

import pytest

from fabfile.core.inventory import without_node
from fabfile.ops.storage import sshfs

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, on_host
from .test_bootstrap import progress, reset_lab
from .test_reset import TRACE

SETUP_STEPS = ("limits", "docker", "netenv", "mesh", "storage", "ray")
#: node3 as gpufab knows it: its name, its addresses, its sshfs key.
NODE3 = "node3\\|198.19.0.13\\|198.18.0.13"
GPUFAB_FILES = ("/etc/gpufab /etc/nccl.conf /etc/systemd/system/gpufab-* /etc/exports.d /etc/hosts "
                "/home/gpu/.ssh/authorized_keys /home/gpu/.ssh/known_hosts /home/gpu/.ssh/config")


@pytest.fixture(scope="module")
def pair(lab, tmp_path_factory):
    """A fresh lab; inventories for node1+node2 and for all three, as the gpu user."""
    reset_lab()
    d = tmp_path_factory.mktemp("membership")
    three = LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n")
    (d / "two.yaml").write_text(without_node(three, "node3"))
    (d / "three.yaml").write_text(three)
    env = {**lab, "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    yield {"dir": d, "two": {**env, "GPUFAB_INVENTORY": str(d / "two.yaml")},
           "three": {**env, "GPUFAB_INVENTORY": str(d / "three.yaml")}, "node3": on_host("node3", TRACE).stdout}
    reset_lab()


def test_a_third_node_is_set_up_whole_and_the_others_only_where_it_concerns_them(pair):
    two = cli("inv", "bootstrap", env=pair["two"], timeout=1800)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "Ray: 2/2 nodes alive" in two.stdout
    assert on_host("node3", TRACE).stdout == pair["node3"]  # not touched

    units = {"node1": "gpufab-ray-head", "node2": "gpufab-ray-worker"}
    pids = {n: on_host(n, f"systemctl show {u} -p MainPID --value").stdout for n, u in units.items()}
    three = cli("inv", "bootstrap", env=pair["three"], timeout=1800)
    assert three.returncode == 0, three.stdout + three.stderr
    steps = progress(three.stdout)
    assert {steps[("node3", s)] for s in SETUP_STEPS} == {"changed"}, steps
    # The others learn the new node's name and host keys (mesh), and their Ray firewall lets its address in;
    # the head also authorizes its key for the share. Ray itself is not restarted anywhere.
    assert {s: steps[("node2", s)] for s in SETUP_STEPS} == {**{s: "ok" for s in SETUP_STEPS}, "mesh": "changed",
                                                             "ray": "changed"}, steps
    assert {s: steps[("node1", s)] for s in SETUP_STEPS} == {**{s: "ok" for s in SETUP_STEPS}, "storage": "changed",
                                                             "mesh": "changed", "ray": "changed"}
    assert {n: on_host(n, f"systemctl show {u} -p MainPID --value").stdout for n, u in units.items()} == pids
    assert "198.19.0.13" in on_host("node2", "nft list table inet gpufab_ray").stdout
    assert "SSH mesh: 6/6 node pairs" in three.stdout
    assert "Ray: 3/3 nodes alive" in three.stdout and "All-reduce: 3 nodes" in three.stdout
    assert on_host("node3", "findmnt -rn -o FSTYPE /mnt/shared").stdout.strip() == "fuse.sshfs"


def test_the_head_cannot_be_removed_and_a_stranger_is_named(pair):
    assert "node1 is the head" in one_error_line(cli("inv", "node.remove", "node1", env=pair["three"]))
    assert "no node named 'node9'" in one_error_line(cli("inv", "node.remove", "node9", env=pair["three"]))
    assert "name: node3" in (pair["dir"] / "three.yaml").read_text()


def test_node_remove_takes_the_third_node_out_and_leaves_nothing_of_it_on_the_others(pair):
    proc = cli("inv", "node.remove", "node3", env=pair["three"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpufab-lab" not in proc.stdout + proc.stderr
    inventory = (pair["dir"] / "three.yaml").read_text()
    assert "node3" not in inventory and inventory == (pair["dir"] / "two.yaml").read_text()
    status = cli("inv", "ray.status", env=pair["three"], timeout=120)
    assert status.returncode == 0 and "ray: 2/2 inventory nodes alive" in status.stdout, status.stdout + status.stderr
    # Nothing of node3 on the two that stay: no key, no address in any gpufab file.
    assert on_host("node1", f"grep -c {sshfs.KEY_COMMENT}node3 {sshfs.SFTP_KEYS} || true").stdout.strip() == "0"
    for node in ("node1", "node2"):
        found = on_host(node, f"grep -rl '{NODE3}' {GPUFAB_FILES} 2>/dev/null || true").stdout.strip()
        assert found == "", (node, found)
    # node3 itself is as rented: no unit, mount, fstab line or gpufab file.
    assert on_host("node3", TRACE).stdout == pair["node3"]
    # The two that stay still share and train.
    verify = cli("inv", "storage.verify", env=pair["three"], timeout=600)
    assert verify.returncode == 0 and "storage.verify (sshfs): 2 hosts: 0 changed, 2 ok" in verify.stdout, \
        verify.stdout + verify.stderr


def test_a_dead_worker_is_still_taken_off_the_head_and_the_inventory_and_named(pair):
    """The usual reason to remove a node: it died. Its own files cannot go; everything else does."""
    (pair["dir"] / "three.yaml").write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    back = cli("inv", "bootstrap", env=pair["three"], timeout=1800)
    assert back.returncode == 0 and "Ray: 3/3 nodes alive" in back.stdout, back.stdout + back.stderr
    off = cli("inv", "lab.poweroff", "node3")
    assert off.returncode == 0, off.stderr
    try:
        proc = cli("inv", "node.remove", "node3", env=pair["three"], timeout=600)
    finally:
        on = cli("inv", "lab.poweron", "node3")
        assert on.returncode == 0, on.stderr
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "node.remove: node3 removed from" in proc.stdout
    assert "0 failed, 1 unreachable (node3:" in proc.stdout, proc.stdout
    assert "node3" not in (pair["dir"] / "three.yaml").read_text()
    assert on_host("node1", f"grep -c {sshfs.KEY_COMMENT}node3 {sshfs.SFTP_KEYS} || true").stdout.strip() == "0"
    # A powered-off raylet says no goodbye: Ray's head counts it alive until its health checks fail, and
    # ray.status names it as alive outside the inventory meanwhile.
    deadline = time.monotonic() + 180
    while True:
        status = cli("inv", "ray.status", env=pair["three"], timeout=120)
        assert status.returncode == 0 and "ray: 2/2 inventory nodes alive" in status.stdout, status.stdout
        if "not in the inventory" not in status.stdout or time.monotonic() > deadline:
            break
        assert "also alive, not in the inventory: 198.19.0.13" in status.stdout, status.stdout
        time.sleep(5)
    assert "not in the inventory" not in status.stdout, status.stdout
    # node3 is back with its Ray unit still enabled (it was off when it was removed): it tries, and the
    # others' Ray firewall, closed to it by node.remove, keeps it out. It stays out.
    assert "198.19.0.13" not in on_host("node1", "nft list table inet gpufab_ray").stdout
    assert on_host("node3", "systemctl is-enabled gpufab-ray-worker.service").stdout.strip() == "enabled"
    for _ in range(6):
        time.sleep(10)
        status = cli("inv", "ray.status", env=pair["three"], timeout=120)
        assert status.returncode == 0 and "ray: 2/2 inventory nodes alive" in status.stdout, status.stdout
        assert "not in the inventory" not in status.stdout, status.stdout
