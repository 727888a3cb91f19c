"""The all-reduce check as data: facts in, launch lines out; the job's lines in, results and reasons out."""

import json
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import Inventory
from fabfile.ops import allreduce as ar
from fakes import FakeRemote, node
from fabfile.ops.shared import python as train_python

NODES = (node("node1", "10.0.0.1"), node("node2", "10.0.0.2", "worker"), node("node3", "10.0.0.3", "worker"))
NODES = tuple(n.__class__(**{**n.__dict__, "nid": i}) for i, n in enumerate(NODES))
NICS = {"node1": "enp27s0f0np0", "node2": "ens14np0", "node3": "enp157s0f0np0"}
S = ar.AllreduceSettings(sizes=(1 << 20, 64 << 20), iters=5, timeout=20.0, port=29517)


def python(gpus=0, nccl=False):
    return train_python.TrainPython("/usr/bin/python3", "1.13.1", True, nccl, gpus)


def ready(gpus=0):
    return {n.name: ar.NodeReady(python(gpus, nccl=gpus > 0), NICS[n.name]) for n in NODES}


def line(event, **fields):
    return ar.MARK + json.dumps(dict(event=event, **fields))


def good_output(name, rank, world=3, interface=None, sizes=S.sizes):
    lines = [line("rank", rank=rank, node_rank=rank, local_rank=0, interface=interface or NICS[name], device="cpu")]
    if rank == 0:
        lines += [line("size", bytes=b, seconds=b / 1e9, right=True, iters=5) for b in sizes]
        lines += [line("link", node_rank=i, bytes_per_second=2e9 - i * 1e8, tool="builtin", seconds=2) for i in (1, 2)]
        lines.append(line("done"))
    return "banner from a chatty .bashrc\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, expected", [
    ("1M,16M,64M", (1 << 20, 16 << 20, 64 << 20)),
    ("4096, 1KiB ,2G", (4096, 1024, 2 << 30)),
    ("10", (8,)),
])
def test_sizes_are_binary_units_in_whole_float32s(text, expected):
    assert ar.parse_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1T", "0", "5G", "1M,,2M", "-1M"])
def test_a_bad_size_is_one_error_naming_the_option(text):
    with pytest.raises(InputError, match="--sizes"):
        ar.parse_sizes(text)


@given(st.text(max_size=40))
def test_no_size_text_gives_anything_but_sizes_or_an_input_error(text):
    try:
        sizes = ar.parse_sizes(text)
    except InputError:
        return
    assert sizes and all(4 <= s <= ar.MAX_BYTES and s % 4 == 0 for s in sizes)


def test_settings_come_from_the_inventory_and_the_cli_wins():
    inv = Inventory(nodes=NODES, vars={"allreduce_sizes": "8M", "train_python": "/opt/conda/bin/python",
                                       "master_port": 30000})
    s = ar.read({}, inv, {"allreduce_iters": "3", "allreduce_timeout": "9"})
    assert (s.sizes, s.iters, s.timeout, s.default_python, s.port) == ((8 << 20,), 3, 9.0, "/opt/conda/bin/python", 30017)
    wins = ar.read({}, inv, {"allreduce_sizes": "1K", "train_python": "python3", "allreduce_port": "40000"})
    assert (wins.sizes, wins.python, wins.port) == ((1024,), "python3", 40000)
    # --python beats a node's own train_python, which beats the inventory's.
    own = node("node2", train_python="/opt/venv/bin/python")
    assert train_python.candidates(own, wins) == (["python3"], True)
    assert train_python.candidates(own, s) == (["/opt/venv/bin/python"], True)
    assert train_python.candidates(node("node3"), s) == (["/opt/conda/bin/python"], True)
    assert train_python.candidates(node("node3"), ar.AllreduceSettings()) == (["/opt/gpufab/venv/bin/python", "python3"], False)
    # bootstrap's own --timeout (Ray's) is not the all-reduce's.
    assert ar.read({}, inv, {"timeout": "1"}).timeout == ar.DEFAULT_TIMEOUT
    for cli, option in (({"allreduce_backend": "mpi"}, "--backend"), ({"allreduce_iters": "0"}, "--iters"),
                        ({"allreduce_timeout": "x"}, "--timeout"), ({"train_python": "python3; rm -rf /"}, "--python"),
                        ({"allreduce_port": "70000"}, "port")):
        with pytest.raises(InputError, match=option):
            ar.read({}, inv, cli)


