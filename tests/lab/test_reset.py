"""`reset` on a bootstrapped lab: every gpufab file, unit, mount, fstab line and key gone; bootstrap works again."""

from __future__ import annotations

import shlex

import pytest

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_bootstrap import progress, reset_lab

#: What gpufab can leave on a node, listed the same way before bootstrap and after reset.
TRACE = (
    "find /etc /opt /var/lib /var/backups /usr/local /root /home /mnt -xdev -name '*gpufab*' 2>/dev/null | sort; "
    "systemctl list-units --all --plain --no-legend 'gpufab*' | cut -d' ' -f1; "
    "systemctl list-unit-files --no-legend 'gpufab*' | cut -d' ' -f1; "
    "findmnt -rn -o TARGET,FSTYPE -t fuse.sshfs,nfs,nfs4; "
    "grep -Hn gpufab /etc/fstab /root/.ssh/authorized_keys /home/gpu/.ssh/authorized_keys 2>/dev/null; "
    "sha256sum /etc/docker/daemon.json /etc/nccl.conf /etc/hosts 2>/dev/null; "
    "for h in /root /home/gpu; do sha256sum $h/.ssh/authorized_keys $h/.ssh/known_hosts $h/.ssh/config 2>/dev/null; done; "
    "ls -A /etc/exports.d /etc/systemd/system/docker.service.d /etc/systemd/system.conf.d 2>/dev/null; "
    "id -nG gpu; "
    "pgrep -f '[r]aylet' || true"
)
#: The operator's own /etc/nccl.conf on node2, from before gpufab: reset puts it back.
OWN_NCCL = "# the operator's own NCCL settings\nNCCL_DEBUG=WARN\n"


PACKAGES = "dpkg-query -W -f '${Package} ${db:Status-Status}\\n' | grep ' installed$' | sort"


def traces() -> dict:
    return {n: on_host(n, TRACE).stdout for n in NODES}


def packages() -> dict:
    return {n: on_host(n, PACKAGES).stdout for n in NODES}


@pytest.fixture(scope="module")
def rented(lab):
    """Hosts as rented, one with its own nccl.conf; what they hold before gpufab touches them."""
    reset_lab()
    on_host("node2", f"printf %s {shlex.quote(OWN_NCCL)} > /etc/nccl.conf")
    yield {"env": lab, "before": traces(), "packages": packages()}
    reset_lab()


def test_reset_without_yes_and_no_terminal_is_one_error_line_and_changes_nothing(rented):
    line = one_error_line(cli("inv", "reset", env=rented["env"]))
    assert "--yes" in line
    assert traces() == rented["before"]


def test_reset_after_bootstrap_leaves_the_nodes_as_rented_and_bootstrap_works_again(rented):
    env = rented["env"]
    first = cli("inv", "bootstrap", env=env, timeout=1800)
    assert first.returncode == 0, first.stdout + first.stderr
    on_host("node1", "echo operator-data > /mnt/shared/results.txt")
    during = traces()
    for node in NODES:  # bootstrap left its traces: there is something to remove
        assert during[node] != rented["before"][node]
        assert "gpufab-ray-" in during[node] and "/etc/gpufab" in during[node]
    assert "fuse.sshfs" in during["node2"] and "gpufab managed block" in during["node2"]

    assert packages() != rented["packages"]  # docker.io and sshfs at least
    proc = cli("inv", "reset", "--yes", "--packages", env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reset: 3 hosts: 3 changed" in proc.stdout, proc.stdout
    assert "purged docker.io" in proc.stdout
    assert traces() == rented["before"]
    assert packages() == rented["packages"]  # what gpufab installed, and only that, is gone
    assert on_host("node2", "cat /etc/nccl.conf").stdout == OWN_NCCL
    # The shared data is the operator's: kept on the head, gpufab's check files gone.
    assert on_host("node1", "ls -A /mnt/shared").stdout.split() == ["results.txt"]

    again = cli("inv", "reset", "--yes", env=env, timeout=600)
    assert again.returncode == 0 and "reset: 3 hosts: 0 changed, 3 ok" in again.stdout, again.stdout
    assert traces() == rented["before"]

    rebuilt = cli("inv", "bootstrap", env=env, timeout=1800)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    steps = progress(rebuilt.stdout)  # from scratch: Docker installed again too
    assert {steps[(n, s)] for n in NODES for s in ("docker", "netenv", "storage", "ray")} == {"changed"}, steps
    assert "Ray: 3/3 nodes alive" in rebuilt.stdout and "All-reduce: 3 nodes" in rebuilt.stdout


def test_reset_as_the_sudo_user_with_a_password(rented, tmp_path):
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    env = {**rented["env"], "GPUFAB_INVENTORY": str(inventory), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    up = cli("inv", "bootstrap", env=env, timeout=1800)
    assert up.returncode == 0, up.stdout + up.stderr
    assert on_host("node2", "ls /home/gpu/.cache/gpufab").stdout.strip()
    proc = cli("inv", "reset", "--yes", env=env, timeout=600)
    assert proc.returncode == 0 and "reset: 3 hosts: 3 changed" in proc.stdout, proc.stdout + proc.stderr
    assert "gpufab-lab" not in proc.stdout + proc.stderr
    assert traces() == rented["before"]
