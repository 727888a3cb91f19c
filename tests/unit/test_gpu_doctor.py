"""The GPU doctor, InfiniBand detection and the fleet table, on real-layout outputs (tests/fixtures)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fabfile.lab import gpu as gpu_lab
from fabfile.ops import doctor, fleet, limits, netenv
from fabfile.ops.shared import gpu, infiniband
from fabfile.ops.shared import nic
from fabfile.ops.shared import nodeenv

FIX = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURED = FIX / "captured"
#: Captured on real machines (tests/fixtures/README.md names each source).
H100_Q = "captured/gpu/h100-sxm-hgx8-535.nvidia-smi-q.txt"
H100_TOPO = "captured/gpu/h100-hgx8-nv18-8nic-570.topo-m.txt"


def text(name: str) -> str:
    """A fixture, ending in a newline (some captures were posted without one)."""
    body = (FIX / name).read_text()
    return body if body.endswith("\n") else body + "\n"


def h100_without(bus: str) -> str:
    """The captured 8-GPU H100 board as nvidia-smi shows it once the GPU at `bus` is lost (its block cut out:
    derived from the capture, no capture of this shape exists)."""
    blocks = text(H100_Q).split("\nGPU 00000000:")
    kept = [b for b in blocks[1:] if not b.lower().startswith(bus)]
    return (blocks[0].replace("Attached GPUs                             : 8",
                              f"Attached GPUs                             : {len(kept)}")
            + "".join("\nGPU 00000000:" + b for b in kept))


def node_output(smi: str = H100_Q, lspci: str = "derived/h100-hgx8.lspci-nn.txt",
                fm: str = "active", xid: str = "", docker: str = "runtimes=io.containerd.runc.v2 nvidia runc",
                ib: str = "verbs=no", extra: str = "", topo: str = H100_TOPO, smi_text: str = None) -> str:
    """ROOT_SCRIPT's output for one node, put together from the fixtures."""
    body = smi_text if smi_text is not None else (text(smi) if smi else None)
    smi_part = "@@smi-missing\n" if body is None else body + "\n@@smi-rc 0\n" + (f"@@topo\n{text(topo)}" if topo else "")
    return (f"@@lspci\n{text(lspci) if lspci else ''}@@smi\n{smi_part}@@fm\n{fm}\n@@xid\n{xid}\n"
            f"@@docker\n{docker}\n@@ib\n{ib}\n{extra}")


def diagnose(output: str, torch=None) -> doctor.Doctor:
    return doctor.diagnose(doctor.sections(output), torch)


# --------------------------------------------------------------------------- parsers


