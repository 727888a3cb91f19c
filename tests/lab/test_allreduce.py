"""`inv allreduce` on the lab: a real Gloo all-reduce across three hosts (Debian's python3-torch).

The lab hosts have no GPUs, so this is the Gloo path: one process per node,
each told its NIC by netenv, which differs per host. A DROP between two
hosts' private addresses must be named as exactly that pair, in bounded time.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_node_setup import LAB_NICS

PRIVATE = {"node1": "198.19.0.11", "node2": "198.19.0.12", "node3": "198.19.0.13"}
#: node2 <-> node3 over the private network, dropped both ways on node2.
DROP_RULES = (f"INPUT -s {PRIVATE['node3']} -j DROP", f"OUTPUT -d {PRIVATE['node3']} -j DROP")


@pytest.fixture(scope="module")
def netenv(lab):
    proc = cli("inv", "netenv.setup", env=lab, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield lab
    for node in NODES:
        on_host(node, "rm -rf /etc/gpufab /etc/nccl.conf /etc/profile.d/gpufab-netenv.sh /root/.cache/gpufab "
                      "/home/gpu/.cache/gpufab")


def left_over() -> dict:
    """The all-reduce processes still on each node (there must be none)."""
    return {n: on_host(n, "pgrep -af 'gpufab/allreduce[-]' || true").stdout.strip() for n in NODES}


def rows(stdout: str, first: str) -> list:
    """The rows of the table whose header starts with `first`, split on 2+ spaces."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(first))
    out = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith(("Link", "allreduce", "  Rank", "Size", "-", "slowest")):
            break
        out.append(re.split(r"\s{2,}", line.strip()))
    return out


def test_allreduce_across_three_hosts_sums_right_on_each_nodes_own_nic(netenv):
    proc = cli("inv", "allreduce", "--sizes", "1M,16M,64M", env=netenv, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "allreduce: node1, node2, node3: gloo, one process per node, 3 ranks" in out
    sizes = rows(out, "Size")
    assert [r[0] for r in sizes] == ["1 MiB", "16 MiB", "64 MiB"], sizes
    for size, ms, algbw, busbw, check in sizes:
        assert check == "right" and float(ms) > 0
        assert float(busbw) == pytest.approx(float(algbw) * 4 / 3, rel=0.02)  # 2(n-1)/n with n = 3
    ranks = rows(out, "Rank")
    assert [(r[1], r[2], r[3]) for r in ranks] == [(n, LAB_NICS[n], LAB_NICS[n]) for n in NODES], ranks
    link = re.search(r"^Link \(TCP over the private network, one stream, builtin\): node2\u2192node1 ([\d.]+) GB/s; "
                     r"node3\u2192node1 ([\d.]+) GB/s$", out, re.M)
    assert link and float(link.group(1)) > 0 and float(link.group(2)) > 0, out
    assert re.search(r"^allreduce: 3 nodes, gloo over the netenv NICs, busbw [\d.]+ GB/s at 64 MiB "
                     r"\(link [\d.]+ GB/s, slowest node\d\u2192node1\); sums right; "
                     r"no expected figure for CPU/ethernet \(Gloo\)$", out, re.M), out
    # The script went to the SSH user's cache, nowhere a root process reads.
    assert on_host("node2", "ls /root/.cache/gpufab/").stdout.startswith("allreduce-")
    assert left_over() == {n: "" for n in NODES}


def test_allreduce_as_the_sudo_user_runs_as_that_user(netenv, tmp_path):
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    env = {**netenv, "GPUFAB_INVENTORY": str(inventory), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    proc = cli("inv", "allreduce", "--sizes", "4M", "--iters", "3", "--json", env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)  # --json: the figures alone on stdout
    group = found["groups"][0]
    assert group["ok"] and group["nodes"] == list(NODES) and found["failed_nodes"] == {}
    assert [(s["bytes"], s["sum_right"]) for s in group["sizes"]] == [(4 << 20, True)]
    assert {r["node"]: (r["interface"], r["netenv_nic"]) for r in group["ranks"]} == {
        n: (LAB_NICS[n], LAB_NICS[n]) for n in NODES}
    assert on_host("node3", "stat -c %U /home/gpu/.cache/gpufab/allreduce-*.py").stdout.strip() == "gpu"


def test_pairs_name_exactly_the_dropped_link_in_bounded_time_and_leave_nothing_running(netenv):
    for rule in DROP_RULES:
        on_host("node2", f"iptables -A {rule}")
    try:
        started = time.monotonic()
        proc = cli("inv", "allreduce", "--pairs", "--timeout", "20", "--sizes", "1M", "--iters", "3", env=netenv,
                   timeout=300)
        took = time.monotonic() - started
    finally:
        for rule in DROP_RULES:
            on_host("node2", f"iptables -D {rule}")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    pairs = {r[0]: r for r in rows(out, "Pair")}
    assert set(pairs) == {"node1-node2", "node1-node3", "node2-node3"}, out
    assert pairs["node1-node2"][1] == "ok" and pairs["node1-node3"][1] == "ok"
    assert pairs["node2-node3"][1] == "FAILED"
    assert "allreduce --pairs: 2 of 3 pairs ok; failed: node2-node3" in out
    failed_line = next(line for line in out.splitlines() if line.startswith("  node2-node3: FAILED: "))
    assert "node3: " in failed_line or "node2: " in failed_line
    # Two good pairs and one that waits out its 20 s: bounded, never a hang.
    assert took < 3 * 20 + 40, took
    assert left_over() == {n: "" for n in NODES}


def test_a_node_without_torch_in_the_named_python_is_named(netenv):
    proc = cli("inv", "allreduce", "--python", "/usr/bin/python3.11-absent", env=netenv, timeout=120)
    assert proc.returncode == 1
    assert "node1: torch not found in /usr/bin/python3.11-absent (not found) (set train_python)" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (("--sizes", "64X"), "--sizes: invalid size '64X'"),
    (("--backend", "mpi"), "--backend: unknown backend 'mpi'"),
    (("--backend", "nccl"), "--backend: --backend nccl needs GPUs and NCCL on every node; not on node1, node2, node3"),
    (("--timeout", "0"), "--timeout: invalid value '0'"),
])
def test_bad_allreduce_options_are_one_error_line(netenv, args, message):
    proc = cli("inv", "allreduce", *args, env=netenv, timeout=120)
    assert proc.returncode == 2 and message in one_error_line(proc), proc.stdout + proc.stderr
