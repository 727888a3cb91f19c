"""Shared storage where the kernel has no NFS: sshfs chosen by `storage: auto`, proven end to end."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from helpers import cli

from .conftest import LAB_INVENTORY, on_host
from .test_bootstrap import progress, reset_lab

WORKERS = ("node2", "node3")
REPORT = "auto.report.json"
#: What storage.setup may touch, per node, and must give back on storage.unmount.
TRACES = {
    "node1": "sha256sum /root/.ssh/authorized_keys; ls -d /etc/gpufab/sftp /var/lib/gpufab/sftp "
             "/etc/systemd/system/gpufab-sftp.service 2>&1; true",
    "node2": "sha256sum /etc/fstab; ls -d /etc/gpufab/sshfs /mnt/shared 2>&1; findmnt -rn /mnt/shared; true",
    "node3": "sha256sum /etc/fstab; ls -d /etc/gpufab/sshfs /mnt/shared 2>&1; findmnt -rn /mnt/shared; true",
}


def traces() -> dict:
    return {n: on_host(n, cmd).stdout for n, cmd in TRACES.items()}


@pytest.fixture(scope="module")
def auto(lab, tmp_path_factory):
    """A fresh lab and its inventory, which names no backend (`auto` is the default); its state before any storage."""
    reset_lab()
    inventory = tmp_path_factory.mktemp("storage") / "auto.yaml"
    # Storage alone: the SSH mesh would add the cluster key to root's authorized_keys, which TRACES compare.
    inventory.write_text(LAB_INVENTORY.read_text().replace("vars:\n", "vars:\n  mesh: false\n", 1))
    assert "storage:" not in inventory.read_text()
    return {"env": {**lab, "GPUFAB_INVENTORY": str(inventory)}, "dir": inventory.parent, "before": traces()}


def mounted(node: str) -> str:
    return on_host(node, "findmnt -rn -o SOURCE,FSTYPE /mnt/shared", check=False).stdout.strip()


def test_bootstrap_with_auto_picks_sshfs_and_mounts_the_head_share(auto):
    proc = cli("inv", "bootstrap", env=auto["env"], timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "auto: NFS unavailable (node1: this kernel" in proc.stdout and "every worker has FUSE" in proc.stdout
    for node in WORKERS:
        assert mounted(node) == "gpufab-share@198.19.0.11:/share fuse.sshfs"
        assert on_host(node, "grep -c fuse.sshfs /etc/fstab").stdout.strip() == "1"
    report = json.loads((auto["dir"] / REPORT).read_text())
    check = next(c for c in report["checks"] if c.startswith("Storage"))
    assert check.startswith("Storage (sshfs): round trip 2/2 workers read the head's token (node1:/mnt/shared")
    assert re.search(r"slowest worker: write \d+ MiB/s, read \d+ MiB/s", check), check
    rows = {r["node"]: r["nfs"] for r in report["nodes"]}
    assert rows == {"node1": "sshfs shared, round trip ok", "node2": "sshfs mounted, round trip ok",
                    "node3": "sshfs mounted, round trip ok"}
    on_host("node1", "echo from-the-head > /mnt/shared/hello")
    assert on_host("node3", "cat /mnt/shared/hello").stdout == "from-the-head\n"


def test_second_bootstrap_changes_nothing_and_adds_no_key_or_line(auto):
    before = traces()
    proc = cli("inv", "bootstrap", env=auto["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(progress(proc.stdout).values()) == {"ok"}, proc.stdout
    assert traces() == before
    assert on_host("node1", "grep -c gpufab-sshfs@ /etc/gpufab/sftp/authorized_keys").stdout.strip() == "2"
    # The login sshd's keys: none of the workers' (those would reach every file of the SSH user).
    assert on_host("node1", "grep -c gpufab-sshfs@ /root/.ssh/authorized_keys", check=False).stdout.strip() == "0"


def test_storage_setup_task_agrees_and_refuses_nfs_clearly(auto):
    proc = cli("inv", "storage.setup", "--backend", "auto", env=auto["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("storage: sshfs (auto: NFS unavailable (node1: this kernel")
    assert "storage.setup (sshfs): 3 hosts: 0 changed, 3 ok, 0 failed" in proc.stdout
    nfs = cli("inv", "storage.setup", "--backend", "nfs", env=auto["env"])
    assert nfs.returncode == 1 and nfs.stderr.startswith("storage.setup: NFS unavailable: node1: this kernel")
    assert "Traceback" not in nfs.stderr


SFTP_AS_NODE2 = ("-i /etc/gpufab/sshfs/id_ed25519 -o UserKnownHostsFile=/etc/gpufab/sshfs/known_hosts "
                 "-o BatchMode=yes")


def test_a_workers_key_reaches_the_share_and_no_other_file_on_the_head(auto):
    """A hostile worker holds its own sshfs key: it must not read /etc/hostname on the head, by any path."""
    on_host("node1", "ln -sfn /etc/hostname /mnt/shared/planted && echo shared > /mnt/shared/mine")
    try:
        # Through the SFTP service: chrooted to a directory holding only the share.
        by_path = on_host("node2", f"echo 'get /etc/hostname /tmp/got' | sftp -P 2222 {SFTP_AS_NODE2} gpufab-share@198.19.0.11; "
                                   "cat /tmp/got", check=False)
        assert 'File "/etc/hostname" not found' in by_path.stdout + by_path.stderr and "node1" not in by_path.stdout
        tree = on_host("node2", f"echo 'ls -a /' | sftp -P 2222 {SFTP_AS_NODE2} gpufab-share@198.19.0.11", check=False).stdout
        assert tree.split()[-3:] == ["/.", "/..", "/share"], tree
        by_link = on_host("node2", f"echo 'get /share/planted /tmp/got' | sftp -P 2222 {SFTP_AS_NODE2} "
                                   "gpufab-share@198.19.0.11; cat /tmp/got /mnt/shared/planted", check=False)
        assert "node1" not in by_link.stdout, by_link.stdout
        assert on_host("node2", "cat /mnt/shared/mine").stdout == "shared\n"  # the share itself: yes
        # No shell, no command, on the service.
        shell = on_host("node2", f"ssh -p 2222 {SFTP_AS_NODE2} gpufab-share@198.19.0.11 cat /etc/hostname", check=False)
        assert shell.returncode != 0 and "node1" not in shell.stdout
        assert "This service allows sftp connections only." in shell.stdout + shell.stderr
        # The head's login sshd does not take the key at all.
        login = on_host("node2", "ssh -F /dev/null -i /etc/gpufab/sshfs/id_ed25519 -o UserKnownHostsFile=/tmp/kh22 "
                                 "-o StrictHostKeyChecking=accept-new -o BatchMode=yes root@198.19.0.11 "
                                 "cat /etc/hostname; rc=$?; rm -f /tmp/kh22; exit $rc", check=False)
        assert login.returncode == 255 and "Permission denied (publickey" in login.stderr and "node1" not in login.stdout
        # node3's key from node2's address is refused outright (from= restriction).
        key3 = on_host("node3", "cat /etc/gpufab/sshfs/id_ed25519").stdout
        on_host("node2", f"umask 077; printf '%s' '{key3}' > /tmp/k3")
        stolen = on_host("node2", "sftp -P 2222 -i /tmp/k3 -o UserKnownHostsFile=/etc/gpufab/sshfs/known_hosts "
                                  "-o BatchMode=yes -b /dev/null gpufab-share@198.19.0.11; rc=$?; rm -f /tmp/k3; exit $rc",
                         check=False)
        assert stolen.returncode != 0 and "Permission denied" in stolen.stderr
    finally:
        on_host("node1", "rm -f /mnt/shared/planted /mnt/shared/mine")
        on_host("node2", "rm -f /tmp/got")


def test_storage_verify_reports_round_trip_and_throughput(auto):
    proc = cli("inv", "storage.verify", env=auto["env"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("storage: sshfs (mounted on the workers)\n")  # read from them, not a default
    for node in WORKERS:
        assert re.search(rf"^{node}\s+ok\s.*read the head's token through /mnt/shared; 64 MiB write \d+ MiB/s, "
                         r"read \d+ MiB/s", proc.stdout, re.M), proc.stdout
    assert "storage.verify (sshfs): 3 hosts: 0 changed, 3 ok, 0 failed" in proc.stdout
    # The check leaves its token only (and the shared Hugging Face cache the storage step made).
    assert on_host("node1", "ls -A /mnt/shared").stdout.split() == [".cache", ".gpufab-verify", "hello"]


def test_symlinks_planted_in_the_share_are_never_followed_by_root(auto):
    """Every node can write the share: a name gpufab writes there as root may be planted as a link."""
    on_host("node1", "echo precious > /root/precious && ln -sfn /root/precious /mnt/shared/.gpufab-verify && "
                     "ln -sfn /root/precious /mnt/shared/.gpufab-bench-head")
    on_host("node2", "echo precious > /root/precious && ln -sfn /root/precious /mnt/shared/.gpufab-bench-node2")
    proc = cli("inv", "storage.verify", env=auto["env"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for node in ("node1", "node2"):
        assert on_host(node, "cat /root/precious; rm /root/precious").stdout == "precious\n"
    assert on_host("node1", "find /mnt/shared -maxdepth 1 -type l").stdout == ""


def test_rebooted_worker_mounts_the_share_again_from_fstab(auto):
    for step in ("lab.poweroff", "lab.poweron"):
        proc = cli("inv", step, "node2")
        assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 60
    while mounted("node2") != "gpufab-share@198.19.0.11:/share fuse.sshfs" and time.monotonic() < deadline:
        time.sleep(1)
    assert mounted("node2") == "gpufab-share@198.19.0.11:/share fuse.sshfs"
    assert on_host("node2", "cat /mnt/shared/hello").stdout == "from-the-head\n"


def test_as_the_sudo_user_the_share_is_that_users_on_every_node(auto, tmp_path):
    """Login `gpu` with password sudo: the service admits gpu only, and files written through a mount are gpu's."""
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(Path(auto["env"]["GPUFAB_INVENTORY"]).read_text().replace("  user: root\n", "  user: gpu\n"))
    env = {**auto["env"], "GPUFAB_INVENTORY": str(inventory), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    try:
        proc = cli("inv", "storage.setup", env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for node in WORKERS:
            assert mounted(node) == "gpu@198.19.0.11:/share fuse.sshfs", node  # the gpufab-share@ mount was replaced
        assert "AllowUsers gpu" in on_host("node1", "cat /etc/gpufab/sftp/sshd_config").stdout.splitlines()
        on_host("node3", "su gpu -c 'echo from-node3 > /mnt/shared/by-gpu'")
        assert on_host("node1", "stat -c '%U %a' /mnt/shared /mnt/shared/by-gpu").stdout.split("\n")[:2] == \
            ["gpu 755", "gpu 644"]
        verify = cli("inv", "storage.verify", env=env, timeout=600)
        assert verify.returncode == 0 and "storage.verify (sshfs): 3 hosts: 0 changed, 3 ok" in verify.stdout, \
            verify.stdout + verify.stderr
        # The workers' keys as before: the share's account of the root login is not let in any more.
        old = on_host("node2", f"sftp -P 2222 {SFTP_AS_NODE2} -b /dev/null root@198.19.0.11", check=False)
        assert old.returncode != 0
    finally:
        on_host("node1", "rm -f /mnt/shared/by-gpu")
        back = cli("inv", "storage.setup", env=auto["env"], timeout=600)
        assert back.returncode == 0, back.stdout + back.stderr
    assert mounted("node2") == "gpufab-share@198.19.0.11:/share fuse.sshfs"


def test_unmount_leaves_no_trace(auto):
    on_host("node1", "rm -f /mnt/shared/hello /mnt/shared/.gpufab-verify")
    proc = cli("inv", "storage.unmount", env=auto["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert traces() == auto["before"]
    again = cli("inv", "storage.unmount", env=auto["env"])
    assert again.returncode == 0 and "0 changed, 3 ok" in again.stdout
    gone = cli("inv", "storage.verify", env=auto["env"])
    assert gone.returncode == 1
    assert gone.stderr.strip() == "storage.verify: nothing is mounted on /mnt/shared on node2, node3: run storage.setup"
