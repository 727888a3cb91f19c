"""`exec` against real lab hosts: gathering, exit codes, dead hosts, fab -H, sudo."""

from __future__ import annotations

import subprocess
import time

import pytest

from helpers import cli, interrupt_when, one_error_line

from .conftest import LAB_INVENTORY, LAB_KEY, on_host


def test_exec_runs_on_every_host_and_labels_output(lab):
    proc = cli("inv", "exec", "hostname", env=lab)
    assert proc.returncode == 0, proc.stderr
    live = [l for l in proc.stdout.splitlines() if " | " in l]
    assert sorted(live) == ["node1 | node1", "node2 | node2", "node3 | node3"]
    gathered = proc.stdout.split("---\n", 1)[1].splitlines()
    assert gathered == ["node1: node1", "node2: node2", "node3: node3",
                        "exec: 3 hosts: 3 ok, 0 failed, 0 unreachable"]


def test_identical_outputs_are_gathered_once(lab):
    proc = cli("inv", "exec", "--quiet", "cat /etc/debian_version | cut -d. -f1; echo same", env=lab)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["---", "node[1-3]:", "    12", "    same",
                                        "exec: 3 hosts: 3 ok, 0 failed, 0 unreachable"]


def test_exit_code_is_the_worst_remote_one(lab):
    # node1 exits 0, node2 exits 2, node3 exits 3.
    proc = cli("inv", "exec", "-q", "n=$(hostname | tr -dc 0-9); [ $n = 1 ] || exit $n", env=lab)
    assert proc.returncode == 3
    assert "node2 (exit 2): exit code 2" in proc.stdout
    assert "node3 (exit 3): exit code 3" in proc.stdout
    assert "exec: 3 hosts: 1 ok, 2 failed, 0 unreachable" in proc.stdout


def test_command_timeout_fails_only_that_host_and_ends_the_command_there(lab):
    proc = cli("inv", "exec", "-q", "--timeout", "5", "[ $(hostname) = node2 ] && sleep 61; hostname", env=lab)
    assert proc.returncode == 124
    assert "node2 (exit 124): command timed out after 5s" in proc.stdout
    assert "node1: node1" in proc.stdout and "node3: node3" in proc.stdout
    # Closing the channel alone leaves it running (no pty, no hangup): gpufab ends it on the node.
    assert on_host("node2", "pgrep -fx 'sleep 61'", check=False).stdout == ""


def test_dead_host_is_named_and_others_still_run(lab, node3_off):
    start = time.monotonic()
    proc = cli("inv", "exec", "hostname", env=lab)
    elapsed = time.monotonic() - start
    assert proc.returncode == 255
    assert "node1: node1" in proc.stdout and "node2: node2" in proc.stdout
    assert "node3 (unreachable): connection refused" in proc.stdout
    assert "exec: 3 hosts: 2 ok, 0 failed, 1 unreachable (node3: connection refused)" in proc.stdout
    assert elapsed < 10 + 5  # the default connect timeout, plus start-up


def test_blackholed_host_fails_within_connect_timeout(lab, tmp_path):
    inv = tmp_path / "inv.yaml"
    # 198.18.0.99 is on the lab bridge but answers nothing: SYNs go unanswered.
    inv.write_text(LAB_INVENTORY.read_text() + "  - name: ghost\n    public: 198.18.0.99\n    private: 198.19.0.99\n")
    start = time.monotonic()
    proc = cli("inv", "exec", "-q", "hostname", env={"GPUFAB_INVENTORY": str(inv), "INVOKE_GPUFAB_CONNECT_TIMEOUT": "3"})
    elapsed = time.monotonic() - start
    assert proc.returncode == 255
    assert "ghost (unreachable): connection timed out after 3s" in proc.stdout
    assert "node[1-3]" not in proc.stdout and "node1: node1" in proc.stdout
    assert elapsed < 3 + 4