def test_smi_q_of_a_healthy_h100_node_gives_eight_gpus_with_fabric_complete_and_no_errors():
    report = doctor.parse_smi_q(text(H100_Q).splitlines())
    assert (report.driver, report.cuda) == ("535.161.08", "12.2")
    assert [g.bus for g in report.gpus] == ["19:00.0", "3b:00.0", "4c:00.0", "5d:00.0", "9b:00.0", "bb:00.0", "cb:00.0", "db:00.0"]
    assert {g.name for g in report.gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {(g.fabric_state, g.fabric_status, g.persistence) for g in report.gpus} == {("Completed", "Success", "Enabled")}
    assert {g.ecc_uncorrectable for g in report.gpus} == {0}
    assert not any(g.remap_pending or g.remap_failed or g.retired_pending for g in report.gpus)


def test_smi_q_of_a_v100_reads_the_old_double_bit_layout_and_a_pending_page_blacklist():
    """The captured V100 (old Single Bit / Double Bit ECC layout); its pending blacklist and two double-bit
    errors set here (no capture shows them)."""
    captured = text("captured/gpu/v100-sxm2-8gpu-gcp-vm-550.nvidia-smi-q.first-gpu.txt")
    assert "Pending Page Blacklist            : No" in captured
    bad = captured.replace("Pending Page Blacklist            : No", "Pending Page Blacklist            : Yes")
    volatile = bad.index("        Volatile")
    double = bad.index("Double Bit", volatile)
    total = bad.index("Total", double)
    line_end = bad.index("\n", total)
    bad = bad[:total] + bad[total:line_end].rsplit(":", 1)[0] + ": 2" + bad[line_end:]
    (g,) = doctor.parse_smi_q(bad.splitlines()).gpus
    assert (g.name, g.bus) == ("Tesla V100-SXM2-16GB", "00:04.0")
    assert g.ecc_uncorrectable == 2  # volatile Double Bit Total only, not the aggregate
    assert g.retired_pending and not g.remap_pending and g.fabric_state == "N/A"


def test_lspci_finds_gpus_and_nvswitches_and_the_sysfs_fallback_reads_the_same():
    devices = doctor.parse_pci(text("derived/h100-hgx8.lspci-nn.txt").splitlines())
    assert [d.kind for d in devices].count("gpu") == 8 and [d.kind for d in devices].count("nvswitch") == 4
    assert devices[2].bus == "19:00.0" and "H100 SXM5" in devices[2].name
    sysfs = doctor.parse_pci(["pci=0000:18:00.0 0x030200 0x2330", "pci=0000:05:00.0 0x068000 0x22a3",
                              "pci=0000:18:00.1 0x040300 0x22ba", "pci=0001:00:00.0 0x030200 0x20b2"])
    assert [(d.bus, d.kind) for d in sysfs] == [("18:00.0", "gpu"), ("05:00.0", "nvswitch"), ("18:00.1", "other"),
                                                ("0001:00:00.0", "gpu")]


def test_a_gpu_pair_without_nvlink_on_an_nvswitch_node_is_a_problem():
    """The captured NV18 matrix with the GPU2-GPU5 link on SYS (derived: no capture has a link down)."""
    rows = text(H100_TOPO).splitlines()
    for i, j in ((2, 5), (5, 2)):
        words = rows[i + 1].split()
        words[j + 1] = "SYS"
        rows[i + 1] = "\t".join(words)
    found = doctor.diagnose({**doctor.sections(node_output(topo=None)), "topo": rows})
    assert [f.what for f in found.problems] == ["1 GPU pairs without NVLink (GPU2-GPU5 SYS)"]


def test_xid_lines_are_read_with_their_gpu_and_code():
    xids = doctor.parse_xids(text("captured/gpu/dmesg-xid13-xid109-ctime-h100.txt").splitlines())
    assert [(x.bus, x.code) for x in xids] == [("cb:00.0", 13)] * 3 + [("cb:00.0", 109)]


def test_query_gpu_csv_still_parses_eight_rows():
    gpus, problem = gpu.parse_gpus(text("reconstructed/query-gpu.csv"))
    assert problem == "" and len(gpus) == 8 and gpus[7].memory_total == "81559"


# --------------------------------------------------------------------------- verdicts


def test_a_healthy_eight_gpu_node_is_ok_with_its_count_and_model():
    found = diagnose(node_output(), torch={"torch": "2.4.1", "cuda": "12.1", "gpus": 8, "path": "/opt/v/bin/python"})
    assert found.problems == [] and found.warnings == []
    assert found.verdict() == "8 × NVIDIA H100 80GB HBM3 ok"
    assert (found.pci_gpus, found.smi_gpus, found.nvswitches) == (8, 8, 4)


def test_a_gpu_missing_from_nvidia_smi_is_named_by_its_bus_with_the_xid_that_explains_it():
    xid79 = text("captured/gpu/dmesg-xid79-fallen-off-bus-pciehp-linkdown.txt").replace("0000:01:00", "0000:5d:00")
    found = diagnose(node_output(smi_text=h100_without("5d"), xid=xid79 + text("captured/gpu/dmesg-xid13-xid109-ctime-h100.txt")))
    assert found.verdict().startswith("7 × NVIDIA H100 80GB HBM3: 1 of 8 GPUs missing from nvidia-smi (5d:00.0)")
    whats = [f.what for f in found.problems]
    assert "XID 79 on GPU 5d:00.0 since boot: GPU has fallen off the bus" in whats
    # XID 13 is the program's fault: a warning, not a broken node.
    assert [f.what for f in found.warnings] == [
        "XID 13 on GPU cb:00.0 since boot (3 times): graphics engine exception (usually the program)",
        "XID 109 on GPU cb:00.0 since boot: context switch timeout (usually the program)"]


def test_an_nvswitch_node_without_fabric_manager_is_a_problem_that_says_what_to_install():
    """The captured board's fabric as it reads before fabric manager runs (State: In Progress: derived)."""
    waiting = text(H100_Q).replace("        State                             : Completed",
                                   "        State                             : In Progress")
    found = diagnose(node_output(smi_text=waiting, fm="inactive"))
    first = found.problems[0]
    assert first.what == "NVSwitch system (4 NVSwitches) but nvidia-fabricmanager is not running"
    assert "nvidia-fabricmanager" in first.fix and "802" in first.fix
    assert sum("NVLink fabric in progress" in f.what for f in found.problems) == 8
    # With fabric manager running and the fabric complete, the same node is fine.
    assert diagnose(node_output(fm="active")).problems == []


def test_a_pcie_node_needs_no_fabric_manager():
    found = diagnose(node_output(smi=None, lspci="captured/gpu/a10-qemu-vm.lspci-nn.txt", fm="inactive"))
    assert [f.what for f in found.problems] == ["1 NVIDIA GPU on the PCI bus but no driver (nvidia-smi not found)"]


@pytest.mark.parametrize("output, what", [
    ("Failed to initialize NVML: Driver/library version mismatch\n@@smi-rc 18", "the driver was upgraded"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n@@smi-rc 9", "driver is not loaded"),
    ("@@smi-rc 124", "nvidia-smi hung"),
])
def test_nvidia_smi_failures_say_what_happened_and_what_to_do(output, what):
    found = diagnose(f"@@lspci\n{text('captured/gpu/a10-qemu-vm.lspci-nn.txt')}@@smi\n{output}\n@@fm\ninactive\n")
    assert what in found.problems[0].what and found.problems[0].fix


def test_container_runtime_and_torch_views_are_checked_where_there_are_gpus():
    no_runtime = diagnose(node_output(docker="runtimes=io.containerd.runc.v2 runc\nctk=yes"))
    assert no_runtime.problems[0].what == "containers cannot see the GPUs (no NVIDIA container runtime)"
    assert "nvidia-ctk runtime configure" in no_runtime.problems[0].fix
    # The toolkit's hook is enough for --gpus, without the runtime in daemon.json.
    assert diagnose(node_output(docker="runtimes=runc\nhook=yes")).problems == []
    container = diagnose(node_output(extra="@@container\nGPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)\n@@container-rc 0\n"))
    assert container.problems[0].what.startswith("a container sees 1 of 8 GPUs")
    cpu_torch = diagnose(node_output(), torch={"torch": "2.4.1+cpu", "cuda": "", "gpus": 0, "path": "/usr/bin/python3"})
    assert "CPU-only build" in cpu_torch.problems[0].what
    blind = diagnose(node_output(), torch={"torch": "2.4.1", "cuda": "12.1", "gpus": 0, "path": "p"})
    assert blind.problems[0].what == "torch sees 0 of 8 GPUs"


def test_a_node_without_gpus_is_none_and_no_problem():
    found = diagnose("@@lspci\n@@smi\n@@smi-missing\n@@fm\ninactive\n@@xid\n@@docker\nruntimes=runc\n@@ib\nverbs=no\n")
    assert (found.verdict(), found.problems, found.has_gpus) == ("none", [], False)


def test_dcgm_failure_in_deep_mode_is_a_problem():
    out = node_output(extra="@@dcgm\n| Memory            | Fail - All                    |\n@@dcgm-rc 226\n")
    assert diagnose(out).problems[0].what == "dcgmi diag -r 1 failed (Memory            | Fail - All)"


# --------------------------------------------------------------------------- InfiniBand / RoCE


def read_tree(tree, tmp_path) -> infiniband.IbFacts:
    """Run the real sysfs script against a tree made from captures instead of /sys/class/infiniband."""
    gpu_lab.write_tree(tree, tmp_path)
    script = infiniband.SCRIPT.replace(infiniband.SYSFS, str(tmp_path / "infiniband"))
    return infiniband.parse_sysfs(subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout)


def test_an_ndr_node_lists_its_active_rails_and_leaves_its_down_front_end_ports_out(tmp_path):
    ports = infiniband.parse_ibstat((CAPTURED / "net" / "ibstat_h100_8xNDR_some_ethernet_ports_down_disabled.txt")
                                    .read_text())
    facts = read_tree(gpu_lab.sysfs_tree(ports), tmp_path)
    rails = ["mlx5_0:1", "mlx5_10:1", "mlx5_11:1", "mlx5_3:1", "mlx5_4:1", "mlx5_5:1", "mlx5_6:1", "mlx5_9:1"]
    assert sorted(p.name for p in facts.active) == sorted(rails + ["mlx5_1:1"])  # the front-end's one up port too
    assert sorted(p.name for p in facts.rails()) == rails and {p.gbps for p in facts.rails()} == {"400 Gb/s"}
    assert infiniband.nccl_settings(facts) == {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "=" + ",".join(rails)}


def test_a_roce_node_gets_the_gid_index_of_its_ipv4_roce_v2_entry(tmp_path):
    facts = read_tree(gpu_lab.roce_tree(), tmp_path)
    assert [(p.name, p.gid_index, p.netdevs) for p in facts.ports] == [("mlx5_0:1", 7, ("net1",)), ("mlx5_1:1", 7, ("net2",))]
    assert infiniband.nccl_settings(facts) == {"NCCL_IB_DISABLE": "0", "NCCL_IB_HCA": "=mlx5_0:1,mlx5_1:1",
                                               "NCCL_IB_GID_INDEX": "7"}


def test_active_ports_without_libibverbs_are_a_doctor_problem():
    ib = "ibport=mlx5_0 1|4: ACTIVE|InfiniBand|400 Gb/sec (4X NDR)|\nverbs=no"
    assert "no libibverbs" in diagnose(node_output(ib=ib)).problems[0].what
    assert diagnose(node_output(ib=ib.replace("verbs=no", "verbs=yes"))).problems == []


def test_netenv_auto_writes_ib_settings_on_ib_nodes_and_ethernet_elsewhere():
    ib_facts = nic.parse_nic_facts("route=198.19.0.11 dev ens1f0np0 src 198.19.0.12\n"
                                      "ibport=mlx5_0 1|4: ACTIVE|Ethernet|100 Gb/sec (4X EDR)|ens1f0np0\n"
                                      "ibgid=mlx5_0 1 3|RoCE v2|0000:0000:0000:0000:0000:ffff:c613:000c\nverbs=yes")
    ib, why = netenv.ib_choice("auto", ib_facts)
    env = netenv.netenv_files("n", "ens1f0np0", "10.0.0.1", 29500, "auto", ib=ib, why=why)[0].content
    lines = nodeenv.env_lines(env)
    assert (lines["NCCL_IB_DISABLE"], lines["NCCL_IB_HCA"], lines["NCCL_IB_GID_INDEX"]) == ("0", "=mlx5_0:1", "3")
    assert "NCCL_NET_GDR_LEVEL" not in lines and "active ports: mlx5_0:1 100 Gb/s RoCE" in env
    plain = nic.parse_nic_facts("route=198.19.0.11 dev eth1 src 198.19.0.12\nverbs=no")
    ib, why = netenv.ib_choice("auto", plain)
    lines = nodeenv.env_lines(netenv.netenv_files("n", "eth1", "10.0.0.1", 29500, "auto", ib=ib, why=why)[0].content)
    assert lines["NCCL_IB_DISABLE"] == "1" and "NCCL_IB_HCA" not in lines
    # The ethernet profile keeps IB off even where ports are active.
    assert netenv.ib_choice("ethernet", ib_facts) == (None, "")


def test_limits_raise_memlock_only_on_ib_nodes():
    names = [f.path for f in limits.limit_files(65536)]
    assert limits.MEMLOCK_FILE not in names
    files = {f.path: f.content for f in limits.limit_files(65536, "unlimited")}
    assert "*       hard    memlock unlimited" in files[limits.MEMLOCK_FILE]
    assert "LimitMEMLOCK=infinity" in files[limits.DOCKER_FILE]
    assert "DefaultLimitMEMLOCK=8192K" in {f.path: f.content for f in limits.limit_files(65536, "8192")}[limits.SYSTEMD_FILE]
    with pytest.raises(Exception):
        limits.check_memlock("lots")


# --------------------------------------------------------------------------- the fleet


def facts(driver="535.129.03", cuda="12.2", torch="2.4.1", nccl="2.20.5", ray="2.60.0", python="3.11.9", nic="ens14np0"):
    out = (f"os=Ubuntu 22.04.4 LTS\nkernel=5.15.0-105-generic\ndriver={driver}\ncuda={cuda}\n"
           + "gpu=NVIDIA H100 80GB HBM3\n" * 8 + f"nic={nic}\nspeed=100000\nmtu=9000\ndocker=26.1.3\nray={ray}\n"
           + "ibport=mlx5_0 1|4: ACTIVE|InfiniBand|400 Gb/sec (4X NDR)|\nverbs=yes\n")
    return fleet.parse(out, {"python": python, "torch": torch, "nccl_version": nccl})


def test_fleet_folds_equal_values_and_marks_the_odd_node_out():
    found = {"node1": facts(nic="enp27s0f0np0"), "node2": facts(), "node3": facts(driver="550.54.15", torch="2.3.0")}
    rows, mismatched = fleet.fold(found)
    by_fact = {}
    for r in rows:
        by_fact.setdefault(r.fact, []).append((r.value, r.nodes, r.odd))
    assert by_fact["GPUs"] == [("8 × NVIDIA H100 80GB HBM3", "all (3)", False)]
    assert by_fact["NIC"] == [("enp27s0f0np0 (100 Gb/s)", "node1 (1)", False), ("ens14np0 (100 Gb/s)", "node[2-3] (2)", False)]
    assert by_fact["driver"] == [("535.129.03", "node[1-2] (2)", False), ("550.54.15", "node3 (1)", True)]
    assert by_fact["InfiniBand"] == [("1 × 400 Gb/s IB active", "all (3)", False)]
    assert mismatched == {"driver major": ["node3"], "torch": ["node3"]}
    assert ("", "*550.54.15*", "node3 (1)") in fleet.table_rows(rows)


def test_fleet_is_quiet_about_a_driver_minor_difference_and_loud_about_nccl():
    _, mismatched = fleet.fold({"a1": facts(), "a2": facts(driver="535.161.08")})
    assert mismatched == {}
    _, mismatched = fleet.fold({"a1": facts(), "a2": facts(nccl="2.18.1"), "a3": facts()})
    assert mismatched == {"NCCL": ["a2"]}


def test_fleet_of_lab_like_nodes_without_gpus_matches():
    plain = fleet.parse("os=Debian GNU/Linux 12 (bookworm)\nkernel=6.1\nnic=eth1\nmtu=1500\nverbs=no\n",
                        {"python": "3.11.2", "torch": "1.13.0a0"})
    assert plain.values["GPUs"] == "none" and plain.values["InfiniBand"] == "none" and plain.values["driver"] == "-"
    assert fleet.fold({"n1": plain, "n2": plain})[1] == {}


def test_bad_doctor_and_limits_values_are_input_errors_naming_the_setting():
    from fabfile.core.errors import InputError
    from fabfile.core.inventory import Inventory, Node
    inv = Inventory(nodes=(Node("n1", "198.18.0.11", "198.19.0.11"),), vars={"gpu_test_image": "x; rm -rf /"})
    with pytest.raises(InputError, match="invalid image name"):
        doctor.read(None, inv, {})
    with pytest.raises(InputError, match="invalid memlock"):
        limits.check_memlock("-1")
    assert doctor.read(None, Inventory(nodes=inv.nodes), {"image": "nvcr.io/nvidia/cuda:12.4.1-base"}).image == \
        "nvcr.io/nvidia/cuda:12.4.1-base"
