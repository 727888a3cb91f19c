"""The SSH mesh on the lab, as the rented login uses it: the `gpu` user with password sudo, and mpirun as its client."""

from __future__ import annotations

import subprocess

import pytest

from helpers import cli

from .conftest import ADDRESSES, LAB_INVENTORY, LAB_KEY, LAB_STATE, NODES, on_host, snapshot
from .test_bootstrap import progress

#: What the mesh shares with the system and the user: byte-identical before setup and after remove.
SHARED = ("/etc/hosts", "/home/gpu/.ssh/authorized_keys", "/home/gpu/.ssh/known_hosts", "/home/gpu/.ssh/config")
MESH_FILES = (*SHARED, "/etc/gpufab/hostfile", "/etc/gpufab/hosts", "/home/gpu/.ssh/gpufab_mesh_ed25519")
MPIRUN = "mpirun --hostfile /etc/gpufab/hostfile --mca btl_tcp_if_include 198.19.0.0/24 hostname"


def as_gpu(name: str, command: str) -> subprocess.CompletedProcess:
    """A command in a login of the gpu user on a lab host, as the user would type it there."""
    return subprocess.run(
        ["ssh", "-i", str(LAB_KEY), "-o", f"UserKnownHostsFile={LAB_STATE / 'known_hosts'}", "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=10", f"gpu@{ADDRESSES[name]}", command],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def gpu_env(lab, tmp_path_factory):
    """An inventory for the gpu user that also installs OpenMPI (the tools step); no mesh left from earlier tests."""
    d = tmp_path_factory.mktemp("mesh")
    text = LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n")
    (d / "gpu.yaml").write_text(text.replace("vars:\n", "vars:\n  packages: [openmpi-bin]\n", 1))
    cleared = cli("inv", "mesh.remove", env=lab, timeout=300)  # root's, if an earlier test left one
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    env = {**lab, "GPUFAB_INVENTORY": str(d / "gpu.yaml"), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    gone = cli("inv", "mesh.remove", env=env, timeout=300)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    return {"env": env, "before": snapshot(SHARED)}


def test_bootstrap_meshes_the_nodes_so_that_ssh_by_name_and_mpirun_work_as_the_user(gpu_env):
    proc = cli("inv", "bootstrap", "--only", "mesh,tools,verify", env=gpu_env["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {s for (n, step), s in progress(proc.stdout).items() if step == "mesh"} == {"changed"}
    assert "SSH mesh: 6/6 node pairs reach each other by name" in proc.stdout
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    # Without a prompt, by name, on the private network, from the head to a worker and between workers.
    for src, dst in (("node1", "node3"), ("node3", "node2")):
        hop = as_gpu(src, f"ssh {dst} hostname")
        assert hop.returncode == 0 and hop.stdout.strip() == dst, hop.stdout + hop.stderr
        seen = as_gpu(dst, "echo $SSH_CONNECTION")
        assert seen.stdout.split()[0].startswith("198.18."), seen.stdout  # (the test's own login: public)
    route = as_gpu("node1", "ssh node2 'echo $SSH_CONNECTION'")
    assert route.stdout.split()[:1] == ["198.19.0.11"], route.stdout + route.stderr
    # The real client: OpenMPI starts a rank on each of the 3 nodes from the hostfile.
    ran = as_gpu("node1", MPIRUN)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(ran.stdout.split()) == list(NODES)
    for node in NODES:
        assert on_host(node, "cat /etc/gpufab/hostfile").stdout == "node1 slots=1\nnode2 slots=1\nnode3 slots=1\n"
        key = on_host(node, "stat -c '%a %U' /home/gpu/.ssh/gpufab_mesh_ed25519").stdout.strip()
        assert key == "600 gpu"
    # Each node's key is its own (no private key travelled), and works from its own address only:
    # node3's key, copied to node2, does not log node2 in to node1; node2's own key does.
    assert len({on_host(n, "sha256sum < /home/gpu/.ssh/gpufab_mesh_ed25519").stdout for n in NODES}) == 3
    key3 = on_host("node3", "cat /home/gpu/.ssh/gpufab_mesh_ed25519").stdout
    on_host("node2", f"umask 077; printf '%s' '{key3}' > /tmp/stolen && chown gpu /tmp/stolen")
    used = as_gpu("node2", "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
                           "-i /tmp/stolen 198.19.0.11 true")
    on_host("node2", "rm -f /tmp/stolen")
    assert used.returncode != 0 and "Permission denied" in used.stderr, used.stdout + used.stderr
    assert as_gpu("node2", "ssh -o BatchMode=yes node1 true").returncode == 0


def test_a_second_run_changes_nothing(gpu_env):
    before = snapshot(MESH_FILES)
    proc = cli("inv", "bootstrap", "--only", "mesh,verify", env=gpu_env["env"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {s for (n, step), s in progress(proc.stdout).items() if step == "mesh"} == {"ok"}
    assert snapshot(MESH_FILES) == before


def test_verify_names_the_pair_that_fails_and_setup_repairs_it(gpu_env):
    # node3 forgets its peers' keys: nobody gets in there any more.
    on_host("node3", "sed -i '/gpufab-mesh@/d' /home/gpu/.ssh/authorized_keys")
    broken = cli("inv", "mesh.verify", env=gpu_env["env"], timeout=300)
    assert broken.returncode != 0, broken.stdout + broken.stderr
    assert "2 failed" in broken.stdout and "ssh node3: " in broken.stdout and "Permission denied" in broken.stdout
    table = broken.stdout.split("mesh.verify: ")[0]
    assert "node3   ok" in table and "reached 2/2 nodes" in table
    fixed = cli("inv", "mesh.setup", env=gpu_env["env"], timeout=300)
    assert fixed.returncode == 0 and "updated /home/gpu/.ssh/authorized_keys" in fixed.stdout, fixed.stdout
    again = cli("inv", "mesh.verify", env=gpu_env["env"], timeout=300)
    assert again.returncode == 0 and "mesh.verify: 3 hosts: 0 changed, 3 ok" in again.stdout, again.stdout


def test_remove_leaves_the_shared_files_byte_identical(gpu_env):
    proc = cli("inv", "mesh.remove", env=gpu_env["env"], timeout=300)
    assert proc.returncode == 0 and "3 changed" in proc.stdout, proc.stdout + proc.stderr
    assert snapshot(SHARED) == gpu_env["before"]
    for node in NODES:
        left = on_host(node, "ls /etc/gpufab/hostfile /home/gpu/.ssh/gpufab_mesh_ed25519 2>/dev/null; true")
        assert left.stdout == ""
    assert as_gpu("node1", "ssh -o BatchMode=yes node3 true").returncode != 0
    again = cli("inv", "mesh.remove", env=gpu_env["env"], timeout=300)
    assert again.returncode == 0 and "0 changed, 3 ok" in again.stdout, again.stdout
