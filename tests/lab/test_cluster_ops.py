"""Cluster operations on the lab: launch with ranks and roles, detached jobs, kill, logs, GPUs."""

from __future__ import annotations

import re
import time

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, NODES, on_host

PRIVATE = {"node1": "198.19.0.11", "node2": "198.19.0.12", "node3": "198.19.0.13"}

#: A torch-free rendezvous: rank 0 listens on MASTER_ADDR:MASTER_PORT, every
#: other rank connects and sends its rank. It only completes if all ranks run
#: at once and agree on the master, as torchrun's would.
RENDEZVOUS = r"""
import os, socket, time
rank, n = int(os.environ["NODE_RANK"]), int(os.environ["NNODES"])
addr = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
if rank == 0:
    s = socket.create_server(addr)
    s.settimeout(60)
    seen = sorted(int(s.accept()[0].recv(16)) for _ in range(n - 1))
    print(f"rank 0 of {n} on {socket.gethostname()}: ranks {seen} joined at {addr[0]}:{addr[1]}")
else:
    for _ in range(120):
        try:
            c = socket.create_connection(addr, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    c.sendall(str(rank).encode())
    print(f"rank {rank} of {n} on {socket.gethostname()}: joined {addr[0]}:{addr[1]}")
"""


def launch_cmd(extra: str = "") -> str:
    return f"python3 -c '{RENDEZVOUS}'{extra}"