def test_gloo_one_process_per_node_without_gpus_and_nccl_one_per_gpu_with_them():
    assert ar.choose_backend("auto", ready(0)) == ar.Plan("gloo", {"node1": 1, "node2": 1, "node3": 1})
    assert ar.choose_backend("auto", ready(8)) == ar.Plan("nccl", {"node1": 8, "node2": 8, "node3": 8})
    assert ar.choose_backend("gloo", ready(8)).procs == {"node1": 1, "node2": 1, "node3": 1}
    with pytest.raises(InputError, match="needs GPUs and NCCL on every node; not on node1, node2, node3"):
        ar.choose_backend("nccl", ready(0))


def test_pairs_are_every_pair_up_to_eight_nodes_and_a_ring_above():
    assert [(a.name, b.name) for a, b in ar.pairs_of(NODES)] == [("node1", "node2"), ("node1", "node3"), ("node2", "node3")]
    many = [node(f"n{i}", f"10.0.0.{i}", "worker") for i in range(12)]
    ring = ar.pairs_of(many)
    assert len(ring) == 12 and (ring[-1][0].name, ring[-1][1].name) == ("n11", "n0")
    assert len(ar.pairs_of(many[:8])) == 28


def test_each_node_gets_the_launch_line_netenv_first_then_its_rank_and_a_bounded_job():
    plan = ar.Plan("nccl", {"node1": 8, "node2": 4, "node3": 8})
    commands = ar.job_commands(NODES, plan, ready(8), S)
    node2 = commands["node2"]
    assert node2.startswith("if [ -r /etc/gpufab/netenv.env ]; then set -a; . /etc/gpufab/netenv.env; set +a; fi; export ")
    assert "NODE_RANK=1 NNODES=3 MASTER_ADDR=10.0.0.1 MASTER_PORT=29517 NPROC_PER_NODE=4" in node2
    job = shlex.split(node2[node2.index("timeout -k"):])
    assert job[:5] == ["timeout", "-k", "3", "22", "/usr/bin/python3"]
    opts = dict(zip(job[6::2], job[7::2]))
    assert (opts["--nproc"], opts["--rank-base"], opts["--world"], opts["--node-bases"]) == ("4", "8", "20", "0,8,12")
    assert opts["--sizes"] == "1048576,67108864" and opts["--timeout"] == "17" and job[-1] == "--link"
    assert "NODE_RANK=2" in commands["node3"] and "--rank-base 12" in commands["node3"]


def test_the_head_hosts_the_rendezvous_of_a_pair_only_when_it_is_in_it():
    commands = ar.job_commands((NODES[2], NODES[1]), ar.Plan("gloo", {"node2": 1, "node3": 1}), ready(), S)
    assert "NODE_RANK=0" in commands["node2"] and "MASTER_ADDR=10.0.0.2" in commands["node3"]


def test_a_clean_run_reads_as_sizes_with_busbw_ranks_on_their_nics_and_links():
    outputs = {n.name: (0, good_output(n.name, i), "") for i, n in enumerate(NODES)}
    result = ar.read_group(NODES, ar.choose_backend("auto", ready()), ready(), outputs, S)
    assert result.ok, result.failures
    top = result.busbw_at_largest()
    assert top.bytes == 64 << 20 and top.algbw == pytest.approx(1e9)
    assert top.busbw == pytest.approx(1e9 * 2 * 2 / 3)  # nccl-tests: algbw x 2(n-1)/n
    assert [(r.node, r.interface) for r in result.ranks] == [(n, NICS[n]) for n in ("node1", "node2", "node3")]
    assert result.slowest_link() == ar.Link("node3", "node1", 1.8e9, "builtin")
    assert ar.summary(result) == ("3 nodes, gloo over the netenv NICs, busbw 1.33 GB/s at 64 MiB "
                                  "(link 1.80 GB/s, slowest node3\u2192node1)")
    assert ar.size_table(result)[0] == ("1 MiB", "1.05", "1.000", "1.333", "right")
    data = result.to_json()
    assert data["ok"] and data["sizes"][1]["busbw_bytes_per_s"] == pytest.approx(top.busbw)
    assert data["ranks"][1] == {"rank": 1, "node": "node2", "interface": "ens14np0", "netenv_nic": "ens14np0",
                                "device": "cpu"}


def test_a_rank_on_another_interface_fails_its_node_by_name():
    outputs = {n.name: (0, good_output(n.name, i, interface="docker0" if n.name == "node2" else None), "")
               for i, n in enumerate(NODES)}
    result = ar.read_group(NODES, ar.Plan("gloo", {n.name: 1 for n in NODES}), ready(), outputs, S)
    assert result.failures == {"node2": "rank 1 used interface docker0, not the netenv NIC ens14np0"}


