"""Node setup on real lab hosts: each task twice (changed, then ok, files byte-identical).

Tests run in file order on one lab: docker is installed before the tests
that need dockerd or iptables.
"""

from __future__ import annotations

import json
import re

import pytest

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, NODES, on_host, snapshot

LAB_NICS = {"node1": "enp27s0f0np0", "node2": "ens14np0", "node3": "enp157s0f0np0"}
#: This VM's processes may not raise their hard nofile above 20000 (no
#: CAP_SYS_RESOURCE), so lab hosts cannot take the default 65536.
LAB_NOFILE = "16384"


def statuses(proc) -> dict:
    """Node -> status from a step table."""
    out = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(node\d)\s+(ok|changed|failed|unreachable)\s", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def run_twice(lab, *args, files=(), env=None):
    """Run a task twice: changed everywhere, then ok everywhere with identical files."""
    env = {**lab, **(env or {})}
    first = cli("inv", *args, env=env, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert statuses(first) == {n: "changed" for n in NODES}, first.stdout
    before = snapshot(files)
    second = cli("inv", *args, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert statuses(second) == {n: "ok" for n in NODES}, second.stdout
    assert "0 changed, 3 ok, 0 failed" in second.stdout
    assert snapshot(files) == before
    assert "missing" not in before.values()
    return first, second


# --------------------------------------------------------------------------- limits

LIMIT_FILES = ("/etc/security/limits.d/90-gpufab-nofile.conf", "/etc/systemd/system.conf.d/90-gpufab-limits.conf",
               "/etc/systemd/system/docker.service.d/90-gpufab-limits.conf")


def test_limits_setup_is_seen_by_a_new_login(lab):
    first, second = run_twice(lab, "limits.setup", "--nofile", LAB_NOFILE, files=LIMIT_FILES)
    assert "systemctl daemon-reexec" in first.stdout and "daemon-reexec" not in second.stdout
    assert second.stdout.count(f"new login: nofile {LAB_NOFILE} (hard {LAB_NOFILE})") == 3
    for node in NODES:
        assert on_host(node, "ulimit -n").stdout.strip() == LAB_NOFILE
        text = on_host(node, f"cat {LIMIT_FILES[0]}").stdout
        assert len(re.findall(r"^\*\s+soft\s+nofile", text, re.M)) == 1
        assert on_host(node, "systemctl show -p DefaultLimitNOFILE --value").stdout.strip() == LAB_NOFILE


def test_limits_above_what_a_login_can_get_fail_clearly(lab):
    proc = cli("inv", "limits.setup", "--nofile", "50000", "--nodes", "node1", env=lab)
    assert proc.returncode == 1
    assert "a new login gets nofile" in proc.stdout and "use nofile <= 20000" in proc.stdout
    restore = cli("inv", "limits.setup", "--nofile", LAB_NOFILE, "--nodes", "node1", env=lab)
    assert restore.returncode == 0, restore.stdout


def test_bad_nofile_is_one_error_line(lab):
    assert "invalid nofile 'lots'" in one_error_line(cli("inv", "limits.setup", "--nofile", "lots", env=lab))


# --------------------------------------------------------------------------- docker


def test_official_docker_repo_unreachable_fails_clearly_and_leaves_no_source(lab):
    proc = cli("inv", "docker.install", "--source", "official", "--nodes", "node1", env=lab, timeout=600)
    assert proc.returncode == 1
    assert "cannot fetch Docker's apt key from https://download.docker.com/linux/debian/gpg" in proc.stdout
    assert "use --source distro" in proc.stdout
    assert on_host("node1", "ls /etc/apt/sources.list.d/docker.list /etc/apt/keyrings/docker.asc", check=False).returncode != 0


def test_docker_install_from_distro_then_skip(lab):
    first, second = run_twice(lab, "docker.install", "--source", "distro")
    assert first.stdout.count("installed docker.io") == 3
    assert second.stdout.count("already installed (docker.io") == 3
    for node in NODES:
        assert on_host(node, "systemctl is-active docker").stdout.strip() == "active"


def test_docker_configure_merges_and_restarts_only_on_change(lab):
    on_host("node2", """echo '{"debug": true}' > /etc/docker/daemon.json""")
    first, second = run_twice(lab, "docker.configure", files=("/etc/docker/daemon.json",))
    assert first.stdout.count("restarted docker") == 3 and "restarted" not in second.stdout
    node2 = json.loads(on_host("node2", "cat /etc/docker/daemon.json").stdout)
    assert node2["debug"] is True  # the unmanaged key survived
    assert node2["max-concurrent-downloads"] == 10 and node2["max-concurrent-uploads"] == 10
    for node in NODES:
        pools = json.loads(on_host(node, "docker info --format '{{json .DefaultAddressPools}}'").stdout)
        assert pools == [{"Base": "172.17.0.0/16", "Size": 24}, {"Base": "192.168.0.0/16", "Size": 24}]
    verify = cli("inv", "docker.verify", env=lab)
    assert verify.returncode == 0 and verify.stdout.count("pools 172.17.0.0/16 in /24s, 192.168.0.0/16 in /24s") == 3


def test_docker_verify_names_a_missing_container(lab):
    proc = cli("inv", "docker.verify", "--container", "trainer", env=lab)
    assert proc.returncode == 1
    assert proc.stdout.count("container trainer is not running") >= 3


def test_invalid_daemon_json_is_not_overwritten_without_force(lab):
    bad = '{"debug": true,\n}'
    on_host("node3", f"printf '%s' '{bad}' > /etc/docker/daemon.json")
    before = snapshot(["/etc/docker/daemon.json"])
    proc = cli("inv", "docker.configure", env=lab)
    assert proc.returncode == 1
    assert statuses(proc) == {"node1": "ok", "node2": "ok", "node3": "failed"}
    assert "node3: /etc/docker/daemon.json is not valid JSON (line 2 column 1" in proc.stdout
    assert "--force" in proc.stdout
    assert snapshot(["/etc/docker/daemon.json"]) == before
    forced = cli("inv", "docker.configure", "--force", "--nodes", "node3", env=lab)
    assert forced.returncode == 0 and statuses(forced) == {"node3": "changed"}
    assert on_host("node3", "cat /var/backups/gpufab/etc/docker/daemon.json").stdout == bad
    assert json.loads(on_host("node3", "cat /etc/docker/daemon.json").stdout)["max-concurrent-uploads"] == 10


def test_daemon_that_will_not_start_gets_its_old_file_back(lab, tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(LAB_INVENTORY.read_text() + "docker:\n  daemon:\n    bogus-key: 1\n")
    before = snapshot(["/etc/docker/daemon.json"], nodes=["node1"])
    proc = cli("inv", "docker.configure", "--nodes", "node1", env={**lab, "GPUFAB_INVENTORY": str(inventory)})
    assert proc.returncode == 1
    assert "dockerd did not come back with the new daemon.json" in proc.stdout
    assert "bogus-key" in proc.stdout and "previous file restored, docker restarted on it" in proc.stdout
    assert snapshot(["/etc/docker/daemon.json"], nodes=["node1"]) == before
    assert on_host("node1", "systemctl is-active docker").stdout.strip() == "active"


def test_docker_installed_after_limits_starts_with_their_dropin(lab):
    # limits.setup ran before docker.install (tests above): nothing is left to change.
    proc = cli("inv", "limits.setup", "--nofile", LAB_NOFILE, env=lab)
    assert proc.returncode == 0, proc.stdout
    assert "0 changed, 3 ok" in proc.stdout and "restarted docker" not in proc.stdout
    for node in NODES:
        assert on_host(node, "systemctl show docker -p LimitNOFILE --value").stdout.strip() == LAB_NOFILE
        pid = on_host(node, "systemctl show docker -p MainPID --value").stdout.strip()
        assert f"Max open files            {LAB_NOFILE}" in on_host(node, f"cat /proc/{pid}/limits").stdout


# --------------------------------------------------------------------------- netenv

NETENV_FILES = ("/etc/gpufab/netenv.env", "/etc/nccl.conf", "/etc/profile.d/gpufab-netenv.sh", "/etc/gpufab/secrets.env")
SECRET = "hf_s3cr3t-Value-9f8e7d"


def test_netenv_per_node_nic_and_secrets_never_shown(lab, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"HF_TOKEN={SECRET}\nWANDB_API_KEY=wandb-{SECRET}\n")
    first, second = run_twice(lab, "netenv.setup", "--secrets", "--env-file", str(dotenv), files=NETENV_FILES)
    for node, nic in LAB_NICS.items():
        env = on_host(node, "cat /etc/gpufab/netenv.env").stdout
        assert f"NCCL_SOCKET_IFNAME={nic}\n" in env and f"GLOO_SOCKET_IFNAME={nic}\n" in env
        assert "MASTER_ADDR=198.19.0.11\n" in env and "MASTER_PORT=29500\n" in env
        assert f"NCCL_SOCKET_IFNAME={nic}\n" in on_host(node, "cat /etc/nccl.conf").stdout
        assert on_host(node, "stat -c '%a %U' /etc/gpufab/secrets.env").stdout.strip() == "600 root"
        assert on_host(node, "bash -lc 'echo $NCCL_SOCKET_IFNAME $HF_TOKEN'").stdout.strip() == f"{nic} {SECRET}"
        # Nothing on the node logged it either.
        assert on_host(node, f"journalctl --no-pager | grep -c {SECRET}", check=False).stdout.strip() == "0"
    for proc in (first, second):
        assert SECRET not in proc.stdout + proc.stderr
        assert "secrets: HF_TOKEN, WANDB_API_KEY (values not shown)" in proc.stdout


def test_netenv_unknown_interface_fails_that_node_only(lab, tmp_path):
    inventory = tmp_path / "inv.yaml"
    text = LAB_INVENTORY.read_text().replace("    private: 198.19.0.13\n", "    private: 198.19.0.13\n    vars:\n      nic: eth9\n")
    assert "nic: eth9" in text
    inventory.write_text(text)
    before = snapshot(NETENV_FILES[:3])
    proc = cli("inv", "netenv.setup", env={**lab, "GPUFAB_INVENTORY": str(inventory)})
    assert proc.returncode == 1
    assert statuses(proc) == {"node1": "ok", "node2": "ok", "node3": "failed"}
    assert "interface eth9 (inventory nic) does not exist here; this node has: enp157s0f0np0, eth0" in proc.stdout
    assert snapshot(NETENV_FILES[:3]) == before


def test_netenv_bad_input_is_one_line(lab, tmp_path):
    assert "unknown netenv profile 'wifi'" in one_error_line(cli("inv", "netenv.setup", "--profile", "wifi", env=lab))
    missing = one_error_line(cli("inv", "netenv.setup", "--secrets", "--env-file", str(tmp_path / "none.env"), env=lab))
    assert "no such .env file" in missing


@pytest.fixture
def listeners(lab):
    """Something listening on 29500 and 6379 on every node, as Ray and torchrun would."""
    script = ("import socket, time\n"
              "socks = [socket.create_server(('0.0.0.0', p)) for p in (29500, 6379)]\n"
              "time.sleep(300)\n")
    for node in NODES:
        on_host(node, f"setsid python3 -c \"{script}\" </dev/null >/dev/null 2>&1 & sleep 0.3")
    yield
    for node in NODES:
        on_host(node, "pkill -f 'socket[.]create_server' || true")


def test_netenv_check_sees_open_ports_and_a_dropping_firewall(lab, listeners):
    proc = cli("inv", "netenv.check", env=lab)
    assert proc.returncode == 0, proc.stdout
    rows = [l for l in proc.stdout.splitlines() if l.startswith("node")]
    for node, row in zip(NODES, rows):
        assert row.split()[:5] == [node, LAB_NICS[node], f"198.19.0.1{node[-1]}/24", "1500", "2/2"]
        assert row.count("2/2 open") == 2 and "no DROP/REJECT rules" in row
    rule = "INPUT -p tcp -m tcp --dport 6379 -j DROP"
    on_host("node2", f"iptables -A {rule}")
    try:
        blocked = cli("inv", "netenv.check", env=lab)
    finally:
        on_host("node2", f"iptables -D {rule}")
    assert blocked.returncode == 1
    assert "node1: private ports not reachable: node2:6379 timeout" in blocked.stdout
    assert f"iptables -A {rule}" in blocked.stdout


# --------------------------------------------------------------------------- nfs

NFS_FILES = ("/etc/exports.d/gpufab.exports", "/etc/fstab")
NO_NFSD = "has no NFS server (nfsd): nfsd is not in /proc/filesystems"
NO_NFS = "has no NFS client (nfs): nfs is not in /proc/filesystems"


def test_nfs_setup_goes_to_the_kernel_boundary_and_says_so(lab):
    first = cli("inv", "nfs.setup", env=lab, timeout=600)
    assert first.returncode == 1
    assert statuses(first) == {n: "failed" for n in NODES}
    assert "installed nfs-kernel-server" in first.stdout and "created /etc/exports.d/gpufab.exports" in first.stdout
    assert first.stdout.count("installed nfs-common") == 2 and first.stdout.count("updated /etc/fstab") == 2
    assert "node1: this kernel" in first.stdout and NO_NFSD in first.stdout
    assert first.stdout.count(NO_NFS) >= 2
    before = snapshot(NFS_FILES)
    second = cli("inv", "nfs.setup", env=lab, timeout=600)
    assert second.returncode == 1
    assert not re.search(r"installed|created|updated", second.stdout)  # nothing changed
    assert NO_NFSD in second.stdout and second.stdout.count(NO_NFS) >= 2
    assert snapshot(NFS_FILES) == before
    exports = on_host("node1", "grep -v '^#' /etc/exports.d/gpufab.exports").stdout
    assert exports == "/mnt/shared 198.19.0.0/24(rw,sync,no_subtree_check,all_squash,anonuid=" + \
        on_host("node1", "echo $(id -u gpufab-share),anongid=$(id -g gpufab-share)").stdout.strip() + ")\n"
    # A root login: the share is the account's that every worker is squashed to, never root's.
    assert on_host("node1", "stat -c %U /mnt/shared").stdout.strip() == "gpufab-share"
    for node in ("node2", "node3"):
        fstab = on_host(node, "cat /etc/fstab").stdout
        assert fstab.count("198.19.0.11:/mnt/shared /mnt/shared nfs ") == 1
        assert fstab.count("# BEGIN gpufab managed block") == 1


def test_nfs_client_refuses_a_hand_written_line_for_the_same_mount(lab):
    line = "10.9.9.9:/data /mnt/shared nfs rw 0 0"
    on_host("node3", f"echo '{line}' >> /etc/fstab")
    try:
        before = snapshot(["/etc/fstab"], nodes=["node3"])
        proc = cli("inv", "nfs.client", "--nodes", "node3", env=lab)
        assert proc.returncode == 1
        assert f"/etc/fstab already mounts /mnt/shared outside gpufab's block ('{line}')" in proc.stdout
        assert snapshot(["/etc/fstab"], nodes=["node3"]) == before
    finally:
        on_host("node3", "sed -i '/^10.9.9.9:/d' /etc/fstab")


def test_nfs_verify_reports_workers_without_the_share(lab):
    proc = cli("inv", "nfs.verify", env=lab)
    assert proc.returncode == 1
    assert statuses(proc) == {"node1": "ok", "node2": "failed", "node3": "failed"}
    assert proc.stdout.count("/mnt/shared is not an NFS mount of 198.19.0.11:/mnt/shared") >= 2


# --------------------------------------------------------------------------- as a sudo user


@pytest.fixture
def as_gpu_user(lab, tmp_path):
    """The lab inventory, logging in as `gpu`, whose sudo needs a password."""
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    return {**lab, "GPUFAB_INVENTORY": str(inventory), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}


def test_steps_work_through_sudo_and_a_wrong_password_changes_nothing(as_gpu_user, tmp_path):
    wrong = cli("inv", "limits.setup", "--nofile", "12288", env={**as_gpu_user, "INVOKE_SUDO_PASSWORD": "nope"})
    assert wrong.returncode == 1 and wrong.stdout.count("FAILED: wrong sudo password") == 3
    assert on_host("node1", "grep -c 12288 /etc/security/limits.d/90-gpufab-nofile.conf", check=False).stdout.strip() == "0"

    installed = cli("inv", "docker.install", "--source", "distro", "--nodes", "node2", env=as_gpu_user)
    assert installed.returncode == 0, installed.stdout
    assert "added gpu to group docker" in installed.stdout
    assert "docker" in on_host("node2", "id -nG gpu").stdout.split()

    dotenv = tmp_path / ".env"
    dotenv.write_text(f"HF_TOKEN={SECRET}\n")
    proc = cli("inv", "netenv.setup", "--secrets", "--env-file", str(dotenv), "--nodes", "node2", env=as_gpu_user)
    assert proc.returncode == 0, proc.stdout
    assert "updated /etc/gpufab/secrets.env" in proc.stdout and SECRET not in proc.stdout
    # Root's, readable by gpu's group: root's login shells source it, so gpu must not be able to write it.
    assert on_host("node2", "stat -c '%a %U %G' /etc/gpufab/secrets.env").stdout.strip() == "640 root gpu"
    assert on_host("node2", "ls /tmp | grep -c gpufab-upload", check=False).stdout.strip() == "0"