def test_launch_gives_every_node_its_rank_head_first(lab):
    proc = cli("inv", "launch", launch_cmd(" && echo nproc=$NPROC_PER_NODE arg={NODE_RANK}"), env=lab, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^node1 \| rank 0 of 3 on node1: ranks \[1, 2\] joined at 198\.19\.0\.11:29500$", out, re.M), out
    assert re.search(r"^node2 \| rank 1 of 3 on node2: joined 198\.19\.0\.11:29500$", out, re.M), out
    assert re.search(r"^node3 \| rank 2 of 3 on node3: joined", out, re.M), out
    # {NODE_RANK} is replaced in the command; no GPUs here, so one process per node.
    for rank, node in enumerate(NODES):
        assert f"{node} | nproc=1 arg={rank}" in out
    assert "launch: 3 hosts: 3 ok, 0 failed, 0 unreachable" in out


def test_launch_reports_each_rank_exit_status(lab):
    proc = cli("inv", "launch", "exit $NODE_RANK", env=lab)
    assert proc.returncode == 2
    rows = dict(re.findall(r"^(node\d)\s+\d\s+\d\s+(\d+)\s", proc.stdout, re.M))
    assert rows == {"node1": "0", "node2": "1", "node3": "2"}, proc.stdout


def test_launch_by_role_ranks_only_those_nodes(lab, tmp_path):
    text = LAB_INVENTORY.read_text()
    for node in ("node2", "node3"):
        text = text.replace(f"  - name: {node}\n", f"  - name: {node}\n    roles: [decode]\n")
    text = text.replace("  - name: node1\n", "  - name: node1\n    roles: [prefill]\n")
    inventory = tmp_path / "roles.yaml"
    inventory.write_text(text)
    env = {**lab, "GPUFAB_INVENTORY": str(inventory)}
    proc = cli("inv", "launch", "--role", "decode", launch_cmd(), env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^node2 \| rank 0 of 2 on node2: ranks \[1\] joined at 198\.19\.0\.12:29500$", proc.stdout, re.M)
    assert re.search(r"^node3 \| rank 1 of 2 on node3: joined 198\.19\.0\.12", proc.stdout, re.M)
    assert "node1 |" not in proc.stdout
    assert "no node has role 'encode' (roles: decode, head, prefill, worker)" in one_error_line(
        cli("inv", "launch", "--role", "encode", "true", env=env))


def test_detached_job_outlives_the_session_and_kill_stops_exactly_it(lab):
    proc = cli("inv", "run.detached", "sleep 4242; echo never", "--log", "/var/log/gpufab-test.log", env=lab)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("started (systemd unit gpufab-run-") == 3
    unit = re.search(r"(gpufab-run-[\w-]+)\.service", proc.stdout).group(1)
    for node in NODES:  # gpufab's session is gone; the job is not
        assert on_host(node, "pgrep -f '^sleep 4242'").returncode == 0
        assert on_host(node, f"systemctl is-active {unit}").stdout.strip() == "active"
        on_host(node, "systemd-run --quiet --collect --unit=bystander sleep 4243")

    refused = cli("inv", "run.kill", "sleep 4242", env=lab)
    # Per node the job's shell and its sleep; not the listing's own shell, sudo or SSH session.
    assert refused.returncode == 1 and "6 processes on 3 hosts match; nothing killed" in refused.stderr
    listed = re.findall(r"^(node\d)\s+(\d+)\s+(.*)$", refused.stdout, re.M)
    assert sorted(cmd.split()[0] for _, _, cmd in listed) == ["/bin/sh"] * 3 + ["sleep"] * 3, refused.stdout
    assert on_host("node2", "pgrep -f '^sleep 4242'").returncode == 0

    killed = cli("inv", "run.kill", "sleep 4242", "--yes", env=lab)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert "run.kill: 3 hosts: 3 changed" in killed.stdout
    for node in NODES:
        assert on_host(node, "pgrep -f '^sleep 4242'", check=False).returncode == 1
        assert on_host(node, f"systemctl is-active {unit}", check=False).stdout.strip() != "active"
        assert on_host(node, "systemctl is-active bystander").stdout.strip() == "active"  # not matched, not touched
        on_host(node, "systemctl stop bystander")
    nothing = cli("inv", "run.kill", "sleep 4242", env=lab)
    assert nothing.returncode == 0 and "nothing matches 'sleep 4242'" in nothing.stdout


def test_logs_tail_labels_lines_and_names_the_host_without_the_file(lab):
    for i, node in enumerate(NODES[:2]):
        on_host(node, f"printf 'first\\nsecond {node}\\nthird {node}\\n' > /var/log/gpufab-tail.log")
    on_host("node3", "rm -f /var/log/gpufab-tail.log")
    proc = cli("inv", "logs.tail", "/var/log/gpufab-tail.log", "-n", "2", env=lab)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[:4] == ["node1 | second node1", "node1 | third node1", "node2 | second node2", "node2 | third node2"]
    assert "node3 | FAILED: tail: cannot open '/var/log/gpufab-tail.log'" in proc.stdout
    assert "logs.tail: 3 hosts: 2 ok, 1 failed" in proc.stdout


FAKE_SMI = r"""#!/bin/sh
# A stand-in for nvidia-smi on a GPU-less lab host: the real query's CSV shape.
echo "0, NVIDIA H100 80GB HBM3, 1024, 81559, 37"
echo "1, NVIDIA H100 80GB HBM3, 80000, 81559, 100"
"""


def test_gpu_status_table_and_hosts_without_gpus(lab):
    on_host("node2", f"cat > /usr/local/bin/nvidia-smi <<'EOF'\n{FAKE_SMI}EOF\nchmod +x /usr/local/bin/nvidia-smi")
    try:
        proc = cli("inv", "gpu.status", env=lab)
    finally:
        on_host("node2", "rm -f /usr/local/bin/nvidia-smi")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^node1\s+-\s+no GPUs \(nvidia-smi not found\)", proc.stdout, re.M)
    assert re.search(r"^node2\s+0\s+NVIDIA H100 80GB HBM3\s+1024 / 81559 MiB\s+37 %", proc.stdout, re.M)
    assert re.search(r"^node2\s+1\s+NVIDIA H100 80GB HBM3\s+80000 / 81559 MiB\s+100 %", proc.stdout, re.M)
    assert "gpu.status: 3 hosts: 3 ok, 0 failed, 0 unreachable; 2 GPUs" in proc.stdout


def test_a_hung_nvidia_smi_is_a_finding_in_bounded_time_not_a_hang(lab):
    on_host("node2", "printf '#!/bin/sh\\nsleep 600\\n' > /usr/local/bin/nvidia-smi; chmod +x /usr/local/bin/nvidia-smi")
    try:
        began = time.monotonic()
        check = cli("inv", "inventory.check", env=lab, timeout=120)
        status = cli("inv", "gpu.status", "--nodes", "node2", env=lab, timeout=120)
        took = time.monotonic() - began
    finally:
        on_host("node2", "rm -f /usr/local/bin/nvidia-smi; pkill -f '[s]leep 600' || true")
    assert took < 80, took
    assert re.search(r"^node2 .*nvidia-smi hung \(20s\)", check.stdout, re.M), check.stdout + check.stderr
    assert status.returncode != 0 and "node2: nvidia-smi hung (20s)" in status.stdout, status.stdout
