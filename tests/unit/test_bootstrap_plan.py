import io
import json
import time

import pytest

from fabfile.core import runfiles as plan
from fabfile.core.chain import select_steps as choose
from fabfile.core.runreport import Report
from fabfile.ops.storage import sshfs
from fabfile.ops import storage
from fabfile.ops.chain import CHAIN
from fabfile.core.errors import InputError
from fabfile.core.fanout import FAILED, OK, HostResult
from fabfile.core.inventory import parse_inventory
from fabfile.core.progress import Progress

INVENTORY = parse_inventory(
    """
nodes:
  - {name: rental0, public: 203.0.113.10, private: 10.0.0.10}
  - {name: rental1, public: 203.0.113.11, private: 10.0.0.11}
  - {name: rental2, public: 203.0.113.12, private: 10.0.0.12, port: 2222, key: ~/.ssh/k}
"""
)


STEPS = ["preflight", "fetch", "wheels", "limits", "docker", "images", "containers", "netenv", "mesh", "storage", "ray", "tools", "allreduce", "verify"]


def select_steps(skip, only, disabled):
    return [s.name for s in choose(CHAIN, skip, only, disabled)]


def test_all_steps_in_chain_order_by_default():
    assert select_steps(None, None, None) == STEPS


def test_skip_only_and_inventory_disable():
    # `nfs` is the storage step's older name.
    assert select_steps("nfs,docker", None, None) == ["preflight", "fetch", "wheels", "limits", "images", "containers", "netenv", "mesh", "ray", "tools", "allreduce", "verify"]
    # --only keeps chain order whatever order it was given in, and preflight.
    assert select_steps(None, "ray,limits", None) == ["preflight", "limits", "ray"]
    assert select_steps(None, None, ["nfs"]) == ["preflight", "fetch", "wheels", "limits", "docker", "images", "containers", "netenv", "mesh", "ray", "tools", "allreduce", "verify"]
    assert select_steps(None, None, "storage,ray") == ["preflight", "fetch", "wheels", "limits", "docker", "images", "containers", "netenv", "mesh", "tools", "allreduce", "verify"]
    # An explicit --only beats the inventory's bootstrap_skip.
    assert select_steps(None, "storage", ["nfs"]) == ["preflight", "storage"]


@pytest.mark.parametrize("skip,only,disabled,message", [
    ("dokcer", None, None, "unknown step 'dokcer'"),
    (None, "preflight", None, "--only: preflight always runs, every step needs its facts: it is not one of the optional"),
    ("preflight", None, None, "--skip: preflight always runs"),
    ("nfs", "ray", None, "--skip or --only, not both"),
    (None, None, ["bogus"], "bootstrap_skip: unknown step 'bogus'"),
])
def test_bad_step_names_are_input_errors(skip, only, disabled, message):
    with pytest.raises(InputError, match=message):
        select_steps(skip, only, disabled)


def test_run_files_sit_next_to_the_inventory():
    files = plan.run_files("inventory/lab.yaml", from_cli_hosts=False)
    assert (files.markdown, files.json, files.failed) == (
        "inventory/lab.report.md", "inventory/lab.report.json", "inventory/lab.failed")
    assert plan.run_files("inventory/hosts.yaml", from_cli_hosts=True).json == "inventory/fab-hosts.report.json"
    assert plan.run_files("hosts.yaml", from_cli_hosts=False).failed == "./hosts.failed"


def test_failed_hosts_file_round_trip_and_selection():
    text = plan.failed_hosts_text([plan.Failure("rental2", "203.0.113.12", "docker", "connection lost")])
    assert "rental2 203.0.113.12 docker: connection lost" in text
    assert plan.parse_hosts_file(text) == ["rental2"]
    wanted = plan.parse_hosts_file("# a comment\n203.0.113.10\n\nrental2  # by name\nrental2\n")
    assert wanted == ["203.0.113.10", "rental2"]
    assert [n.name for n in plan.pick_nodes(INVENTORY, wanted, "f")] == ["rental0", "rental2"]
    with pytest.raises(InputError, match="not in the inventory: rental9"):
        plan.pick_nodes(INVENTORY, ["rental9"], "f")


COLUMNS = [("node", "Node"), ("public", "Public IP"), ("private", "Private IP"), ("nid", "NID"), ("role", "Role"),
           ("nic", "NIC"), ("docker", "Docker"), ("nfs", "NFS"), ("ulimit", "ulimit"), ("ray", "Ray"), ("gpus", "GPUs"),
           ("result", "Result")]


def report() -> Report:
    rows = [dict(node="rental0", public="203.0.113.10", private="10.0.0.10", nid=0, role="head", nic="ens1",
                 docker="27.1", nfs="exported", ulimit="65536", ray="alive (head)", gpus="8 (Ray 8)", result="ok")]
    return Report("2026-11-21 10:00:00 +0000", "inventory/hosts.yaml", STEPS, rows, COLUMNS,
                       checks=["Ray: 1/1 nodes alive"], warnings=["firewall rule on rental0: iptables -A INPUT -j DROP"],
                       access=["ssh rental0"], summary="bootstrap: 1 hosts: 0 changed, 1 ok, 0 failed, 0 unreachable")


def test_report_renders_every_column_and_section():
    text = report().to_text()
    for _, column in COLUMNS:
        assert column in text
    assert "8 (Ray 8)" in text and "Verification\n  Ray: 1/1 nodes alive" in text
    assert "Warnings\n  firewall rule" in text and "Quick access\n  ssh rental0" in text
    md = report().to_markdown()
    assert md.startswith("# gpufab cluster report")
    assert "| rental0 " in md and "## Quick access\n\n- `ssh rental0`" in md


