"""`bootstrap` on GPU-shaped lab hosts: every GPU path of gpufab, as `gpu` and as root.

`inv lab.up --gpus node1=hgx-h100,node2=hgx-h100,node3=hgx-h100-broken` gives the hosts stand-in NVIDIA
tools serving captured outputs (fabfile/lab/gpu.py): 8 × H100 SXM behind NVSwitches, eight NDR rails and a
bonded Ethernet front-end (mlx5_bond_0); node3 has lost the GPU on bus 5d (XID 79) and its fabric manager
fails. A local apt repository serves stand-in NVIDIA container toolkit packages signed by a lab key, pinned
by fingerprint in the inventory as NVIDIA's would be. CUDA, NCCL and GPUDirect cannot be stood in: the
all-reduce runs Gloo, and says it has no expected figure for that.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers import cli

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_bootstrap import progress, reset_lab

GPUS = "node1=hgx-h100,node2=hgx-h100,node3=hgx-h100-broken"
SUDO = {"INVOKE_SUDO_PASSWORD": "gpufab-lab"}
IMAGE = "gpufab-lab/gpu-test:1"
#: The eight NDR rails of the captured ibstat (leptonai/gpud testdata), never its bonded front-end.
RAILS = "=mlx5_0:1,mlx5_1:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1"
RUNTIME = {"args": [], "path": "nvidia-container-runtime"}


def write_inventory(path, user: str) -> str:
    # The lab's sshd cannot raise its hard memlock (no CAP_SYS_RESOURCE): IB nodes ask for what it allows.
    text = LAB_INVENTORY.read_text().replace("  user: root\n", f"  user: {user}\n")
    path.write_text(text.replace("vars:\n", f"vars:\n  memlock: 8192\n  gpu_test_image: {IMAGE}\n", 1))
    return str(path)


def make_gpu_test_image() -> None:
    """An image on every host, made offline: Debian's static busybox as /bin/sh (the hook adds nvidia-smi)."""
    for node in NODES:
        on_host(node, "cd /tmp && rm -rf gt && mkdir -p gt/root/bin && cd gt && apt-get download -q busybox-static "
                      ">/dev/null && dpkg-deb -x busybox-static_*.deb x && cp x/bin/busybox root/bin/ && "
                      f"ln -s busybox root/bin/sh && tar -C root -c . | docker import - {IMAGE} >/dev/null")