def test_a_pair_that_cannot_connect_is_named_with_each_side_reason():
    pair = (NODES[1], NODES[2])
    outputs = {
        "node2": (1, line("error", rank=0, message="RuntimeError: Timed out initializing process group in store "
                                                   "based barrier on rank: 0 (world_size=2, worker_count=1)"), ""),
        "node3": (124, "", ""),
    }
    result = ar.read_group(pair, ar.Plan("gloo", {"node2": 1, "node3": 1}), ready(), outputs, S)
    assert not result.ok
    assert result.failures["node2"].startswith("RuntimeError: Timed out initializing process group")
    assert result.failures["node3"] == "timed out after 20 s"
    row = ar.pair_table([result])[0]
    assert row[:4] == ("node2-node3", "FAILED", "-", "-") and "node3: timed out after 20 s" in row[5]


def test_a_wrong_sum_or_missing_sizes_is_never_ok():
    wrong = {n.name: (0, good_output(n.name, i), "") for i, n in enumerate(NODES)}
    wrong["node3"] = (0, wrong["node3"][1] + line("wrong", rank=2, bytes=1 << 20, expected=6.0, got=5.0), "")
    result = ar.read_group(NODES, ar.Plan("gloo", {n.name: 1 for n in NODES}), ready(), wrong, S)
    assert result.failures == {"node3": "wrong sum at 1 MiB: 5, expected 6"}
    short = {n.name: (0, good_output(n.name, i, sizes=S.sizes[:1]), "") for i, n in enumerate(NODES)}
    result = ar.read_group(NODES, ar.Plan("gloo", {n.name: 1 for n in NODES}), ready(), short, S)
    assert result.failures == {"node1": "1 of 2 sizes and 3 of 3 ranks reported"}


def test_the_slowest_pair_is_the_one_with_the_lowest_busbw():
    fast = ar.GroupResult(("node1", "node2"), "gloo", [ar.SizeRow(1 << 20, 0.001, True, 2)])
    slow = ar.GroupResult(("node2", "node3"), "gloo", [ar.SizeRow(1 << 20, 0.01, True, 2)])
    broken = ar.GroupResult(("node1", "node3"), "gloo", failures={"node3": "timed out"})
    assert ar.slowest_pair([fast, slow, broken]) is slow


# --------------------------------------------------------------------------- on a node


PYTHONS = (
    "absent=/opt/gpufab/venv/bin/python\n"
    "python=/usr/bin/python3\n"
    + train_python.PYTHON_MARK + json.dumps({"torch": "1.13.1", "gloo": True, "nccl": False, "gpus": 0}) + "\n"
)


def test_prepare_finds_the_first_python_with_torch_and_ships_the_script_once():
    remote = FakeRemote([(r"GPUFAB-PYTHON", PYTHONS, 0), (r"^\[ -f", "", 1)],
                        files={"/etc/gpufab/netenv.env": "NCCL_SOCKET_IFNAME=ens14np0\n"})
    out = ar.prepare(remote, S)
    assert out.value.python == python() and out.value.nic == "ens14np0"
    assert out.changes == [f"shipped the all-reduce script to ~/{ar.SCRIPT_PATH}"]
    probe = remote.sent("GPUFAB-PYTHON")[0]
    assert "/opt/gpufab/venv/bin/python python3" in probe  # Ray's venv first, then the node's python3
    assert remote.files[f"~/{ar.SCRIPT_PATH}"].content == ar.SCRIPT
    remote.answer(r"^\[ -f", "", 0)
    assert ar.prepare(remote, S).changes == [] and len(remote.home_written) == 1


def test_a_node_without_torch_is_named_with_the_pythons_tried():
    remote = FakeRemote([(r"GPUFAB-PYTHON", "python=/usr/bin/python3\n" + train_python.PYTHON_MARK + '{"error": "x"}\n', 0)],
                        files={"/etc/gpufab/netenv.env": "NCCL_SOCKET_IFNAME=ens14np0\n"})
    with pytest.raises(HostError, match=r"^torch not found in /usr/bin/python3 \(set train_python\)$"):
        ar.prepare(remote, S)
    # In bootstrap the all-reduce is then left out, unless the user named the python.
    assert ar.prepare(remote, S, required=False).value.python is None
    named = FakeRemote([(r"GPUFAB-PYTHON", "python=/opt/venv/bin/python\n", 0)],
                       the_node=node(train_python="/opt/venv/bin/python"))
    with pytest.raises(HostError, match=r"torch not found in /opt/venv/bin/python \(set train_python\)"):
        ar.prepare(named, S, required=False)
    assert "'/opt/venv/bin/python'" not in named.commands[0] and " /opt/venv/bin/python" in named.commands[0]


def test_without_netenv_the_check_refuses_to_guess_an_interface():
    remote = FakeRemote([(r"GPUFAB-PYTHON", PYTHONS, 0)])
    with pytest.raises(HostError, match="no netenv on this node"):
        ar.prepare(remote, S)