def test_fab_hosts_without_inventory_and_host_key_checking(lab, home):
    env = {"HOME": str(home)}
    hosts = "198.18.0.11,198.18.0.12,198.18.0.13"
    proc = cli("fab", "-i", str(LAB_KEY), "-H", hosts, "exec", "hostname", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "198.18.0.11: node1" in proc.stdout and "198.18.0.13: node3" in proc.stdout
    known = (home / ".ssh" / "known_hosts").read_text().splitlines()
    assert {l.split()[0] for l in known} == set(hosts.split(","))  # accept-new recorded them
    # A changed key for one host is refused, not silently accepted.
    other_key = next(l for l in known if l.startswith("198.18.0.13 ")).split()[2]
    tampered = [l if not l.startswith("198.18.0.12 ") else f"198.18.0.12 {l.split()[1]} {other_key}" for l in known]
    (home / ".ssh" / "known_hosts").write_text("\n".join(tampered) + "\n")
    proc = cli("fab", "-i", str(LAB_KEY), "-H", hosts, "exec", "hostname", env=env)
    assert proc.returncode == 255
    assert "198.18.0.12 (unreachable): host key mismatch for 198.18.0.12" in proc.stdout
    assert "198.18.0.11: node1" in proc.stdout
    # The refusal says how to fix it when the address went to a new machine; the fix works.
    fix = f"ssh-keygen -f {home / '.ssh' / 'known_hosts'} -R 198.18.0.12"
    assert fix in proc.stdout
    subprocess.run(fix.split(), check=True, capture_output=True)
    proc = cli("fab", "-i", str(LAB_KEY), "-H", hosts, "exec", "hostname", env=env)
    assert proc.returncode == 0 and "198.18.0.12: node2" in proc.stdout, proc.stdout


def test_sudo_password_reaches_every_host(lab, tmp_path):
    inv = tmp_path / "gpu.yaml"
    inv.write_text(LAB_INVENTORY.read_text().replace("user: root", "user: gpu"))
    env = {"GPUFAB_INVENTORY": str(inv), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    proc = cli("inv", "exec", "--sudo", "id -un && id -un | tr a-z A-Z", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The whole command ran as root, not only its first word.
    assert proc.stdout.split("---\n", 1)[1].splitlines()[:3] == ["node[1-3]:", "    root", "    ROOT"]
    # A root login is not put through sudo at all.
    direct = cli("inv", "exec", "--sudo", "echo \"sudo_user=$SUDO_USER\"", env={"GPUFAB_INVENTORY": str(LAB_INVENTORY)})
    assert "node[1-3]: sudo_user=" in direct.stdout.splitlines(), direct.stdout
    assert "password" not in proc.stdout + proc.stderr
    # Without --sudo the same user is not root: the password made the difference.
    assert "node[1-3]: gpu" in cli("inv", "exec", "id -un", env=env).stdout
    wrong = cli("inv", "exec", "-q", "--sudo", "id -un", env={**env, "INVOKE_SUDO_PASSWORD": "nope"})
    assert wrong.returncode == 1
    assert "node[1-3] (exit 1): wrong sudo password" in wrong.stdout


def test_lab_hosts_reach_apt_and_pip_only_through_the_proxy(lab):
    proc = cli("inv", "exec", "-q", "--nodes", "node2",
               "ip route show default | wc -l; apt-get -q update >/dev/null && echo apt-ok; "
               "python3 -m venv /tmp/v && /tmp/v/bin/pip download -q --no-deps -d /tmp/w six==1.16.0 && ls /tmp/w",
               env=lab, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[1:5] == ["node2:", "    0", "    apt-ok", "    six-1.16.0-py2.py3-none-any.whl"]


@pytest.mark.parametrize("user", ["root", "gpu"])
def test_ctrl_c_stops_a_long_exec_within_seconds_with_one_line(lab, tmp_path, user):
    inv = tmp_path / "inv.yaml"
    inv.write_text(LAB_INVENTORY.read_text().replace("user: root", f"user: {user}"))
    env = {"GPUFAB_INVENTORY": str(inv), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    # Under sudo, as the apt run would be: root's processes, a child of a child, and a
    # daemon started on purpose (double fork), which is not the command's and stays.
    command = ("setsid -f sleep 301 </dev/null >/dev/null 2>&1; echo begun; sh -c 'sleep 120; echo after' ; "
               "touch /root/not-ended")
    proc, took = interrupt_when(["exec", "--sudo", command], env, "| begun", 3)
    out, err = proc.stdout, proc.stderr
    assert took < 8, (out, err)
    assert proc.returncode == 130 and "Traceback" not in out + err, (out, err)
    assert err.strip().splitlines() == [err.strip().splitlines()[0]] and err.startswith("gpufab: interrupted (Ctrl-C)")
    for node in ("node1", "node2", "node3"):
        left = on_host(node, "pgrep -x sleep -a; ls /root/not-ended 2>&1; pkill -x sleep; true").stdout
        assert "sleep 120" not in left and "No such file" in left, (node, left)
        assert "sleep 301" in left, (node, left)


def test_an_empty_command_is_bad_input_not_ok(lab):
    for empty in ("", "   "):
        assert "COMMAND: an empty command runs nothing" in one_error_line(cli("inv", "exec", empty, env=lab))


def test_a_proxyjump_hop_has_its_host_key_checked(lab, home):
    """The hop is a connection Fabric builds itself (AutoAddPolicy, no known_hosts): gpufab checks it too."""
    env = {"HOME": str(home)}
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    (home / ".ssh" / "config").write_text("Host viajump\n    HostName 198.18.0.13\n    User root\n"
                                          "    ProxyJump root@198.18.0.11\n")
    proc = cli("fab", "-i", str(LAB_KEY), "-H", "viajump", "exec", "hostname", env=env)
    assert proc.returncode == 0 and "viajump: node3" in proc.stdout, proc.stdout + proc.stderr
    known = (home / ".ssh" / "known_hosts").read_text().splitlines()
    assert {l.split()[0] for l in known} == {"198.18.0.11", "198.18.0.13"}  # the hop was recorded too
    node3_key = next(l for l in known if l.startswith("198.18.0.13 ")).split()[2]
    (home / ".ssh" / "known_hosts").write_text("\n".join(
        f"198.18.0.11 {l.split()[1]} {node3_key}" if l.startswith("198.18.0.11 ") else l for l in known) + "\n")
    proc = cli("fab", "-i", str(LAB_KEY), "-H", "viajump", "exec", "hostname", env=env)
    assert proc.returncode == 255 and "viajump (unreachable): host key mismatch for 198.18.0.11" in proc.stdout
    assert "node3" not in proc.stdout


def test_inv_reads_the_users_ssh_config_like_fab(lab, home, tmp_path):
    """An inventory naming an ssh_config alias, its address and key only in ~/.ssh/config (Fabric's `fab`
    reads that file; `inv` reads it too)."""
    (home / ".ssh" / "config").write_text(f"Host gpu-box-2\n    HostName 198.18.0.12\n    User root\n"
                                          f"    IdentityFile {LAB_KEY}\n")
    inventory = tmp_path / "alias.yaml"
    inventory.write_text("nodes:\n  - name: box2\n    public: gpu-box-2\n    private: 198.19.0.12\n")
    proc = cli("inv", "exec", "hostname", env={"HOME": str(home), "GPUFAB_INVENTORY": str(inventory)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "box2 | node2" in proc.stdout
    # Its host key was checked the usual way: recorded on first use under the address reached.
    assert (home / ".ssh" / "known_hosts").read_text().split()[0] == "198.18.0.12"