@pytest.fixture(scope="module")
def gpu_lab(lab, tmp_path_factory):
    """The session's lab, its hosts given GPU profiles (`lab.up` again with --gpus); plain hosts again after."""
    proc = cli("inv", "lab.up", "--nodes", "3", "--gpus", GPUS, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = tmp_path_factory.mktemp("gpu-profiles")
    yield {"gpu": {**lab, **SUDO, "GPUFAB_INVENTORY": write_inventory(d / "gpu.yaml", "gpu")},
           "root": {**lab, "GPUFAB_INVENTORY": write_inventory(d / "root.yaml", "root")}, "dir": d}
    reset_lab()  # plain hosts again for the modules after this one


def env_file(node: str) -> dict:
    text = on_host(node, "cat /etc/gpufab/netenv.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def report(env: dict) -> dict:
    return json.loads(open(env["GPUFAB_INVENTORY"].replace(".yaml", ".report.json")).read())


def assert_gpu_outcome(proc, env: dict) -> None:
    """What every bootstrap on these hosts must end with, whoever logs in."""
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr  # node3 is broken, and only node3
    steps = progress(out)
    assert {s for (n, s), v in steps.items() if v == "failed"} == {"verify"}, steps
    assert [n for (n, s), v in steps.items() if v == "failed"] == ["node3"], steps
    found = report(env)
    by_node = {r["node"]: r for r in found["nodes"]}
    assert {by_node[n]["result"] for n in ("node1", "node2")} <= {"ok", "changed"}
    reason = by_node["node3"]["result"]
    assert "GPU:" in reason and "5d" in reason.lower(), reason
    doctor = found["results"]["preflight"]["doctor"]
    assert doctor["node1"]["problems"] == [] and doctor["node2"]["problems"] == []
    problems = " | ".join(p["what"] + " -> " + p["fix"] for p in doctor["node3"]["problems"])
    assert "nvidia-fabricmanager is not running" in problems and "5d" in problems.lower(), problems
    # The all-reduce ran over the three nodes and judged itself honestly.
    assert re.search(r"^  All-reduce: 3 nodes, gloo .*; sums right; no expected figure for CPU/ethernet \(Gloo\)$",
                     out, re.M), out


def test_bootstrap_as_the_sudo_user_installs_the_toolkit_writes_ib_settings_and_fails_only_the_broken_node(gpu_lab):
    env = gpu_lab["gpu"]
    proc = cli("inv", "bootstrap", env=env, timeout=1800)
    assert_gpu_outcome(proc, env)
    for node in NODES:
        # NVIDIA's container toolkit from the (stand-in) repository, key pinned, runtime as nvidia-ctk writes it.
        assert on_host(node, "dpkg-query -W -f='${db:Status-Status} ${Version}' nvidia-container-toolkit").stdout \
            == "installed 1.17.8-1"
        assert on_host(node, "cat /etc/apt/sources.list.d/nvidia-container-toolkit.list").stdout == \
            "deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] http://198.18.0.1:8770 /\n"
        daemon = json.loads(on_host(node, "cat /etc/docker/daemon.json").stdout)
        assert daemon["runtimes"] == {"nvidia": RUNTIME}
        assert "nvidia" in on_host(node, "docker info --format '{{json .Runtimes}}'").stdout
        # InfiniBand settings for the eight rails only; the bond is the front-end.
        found = env_file(node)
        assert (found["NCCL_IB_DISABLE"], found["NCCL_IB_HCA"]) == ("0", RAILS) and "NCCL_IB_GID_INDEX" not in found
        assert "memlock 8192" in on_host(node, "cat /etc/security/limits.d/90-gpufab-memlock.conf").stdout
    fleet = report(env)["results"]["preflight"]["fleet"]["facts"]  # the verified nodes'
    assert {n: (f["GPUs"], f["InfiniBand"], f["driver"], f["CUDA"]) for n, f in fleet.items()} == dict.fromkeys(
        ("node1", "node2"), ("8 × NVIDIA H100 80GB HBM3", "8 × 400 Gb/s IB active (front-end mlx5_bond_0:1)",
                             "535.161.08", "12.2"))


def test_a_gpus_all_container_sees_each_nodes_gpus_and_is_told_its_fabric_flags(gpu_lab):
    make_gpu_test_image()
    verify = cli("inv", "docker.verify", env=gpu_lab["gpu"], timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = " ".join(verify.stdout.split())
    assert text.count("--gpus all: a container sees all 8 GPUs (gpufab-lab/gpu-test:1)") == 2
    assert text.count("--gpus all: a container sees all 7 GPUs (gpufab-lab/gpu-test:1)") == 1
    assert text.count("a container needs --device /dev/infiniband --cap-add IPC_LOCK --ulimit memlock=-1") == 3
    assert "mlx5_bond_0" not in text
    for node in NODES:
        listing = on_host(node, f"docker run --rm --gpus all {IMAGE} nvidia-smi -L").stdout
        assert listing.count("GPU ") == (7 if node == "node3" else 8) and "NVIDIA H100 80GB HBM3" in listing


def test_a_second_bootstrap_changes_nothing(gpu_lab):
    env = gpu_lab["gpu"]
    before = {n: on_host(n, "sha256sum /etc/docker/daemon.json /etc/gpufab/netenv.env").stdout for n in NODES}
    proc = cli("inv", "bootstrap", env=env, timeout=1800)
    assert_gpu_outcome(proc, env)
    steps = progress(proc.stdout)
    assert "changed" not in steps.values(), steps
    assert "0 changed" in proc.stdout
    assert {n: on_host(n, "sha256sum /etc/docker/daemon.json /etc/gpufab/netenv.env").stdout for n in NODES} == before


#: The README's bound on a bundle of three such nodes (measured: 32 KiB after a bootstrap, 21 KiB before).
BUNDLE_BOUND = 1 << 20
PROBE = "gpufab-bundle-probe"


def unpack_bundle(path, into) -> dict:
    """The archive's files as {path below its top folder: bytes}."""
    import tarfile
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    (top,) = list(into.iterdir())
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def test_bundle_holds_every_file_of_every_node_and_no_secret_and_names_a_dead_node(gpu_lab, tmp_path):
    from fabfile.ops import bundle

    env = gpu_lab["gpu"]
    secrets = {"HF_TOKEN": "hf_bundle-secret-4242", "WANDB_API_KEY": "wandb-bundle-key-77"}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    setup = cli("inv", "netenv.setup", "--secrets", "--env-file", str(tmp_path / ".env"), env=env, timeout=300)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    held = list(secrets.values()) + [SUDO["INVOKE_SUDO_PASSWORD"]]
    for node in NODES:
        # Ray's token (one made here where no bootstrap ran before: `-k bundle`), and every secret said in a
        # gpufab unit's journal, as a unit that logs its environment would.
        held.append(on_host(node, "f=/home/gpu/.ray/auth_token; test -s $f || { install -d -o gpu -m 700 /home/gpu/.ray "
                                  "&& head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9 > $f; chown gpu $f; }; cat $f"
                            ).stdout.strip())
        on_host(node, f"systemd-run --quiet -p RemainAfterExit=yes --unit={PROBE} sh -c "
                      f"'echo probe {held[-1]} HF_TOKEN={secrets['HF_TOKEN']} {secrets['WANDB_API_KEY']}'")
    try:
        out = tmp_path / "all.tar.gz"
        proc = cli("inv", "bundle", "-o", str(out), env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith(f"bundle: wrote {out} (") and proc.stdout.endswith("3 of 3 nodes\n"), proc.stdout
        assert out.stat().st_size < BUNDLE_BOUND
        files = unpack_bundle(out, tmp_path / "all")
        for node in NODES:
            assert {f"{node}/{name}" for name in bundle.FILES} <= set(files), sorted(files)
            assert b"Product Name" in files[f"{node}/nvidia-smi-q.txt"] and b"GPU0" in files[f"{node}/nvidia-smi-topo.txt"]
            assert b"bookworm" in files[f"{node}/os-release.txt"]
            assert b"NCCL_SOCKET_IFNAME=" in files[f"{node}/netenv.env"]
            assert b"probe ***" in files[f"{node}/journal-units.txt"], files[f"{node}/journal-units.txt"]
        assert b"Xid" in files["node3/kernel-errors.txt"] and b"79" in files["node3/kernel-errors.txt"]
        manifest = files["MANIFEST"].decode()
        assert "inventory " in manifest and ": 3 of 3 nodes collected" in manifest
        assert "node1/nvidia-smi-q.txt: every GPU's full state" in manifest and "`nvidia-smi -q`: exit 0" in manifest
        leaked = {(name, value) for name, data in files.items() for value in held if value.encode() in data}
        assert leaked == set()

        # A dead node: named with its reason, the others written, within the connect timeout (no hang).
        off = cli("inv", "lab.poweroff", "node3")
        assert off.returncode == 0, off.stderr
        started = time.monotonic()
        dead = cli("inv", "bundle", "-o", str(tmp_path / "two.tar.gz"), env=env, timeout=600)
        assert time.monotonic() - started < bundle.NODE_BUDGET + 60
        assert dead.returncode == 255, dead.stdout + dead.stderr
        # The host's address stays (its netns does): refused or timed out, as the kernel there answers.
        assert re.search(r"2 of 3 nodes; not collected: node3 \(connection (timed out after 10s|refused)\)$",
                         dead.stdout, re.M), dead.stdout
        files = unpack_bundle(tmp_path / "two.tar.gz", tmp_path / "two")
        assert re.search(r"^node3 \(198\.18\.0\.13\): NOT COLLECTED: connection (timed out after 10s|refused)$",
                         files["MANIFEST"].decode(), re.M), files["MANIFEST"]
        assert {f"{n}/{name}" for n in ("node1", "node2") for name in bundle.FILES} <= set(files)
        assert not any(name.startswith("node3/") for name in files)
    finally:
        on = cli("inv", "lab.poweron", "node3")
        assert on.returncode == 0, on.stderr
        for node in NODES:
            on_host(node, f"systemctl stop {PROBE}; systemctl reset-failed {PROBE}", check=False)


def test_bootstrap_as_root_reaches_the_same_verdicts(gpu_lab):
    env = gpu_lab["root"]
    proc = cli("inv", "bootstrap", env=env, timeout=1800)
    assert_gpu_outcome(proc, env)


def test_an_unreachable_repository_fails_that_nodes_docker_step_and_the_others_go_on(gpu_lab):
    env = dict(gpu_lab["gpu"])
    path = gpu_lab["dir"] / "unreachable.yaml"
    text = open(env["GPUFAB_INVENTORY"]).read()
    # node2's toolkit gone again, and the repository moved to a port nothing serves.
    on_host("node2", "apt-get purge -y -q nvidia-container-toolkit nvidia-container-toolkit-base "
                     "libnvidia-container-tools libnvidia-container1 >/dev/null; "
                     "rm -f /etc/apt/sources.list.d/nvidia-container-toolkit.list /etc/apt/keyrings/nvidia-container-toolkit.asc")
    path.write_text(text.replace("http://198.18.0.1:8770/gpgkey", "http://198.18.0.1:8779/gpgkey"))
    env["GPUFAB_INVENTORY"] = str(path)
    proc = cli("inv", "bootstrap", "--only", "docker", env=env, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert steps[("node2", "docker")] == "failed" and steps[("node1", "docker")] == "ok", steps
    assert "cannot fetch NVIDIA's container toolkit key from http://198.18.0.1:8779/gpgkey" in proc.stdout
    assert on_host("node2", "test -e /etc/apt/sources.list.d/nvidia-container-toolkit.list", check=False).returncode == 1
    # Back as it was, for the test after this one.
    again = cli("inv", "bootstrap", "--only", "docker", env=gpu_lab["gpu"], timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr


def test_reset_packages_leaves_no_toolkit(gpu_lab):
    proc = cli("inv", "reset", "--packages", "--yes", env=gpu_lab["gpu"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for node in NODES:
        left = on_host(node, "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' nvidia-container-toolkit "
                             "nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1 2>/dev/null; "
                             "ls /etc/apt/sources.list.d/ /etc/apt/keyrings/; cat /etc/docker/daemon.json 2>/dev/null",
                       check=False).stdout
        assert " installed" not in left and "nvidia" not in left, (node, left)
