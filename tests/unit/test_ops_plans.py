import subprocess

import pytest

from fabfile.ops import detached

from fabfile.ops.shared import gpu

from fabfile.ops.shared import launch

from fabfile.ops import slurm
from fabfile.core.errors import InputError
from fabfile.core.inventory import Node, parse_inventory

INVENTORY = parse_inventory(
    """
nodes:
  - {name: w1, public: 203.0.113.11, private: 10.0.0.11, roles: [decode], vars: {gpus: 8}}
  - {name: h, public: 203.0.113.10, private: 10.0.0.10, role: head, roles: [prefill], vars: {gpus: 8}}
  - {name: w2, public: 203.0.113.12, private: 10.0.0.12, roles: [decode]}
"""
)


def test_launch_ranks_the_head_first_then_by_nid():
    nodes = launch.launch_nodes(INVENTORY, None)
    assert [n.name for n in nodes] == ["h", "w1", "w2"]
    placed = launch.placements(nodes, 29500, {"w2": 0})
    assert [p.values["NODE_RANK"] for p in placed] == ["0", "1", "2"]
    assert {p.values["MASTER_ADDR"] for p in placed} == {"10.0.0.10"}
    # gpus var wins over detection; a node without GPUs runs one process.
    assert [p.values["NPROC_PER_NODE"] for p in placed] == ["8", "8", "1"]


def test_launch_by_role_masters_on_the_first_of_them():
    nodes = launch.launch_nodes(INVENTORY, "decode")
    placed = launch.placements(nodes, 1234, {"w2": 4})
    assert [(p.node.name, p.values["NODE_RANK"], p.values["NNODES"]) for p in placed] == [("w1", "0", "2"), ("w2", "1", "2")]
    assert placed[1].values["MASTER_ADDR"] == "10.0.0.11" and placed[1].values["NPROC_PER_NODE"] == "4"
    with pytest.raises(InputError, match="no node has role 'encode' \\(roles: decode, head, prefill, worker\\)"):
        launch.launch_nodes(INVENTORY, "encode")


def test_a_gpus_var_that_is_not_a_count_is_one_error_naming_the_node():
    # An inventory file refuses it with its line (test_bad_input_more); a node built in code is named here.
    node = Node("a", "203.0.113.1", "10.0.0.1", vars={"gpus": "abc"})
    with pytest.raises(InputError, match="gpus: a: gpus must be a whole number, not 'abc'"):
        launch.placements([node], 29500, {})


def test_a_ray_port_that_is_not_a_port_is_one_error_naming_the_var():
    from fabfile.ops import ray

    with pytest.raises(InputError, match="ray_port: invalid Ray port 'abc'"):
        # Found where the inventory is read now (declared settings hold values to their readers' checks).
        inv = parse_inventory("vars: {ray_port: abc}\nnodes:\n  - {name: a, public: 203.0.113.1, private: 10.0.0.1}\n")
        ray.read({}, inv, {})
    with pytest.raises(InputError, match="ray_port: invalid Ray port 'abc'"):
        ray.read({}, parse_inventory("nodes:\n  - {name: a, public: 203.0.113.1, private: 10.0.0.1}\n"),
                 {"ray_port": "abc"})


def test_launch_substitutes_placeholders_but_not_shell_expansions():
    values = {"NODE_RANK": "2", "NNODES": "3", "MASTER_ADDR": "10.0.0.10", "MASTER_PORT": "29500", "NPROC_PER_NODE": "8"}
    assert launch.substitute("run --rank {NODE_RANK} --n ${NNODES} {OTHER}", values) == "run --rank 2 --n ${NNODES} {OTHER}"
    line = launch.node_command("echo $NODE_RANK", values)
    assert line.startswith("if [ -r /etc/gpufab/netenv.env ]; then set -a;")
    assert "export NODE_RANK=2 NNODES=3 MASTER_ADDR=10.0.0.10 MASTER_PORT=29500 NPROC_PER_NODE=8; echo $NODE_RANK" in line
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True).stdout
    assert out == "2\n"