def test_report_json_round_trip_and_damage():
    saved = report().to_json()
    assert Report.from_json(saved, "r.json") == report()
    assert json.loads(saved)["nodes"][0]["gpus"] == "8 (Ray 8)"
    with pytest.raises(InputError, match="r.json: not a gpufab report"):
        Report.from_json('{"nodes": 1}', "r.json")


def test_ssh_commands_use_aliases_when_the_user_has_them():
    aliases = plan.ssh_aliases("Host rental0\n    HostName 203.0.113.10\nHost *\n    ServerAliveInterval 30\n")
    assert aliases == ["rental0"]
    assert plan.ssh_command(INVENTORY.nodes[0], aliases) == "ssh rental0"
    assert plan.ssh_command(INVENTORY.nodes[2], aliases, "/k/known") == (
        "ssh -o UserKnownHostsFile=/k/known -i ~/.ssh/k -p 2222 root@203.0.113.12")


KERNEL_WITH_NFS = "nodev\tsysfs\nnodev\tnfs\nnodev\tnfsd\nkernel 6.1.0\n"
KERNEL_WITHOUT = "nodev\tsysfs\next4\nkernel 6.18.44\n"


FUSE = "fusedev\nnodev\tfuse\n"


def test_storage_backend_choice():
    both = {"rental0": KERNEL_WITH_NFS, "rental1": KERNEL_WITH_NFS}
    assert storage.choose_backend("nfs", "rental0", both, {"rental1": FUSE}) == ("nfs", "")
    assert storage.choose_backend("auto", "rental0", both, {"rental1": FUSE})[0] == "nfs"
    no_nfsd = {"rental0": KERNEL_WITHOUT, "rental1": KERNEL_WITH_NFS}
    backend, why = storage.choose_backend("nfs", "rental0", no_nfsd, {"rental1": FUSE})
    assert backend is None and why.startswith("NFS unavailable: rental0: this kernel (6.18.44) has no NFS server (nfsd)")
    backend, why = storage.choose_backend("auto", "rental0", no_nfsd, {"rental1": FUSE})
    assert backend == "sshfs" and why.startswith("auto: NFS unavailable (rental0: ")
    no_dev = {"rental1": "nodev\tfuse\n"}
    assert storage.choose_backend("sshfs", "rental0", no_nfsd, no_dev) == (
        None, "sshfs unavailable: rental1: /dev/fuse is missing (a container without the FUSE device?)")
    backend, why = storage.choose_backend("auto", "rental0", no_nfsd, {"rental1": "fusedev\n"})
    assert backend is None and "sshfs unavailable (rental1: this kernel has no FUSE" in why
    with pytest.raises(InputError, match="unknown storage backend 'gluster'"):
        storage.check_backend("gluster")


def test_sshfs_key_lines_are_restricted_and_kept_per_worker():
    line = sshfs.key_line("rental1", "10.0.0.11", "ssh-ed25519 AAAAC3Nza gpufab-sshfs@rental1\n")
    assert line == 'restrict,from="10.0.0.11",command="internal-sftp" ssh-ed25519 AAAAC3Nza gpufab-sshfs@rental1'
    with pytest.raises(ValueError):
        sshfs.key_line("rental1", "10.0.0.11", "ssh-ed25519 AAAA gpufab-sshfs@rental2")  # another worker's key
    with pytest.raises(ValueError):
        sshfs.key_line("rental1", "10.0.0.11", 'command="sh" ssh-ed25519 AAAA gpufab-sshfs@rental1')
    block = sshfs.keys_block({"rental2": "L2 gpufab-sshfs@rental2", "rental1": "L1 gpufab-sshfs@rental1"})
    text = "ssh-ed25519 AAAA me@laptop\n" + block
    assert sshfs.keys_in_block(text) == {"rental1": "L1 gpufab-sshfs@rental1", "rental2": "L2 gpufab-sshfs@rental2"}
    assert block.index("rental1") < block.index("rental2") and sshfs.keys_block({}) == ""


def test_sshfs_fstab_line_and_rates():
    block = sshfs.fstab_block("root", "10.0.0.10", "/mnt/shared", 2299)
    line = [x for x in block.splitlines() if not x.startswith("#")]
    assert len(line) == 1
    src, mount, fstype, options, *_ = line[0].split()
    assert (src, mount, fstype) == ("root@10.0.0.10:/share", "/mnt/shared", "fuse.sshfs")
    for option in ("_netdev", "reconnect", "ServerAliveInterval=15", "IdentityFile=/etc/gpufab/sshfs/id_ed25519",
                   "StrictHostKeyChecking=yes", "Port=2299"):
        assert option in options.split(",")
    dd = "64+0 records in\n64+0 records out\n67108864 bytes (67 MB, 64 MiB) copied, 0.5 s, 134 MB/s\n"
    assert storage.dd_rate(dd) == 128.0 and storage.dd_rate("dd: error") is None
    assert storage.rates_text(128.0, None) == "64 MiB write 128 MiB/s, read ?"


def test_progress_prints_one_line_per_host_and_step_and_ticks_while_running():
    out = io.StringIO()
    progress = Progress(out=out, every=0.05, width=7)
    node0, node1 = INVENTORY.nodes[:2]
    with progress.step("docker", [node0, node1]):
        progress.done("docker", HostResult(node0, OK, seconds=1.25))
        time.sleep(0.2)
        progress.done("docker", HostResult(node1, FAILED, 1, reason="apt failed", seconds=2))
    lines = out.getvalue().splitlines()
    assert "rental0 docker    ok            1.2s" in lines[0]
    assert any("running" in line and "on rental1" in line and "rental0" not in line for line in lines[1:-1])
    assert lines[-1].endswith("rental1 docker    failed        2.0s  apt failed")
