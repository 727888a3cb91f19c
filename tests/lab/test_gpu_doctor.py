"""gpu.doctor, fleet and InfiniBand detection on lab hosts (no GPUs; on node2 a RoCE sysfs tree derived from captures)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from helpers import cli

from fabfile.lab import gpu as gpu_lab

from .conftest import LAB_INVENTORY, NODES, on_host

GPU_ENV = {"INVOKE_SUDO_PASSWORD": "gpufab-lab"}


def inventory(tmp_path, user: str = "root", extra: str = "") -> Path:
    path = tmp_path / f"{user}.yaml"
    text = LAB_INVENTORY.read_text().replace("  user: root\n", f"  user: {user}\n")
    path.write_text(text.replace("vars:\n", f"vars:\n{extra}"))
    return path


@pytest.mark.parametrize("user", ["gpu", "root"])
def test_doctor_and_fleet_say_no_gpus_cleanly_and_exit_zero(lab, tmp_path, user):
    env = {**lab, **GPU_ENV, "GPUFAB_INVENTORY": str(inventory(tmp_path, user))}
    doctor = cli("inv", "gpu.doctor", env=env, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    rows = [line.split() for line in doctor.stdout.splitlines() if line.startswith("node")]
    assert rows == [[n, "none", "-", "-", "none", "ok"] for n in NODES]
    as_json = cli("inv", "gpu.doctor", "--json", env=env, timeout=120)
    found = json.loads(as_json.stdout)
    assert {n: (d["gpus_pci"], d["gpus"], d["problems"], d["infiniband"]) for n, d in found.items()} == \
        {n: (0, None, [], "none") for n in NODES}
    fleet = cli("inv", "fleet", env=env, timeout=180)
    assert fleet.returncode == 0, fleet.stdout + fleet.stderr
    assert "GPUs        none" in fleet.stdout and "versions match" in fleet.stdout
    assert "OS          Debian GNU/Linux 12 (bookworm)  all (3)" in fleet.stdout


FAKE_TORCH = '''
mkdir -p /opt/oddtorch/torch/distributed
cat > /opt/oddtorch/torch/__init__.py <<'PY'
__version__ = "9.9.9"
class version: cuda = None
class cuda:
    @staticmethod
    def is_available(): return False
    @staticmethod
    def device_count(): return 0
from . import distributed
PY
cat > /opt/oddtorch/torch/distributed/__init__.py <<'PY'
def is_available(): return True
def is_gloo_available(): return True
def is_nccl_available(): return False
PY
printf '#!/bin/sh\\nPYTHONPATH=/opt/oddtorch exec python3 "$@"\\n' > /usr/local/bin/python-odd
chmod 755 /usr/local/bin/python-odd
'''


def test_fleet_names_the_node_whose_torch_differs_and_exits_one(lab, tmp_path):
    on_host("node3", FAKE_TORCH)
    try:
        path = inventory(tmp_path, "gpu")
        path.write_text(path.read_text().replace("    private: 198.19.0.13\n",
                                                 "    private: 198.19.0.13\n    vars: {train_python: /usr/local/bin/python-odd}\n"))
        fleet = cli("inv", "fleet", env={**lab, **GPU_ENV, "GPUFAB_INVENTORY": str(path)}, timeout=180)
        assert fleet.returncode == 1, fleet.stdout + fleet.stderr
        assert "*9.9.9*" in fleet.stdout and "mismatch: torch differs on node3" in fleet.stdout
    finally:
        on_host("node3", "rm -rf /opt/oddtorch /usr/local/bin/python-odd")


def mount_tree(node: str) -> None:
    """A RoCE node's tree (lab/gpu.py's roce_tree: ports, GIDs and netdevs of two captures) as the node's
    /sys/class/infiniband: /sys/class copied to a tmpfs, the tree added."""
    lines = ["set -e", "d=$(mktemp -d /run/gpufab-fakeclass.XXXXXX)", "mount -t tmpfs -o mode=755 fakeclass \"$d\"",
             "cp -a /sys/class/. \"$d\"/ 2>/dev/null || true"]
    for rel, content in sorted(gpu_lab.roce_tree().items()):
        target = f"\"$d\"/{shlex.quote(rel)}"
        lines.append(f"mkdir -p \"$(dirname {target})\"")
        lines.append(f"printf '%s\\n' {shlex.quote(content)} > {target}" if content else f": > {target}")
    lines.append("mount --bind \"$d\" /sys/class")
    on_host(node, "\n".join(lines))


def unmount_tree(node: str) -> None:
    on_host(node, "umount /sys/class; for d in /run/gpufab-fakeclass.*; do umount \"$d\"; rmdir \"$d\"; done; true")


def env_file(node: str) -> dict:
    text = on_host(node, "cat /etc/gpufab/netenv.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_a_synthetic_roce_port_gets_ib_settings_memlock_and_container_flags_on_that_node_only(lab, tmp_path):
    mount_tree("node2")
    try:
        assert on_host("node2", "cat /sys/class/infiniband/mlx5_0/ports/1/state").stdout.strip() == "4: ACTIVE"
        # The lab's sshd cannot raise its hard memlock (no CAP_SYS_RESOURCE): ask for what it allows.
        env = {**lab, **GPU_ENV, "GPUFAB_INVENTORY": str(inventory(tmp_path, "gpu", "  memlock: 8192\n"))}
        first = cli("inv", "netenv.setup", env=env, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        node2 = env_file("node2")
        assert (node2["NCCL_IB_DISABLE"], node2["NCCL_IB_HCA"], node2["NCCL_IB_GID_INDEX"]) == ("0", "=mlx5_0:1,mlx5_1:1", "7")
        assert "NCCL_NET_GDR_LEVEL" not in node2
        assert "Profile: auto (active ports: mlx5_0:1 100 Gb/s RoCE, mlx5_1:1 100 Gb/s RoCE)" in \
            on_host("node2", "cat /etc/gpufab/netenv.env").stdout
        assert on_host("node2", "cat /etc/nccl.conf").stdout.count("NCCL_IB_HCA==mlx5_0:1,mlx5_1:1") == 1
        for other in ("node1", "node3"):
            found = env_file(other)
            assert found["NCCL_IB_DISABLE"] == "1" and "NCCL_IB_HCA" not in found
        again = cli("inv", "netenv.setup", env=env, timeout=300)
        assert again.returncode == 0 and "0 changed" in again.stdout, again.stdout

        limits = cli("inv", "limits.setup", env=env, timeout=300)
        assert limits.returncode == 0, limits.stdout + limits.stderr
        assert "memlock 8192 in a new login" in limits.stdout
        assert "memlock 8192" in on_host("node2", "cat /etc/security/limits.d/90-gpufab-memlock.conf").stdout
        for other in ("node1", "node3"):
            assert on_host(other, "test -e /etc/security/limits.d/90-gpufab-memlock.conf", check=False).returncode == 1

        # The doctor sees the ports; the lab's python3-torch brings libibverbs, so NCCL could load them.
        assert "libibverbs.so.1 " in on_host("node2", "ldconfig -p").stdout
        doctor = cli("inv", "gpu.doctor", env=env, timeout=120)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "node2   none    -         -       2 × 100 Gb/s RoCE active  ok" in doctor.stdout

        for task in ("docker.install", "docker.configure"):
            done = cli("inv", task, "--nodes", "node2", env=env, timeout=600)
            assert done.returncode == 0, done.stdout + done.stderr
        verify = cli("inv", "docker.verify", "--nodes", "node2", env=env, timeout=120)
        assert verify.returncode == 0 and "a container needs --device /dev/infiniband --cap-add IPC_LOCK --ulimit memlock=-1" \
            in " ".join(verify.stdout.split()), verify.stdout
    finally:
        unmount_tree("node2")
    assert on_host("node2", "test -e /sys/class/infiniband", check=False).returncode == 1