def test_gpu_query_parsing():
    gpus, problem = gpu.parse_gpus("0, NVIDIA H100 80GB HBM3, 1024, 81559, 37\n1, NVIDIA H100 80GB HBM3, 0, 81559, 0\n")
    assert problem == "" and [g.index for g in gpus] == ["0", "1"]
    assert gpu.memory_cell(gpus[0]) == "1024 / 81559 MiB" and gpus[0].utilization == "37"
    assert gpu.parse_gpus(gpu.NO_SMI + "\n") == (None, "no GPUs (nvidia-smi not found)")
    none, why = gpu.parse_gpus("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
    assert none is None and why.startswith("nvidia-smi lists no GPUs (NVIDIA-SMI has failed")


def test_detached_names_signals_and_parsing():
    assert detached.job_name("python train.py", "20261121-073501").startswith("gpufab-run-20261121-073501-")
    assert detached.job_name("a", "x") == detached.job_name("a", "x") != detached.job_name("b", "x")
    assert detached.check_signal("sigkill") == "KILL"
    with pytest.raises(InputError, match="unknown signal"):
        detached.check_signal("BOOM")
    with pytest.raises(InputError, match="every process"):
        detached.check_pattern(" ")
    with pytest.raises(InputError, match="invalid pattern"):
        detached.check_pattern("train(")
    matches = detached.parse_matches("123 python train.py --lr 1\n456 /bin/sh -c python train.py\n")
    assert [(m.pid, m.command) for m in matches] == [(123, "python train.py --lr 1"), (456, "/bin/sh -c python train.py")]
    assert detached.parse_kill("signalled 1\ngone 2\nsignalled 3\nalive 3\n") == ([1, 3], [2], [3])


def test_slurm_script_from_the_inventory(tmp_path):
    inv = parse_inventory("nodes:\n" + "".join(
        f"  - {{name: n{i}, public: 203.0.113.{i}, private: 10.0.0.{i}, vars: {{gpus: 8}}}}\n" for i in range(1, 5)))
    text = slurm.sbatch_script(inv, output="r.sbatch", job_name="llm", command="python -u train.py --epochs 3",
                               venv="/opt/gpufab/venv", port=6379, time_limit="1-00:00:00", partition="gpu", cpus=32)
    for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-task=8", "#SBATCH --cpus-per-task=32",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00", "#SBATCH --job-name=llm",
                 "source /opt/gpufab/venv/bin/activate", "port=6379", "python -u train.py --epochs 3"):
        assert line in text
    script = tmp_path / "r.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    mixed = parse_inventory("nodes:\n  - {name: a, public: 1.2.3.4, vars: {gpus: 8}}\n  - {name: b, public: 1.2.3.5}\n")
    with pytest.raises(InputError, match="different gpus counts"):
        slurm.gpus_per_node(mixed)
    with pytest.raises(InputError, match="invalid time limit"):
        slurm.sbatch_script(inv, output="r", job_name="j", command="c", venv="/v", port=1, time_limit="soon",
                            partition=None, cpus=None)


@pytest.mark.parametrize("fake, expected", [
    (None, "0"),
    ("echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'; echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)'", "2"),
    ("exit 124", gpu.HUNG),  # what `timeout` returns when nvidia-smi did not answer
    ("echo 'NVIDIA-SMI has failed'; exit 9", "0"),
])
def test_gpu_count_is_bounded_and_names_a_hung_nvidia_smi(tmp_path, fake, expected):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if fake is not None:
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{fake}\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    out = subprocess.run(["sh", "-c", gpu.COUNT], capture_output=True, text=True, env={"PATH": path}).stdout
    # templates/remote/lib.sh's gpu_count, bounded by `timeout -k 5 20` (its $1: smi_timeout, 20).
    assert out == expected + "\n" and gpu.COUNT.startswith("smi_timeout=20\ngpu_count() {\n  if command -v nvidia-smi")
    assert 'timeout -k 5 "$1" nvidia-smi' in gpu.COUNT
