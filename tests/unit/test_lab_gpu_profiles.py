"""The lab's GPU profiles and stand-ins, run here: what a GPU-shaped lab host will show gpufab.

The doctor's real root script runs with the stand-in `nvidia-smi`, `lspci` and `dmesg` first in PATH and the
profile's files where the stand-ins read them, so the lab test's premise (a healthy HGX H100 is ok, the
broken profile has lost bus 5d and its fabric manager) is checked before a lab boots. The stand-in
`nvidia-ctk` and hook are run on files here as dockerd would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fabfile.core.errors import InputError
from fabfile.lab import gpu as lab_gpu
from fabfile.ops import doctor
from fabfile.ops.shared import gpu, infiniband

STANDINS = lab_gpu.STANDINS


def install(profile: str, root: Path, fm_state: str) -> dict:
    """The profile's files under `root` (DATA and sysfs), the stand-ins in `root/bin`; the environment to use them."""
    p = lab_gpu.PROFILES[profile]
    for inner, (content, _mode) in lab_gpu.profile_files(p).items():
        if inner.startswith(lab_gpu.DATA):
            target = root / "data" / inner[len(lab_gpu.DATA) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("nvidia-smi", "lspci", "dmesg"):
        (bin_dir / name).write_text((STANDINS / name).read_text())
        (bin_dir / name).chmod(0o755)
    # systemctl as the profile's units answer: the fabric manager's state; no docker here.
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\ncase \"$*\" in *nvidia-fabricmanager*) echo {fm_state};; "
                                       "*) exit 3;; esac\n")
    (bin_dir / "systemctl").chmod(0o755)
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GPUFAB_LAB_GPU_DATA": str(root / "data")}


def root_pass(root: Path, env: dict, verbs: bool) -> doctor.Doctor:
    """The doctor's root script on this machine, its tools the stand-ins; `verbs`: libibverbs present (as on the
    lab's hosts, whose python3-torch brings it)."""
    ldconfig = root / "bin" / "ldconfig"
    ldconfig.write_text("#!/bin/sh\n" + ("echo '\tlibibverbs.so.1 (libc6,x86-64) => /usr/lib/libibverbs.so.1'\n"
                                         if verbs else "true\n"))
    ldconfig.chmod(0o755)
    script = doctor.ROOT_SCRIPT.replace(infiniband.SYSFS, str(root / "data" / "sysfs" / "infiniband"))
    out = subprocess.run(["sh", "-c", script, "sh", "20", "0", ""], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout
    return doctor.diagnose(doctor.sections(out))


def test_the_healthy_hgx_profile_is_eight_h100_with_eight_ib_rails_and_nothing_wrong(tmp_path):
    found = root_pass(tmp_path, install("hgx-h100", tmp_path, "active"), verbs=True)
    assert found.verdict() == "8 × NVIDIA H100 80GB HBM3 ok" and found.problems == []
    assert (found.pci_gpus, found.smi_gpus, found.nvswitches) == (8, 8, 4)
    assert infiniband.summary(found.ib) == "8 × 400 Gb/s IB active (front-end mlx5_bond_0:1)"
    assert infiniband.nccl_settings(found.ib)["NCCL_IB_HCA"] == \
        "=mlx5_0:1,mlx5_1:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1"


def test_the_broken_profile_has_lost_bus_5d_with_its_xid_79_and_its_fabric_manager_is_down(tmp_path):
    found = root_pass(tmp_path, install("hgx-h100-broken", tmp_path, "failed"), verbs=True)
    whats = [f.what for f in found.problems]
    assert whats[0] == "1 of 8 GPUs missing from nvidia-smi (5d:00.0)"
    assert "NVSwitch system (4 NVSwitches) but nvidia-fabricmanager is not running" in whats
    assert any(w.startswith("XID 79 on GPU 5d:00.0") for w in whats), whats
    assert found.verdict().startswith("7 × NVIDIA H100 80GB HBM3: 1 of 8 GPUs missing")


def test_the_stand_in_nvidia_smi_answers_every_query_gpufab_makes(tmp_path):
    env = install("hgx-h100", tmp_path, "active")
    smi = lambda *args: subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, env=env, check=True).stdout
    listing = smi("-L").splitlines()
    assert len(listing) == 8 and listing[0].startswith("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-")
    rows, problem = gpu.parse_gpus(smi("--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                                       "--format=csv,noheader,nounits"))
    assert problem == "" and len(rows) == 8 and rows[0].memory_total == "81559"
    assert "CUDA Version: 12.2" in smi()
    assert smi("topo", "-m") == (lab_gpu.CAPTURED / "gpu" / "h100-hgx8-nv18-8nic-570.topo-m.txt").read_text()


def test_nvidia_ctk_edits_daemon_json_as_nvidias_does_and_its_dry_run_writes_nothing(tmp_path):
    config = tmp_path / "daemon.json"
    config.write_text('{"log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}\n')
    ctk = [str(STANDINS / "nvidia-ctk"), "runtime", "configure", "--runtime=docker", f"--config={config}"]
    dry = subprocess.run([*ctk, "--dry-run"], capture_output=True, text=True, check=True)
    assert json.loads(dry.stdout)["runtimes"]["nvidia"] == {"args": [], "path": "nvidia-container-runtime"}
    assert config.read_text().startswith('{"log-driver"')  # untouched
    subprocess.run(ctk, capture_output=True, text=True, check=True)
    written = json.loads(config.read_text())
    assert written == {"log-driver": "journald", "runtimes": {
        "crun": {"path": "/usr/bin/crun"}, "nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    assert config.read_text().startswith('{\n    "log-driver"')  # Go's MarshalIndent, 4 spaces


def test_the_hook_gives_a_container_an_nvidia_smi_that_lists_the_hosts_gpus(tmp_path):
    env = install("hgx-h100-broken", tmp_path, "failed")
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}}))
    env["GPUFAB_LAB_NVIDIA_SMI"] = str(tmp_path / "bin" / "nvidia-smi")
    subprocess.run([str(STANDINS / "nvidia-container-runtime-hook"), "prestart"], input=json.dumps(
        {"ociVersion": "1.0.2", "id": "x", "status": "created", "bundle": str(bundle)}), text=True, env=env, check=True)
    inside = subprocess.run(["sh", str(bundle / "rootfs" / "usr" / "bin" / "nvidia-smi")], capture_output=True,
                            text=True, check=True).stdout
    assert inside.count("GPU ") == 7 and "NVIDIA H100 80GB HBM3" in inside


def test_gpus_option_takes_one_profile_or_one_per_host_and_names_what_it_does_not_know():
    names = ["node1", "node2", "node3"]
    assert {h: p.name for h, p in lab_gpu.parse_gpus_option("hgx-h100", names).items()} == dict.fromkeys(names, "hgx-h100")
    per_host = lab_gpu.parse_gpus_option("node2=hgx-h100,node3=hgx-h100-broken", names)
    assert {h: p.name for h, p in per_host.items()} == {"node2": "hgx-h100", "node3": "hgx-h100-broken"}
    for bad, where in (("h100", "unknown GPU profile"), ("node9=hgx-h100", "no lab host 'node9'")):
        with pytest.raises(InputError, match=where):
            lab_gpu.parse_gpus_option(bad, names)
