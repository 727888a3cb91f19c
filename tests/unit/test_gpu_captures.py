"""The GPU doctor and netenv on outputs other people captured on real machines (tests/fixtures/captured).

Each test asserts the conclusion a person reading the capture reaches (its
entry in tests/fixtures/README.md says what that is): a healthy node is ok, a
broken one is named with what is broken, a board built with partial NVLink is
not "broken NVLink", a cloud VM's per-GPU PCI domains keep GPUs apart, and a
front-end NIC is never an NCCL rail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from fabfile.ops import doctor, netenv
from fabfile.ops.shared import infiniband, nccl
from fabfile.ops.shared import nic

CAPTURED = Path(__file__).resolve().parent.parent / "fixtures" / "captured"


def lines(name: str) -> List[str]:
    return (CAPTURED / "gpu" / name).read_text().splitlines()


def judged(smi: Optional[str] = None, lspci: Optional[str] = None, topo: Optional[str] = None,
           kernel: Optional[str] = None, nvlink: Optional[str] = None, fm: str = "active") -> doctor.Doctor:
    """The doctor's verdict on one node whose root pass printed these captures."""
    parts: Dict[str, List[str]] = {"lspci": lines(lspci) if lspci else [], "fm": [fm], "docker": [],
                                   "ib": ["verbs=no"], "xid": lines(kernel) if kernel else []}
    if smi:
        parts.update({"smi": lines(smi), "smi-rc": ["0"], "topo": lines(topo) if topo else [],
                      "nvlink": lines(nvlink) if nvlink else []})
    else:
        parts["smi-missing"] = [""]
    return doctor.diagnose(parts)


def whats(d: doctor.Doctor, level: str = doctor.PROBLEM) -> List[str]:
    return [f.what for f in d.findings if f.level == level]


# --------------------------------------------------------------------------- nvidia-smi -q

HEALTHY = [
    # (capture, GPUs in it, model, driver)
    ("h100-sxm-hgx8-535.nvidia-smi-q.txt", 8, "NVIDIA H100 80GB HBM3", "535.161.08"),
    ("h100-sxm-8gpu-vm-passthrough-535.183.nvidia-smi-q.first-gpu.txt", 1, "NVIDIA H100 80GB HBM3", "535.183.01"),
    ("h100-sxm-vm-passthrough-590.nvidia-smi-q.txt", 1, "NVIDIA H100 80GB HBM3", "590.48.01"),
    ("h100-mig-4instances-vm-590.nvidia-smi-q.txt", 1, "NVIDIA H100 80GB HBM3", "590.48.01"),
    ("h200-vm-passthrough-580.nvidia-smi-q.txt", 1, "NVIDIA H200", "580.173.02"),
    ("h100-nvl-2gpu-550.nvidia-smi-q.first-gpu.txt", 1, "NVIDIA H100 NVL", "550.54.14"),
    ("a100-sxm4-80gb-hgx4-555.nvidia-smi-q.first-gpu.txt", 1, "NVIDIA A100-SXM4-80GB", "555.42.02"),
    ("gh200-passthrough-550-remapped-1.nvidia-smi-q.txt", 1, "NVIDIA GH200 480GB", "550.127.05"),
    ("l4-550-x8-link.nvidia-smi-q.txt", 1, "NVIDIA L4", "550.90.07"),
    ("l40s-vm-passthrough-595.nvidia-smi-q.txt", 1, "NVIDIA L40S", "595.80"),
    ("v100-sxm2-8gpu-gcp-vm-550.nvidia-smi-q.first-gpu.txt", 1, "Tesla V100-SXM2-16GB", "550.127.05"),
    ("rtx4090-8gpu-535-addressing-unknown-error.nvidia-smi-q.first-gpu.txt", 1, "NVIDIA GeForce RTX 4090",
     "535.154.05"),
    ("rtx5090-570-blackwell.nvidia-smi-q.txt", 1, "NVIDIA GeForce RTX 5090", "570.124.06"),
    ("rtx-a6000-9gpu-550.nvidia-smi-q.first-gpu.noheader.txt", 1, "NVIDIA RTX A6000", ""),
    ("gtx680-470-legacy-fields.nvidia-smi-q.txt", 1, "NVIDIA GeForce GTX 680", "470.256.02"),
    ("azure-ndv4-a100-sxm4-40gb-8gpu-domains-460.nvidia-smi-q.first-2-gpus.txt", 2, "A100-SXM4-40GB", "460.32.03"),
    ("a100-sxm4-80gb-470.103.01.nvidia-smi-q.partial.txt", 1, "NVIDIA A100-SXM4-80GB", "470.103.01"),
    ("a10g-aws-510.85.02.nvidia-smi-q.partial.txt", 1, "NVIDIA A10G", "510.85.02"),
    ("grid-p40-24q-vgpu-guest-535.161.08.nvidia-smi-q.partial.txt", 1, "GRID P40-24Q", "535.161.08"),
    ("rtx2080super-linux-595.71.05.nvidia-smi-q.txt", 1, "NVIDIA GeForce RTX 2080 SUPER", "595.71.05"),
    ("rtx3060-laptop-windows-610.88.nvidia-smi-q.txt", 1, "NVIDIA GeForce RTX 3060 Laptop GPU", "610.88"),
]


@pytest.mark.parametrize("capture,count,model,driver", HEALTHY, ids=[h[0].split(".")[0] for h in HEALTHY])
def test_a_healthy_gpu_is_read_whole_and_found_fine(capture, count, model, driver):
    d = judged(smi=capture)
    assert (d.smi_gpus, d.model, d.driver) == (count, model, driver)
    assert whats(d) == []  # no problem; field-level "Unknown Error" (Addressing Mode, Host Max) is not one
    assert d.verdict() == f"{count} × {model} ok"


def test_driver_610_s_deprecated_version_lines_give_way_to_its_kmd_and_umd_versions():
    """R610 writes `Driver Version : 610.88 [Deprecated; ...]` and adds `KMD Version`, `CUDA UMD Version`."""
    report = doctor.parse_smi_q(lines("rtx3060-laptop-windows-610.88.nvidia-smi-q.txt"))
    assert (report.driver, report.cuda) == ("610.88", "13.3")
    older = doctor.parse_smi_q(lines("rtx2080super-linux-595.71.05.nvidia-smi-q.txt"))
    assert (older.driver, older.cuda) == ("595.71.05", "13.2")


def test_a_desktop_card_with_persistence_off_is_fine_with_a_warning_and_a_vgpu_guest_is_fine():
    desktop = judged(smi="rtx2080super-linux-595.71.05.nvidia-smi-q.txt")
    assert whats(desktop, doctor.WARNING) == ["GPU 0c:00.0: persistence mode off"]
    guest = judged(smi="grid-p40-24q-vgpu-guest-535.161.08.nvidia-smi-q.partial.txt")
    assert guest.findings == () and guest.verdict() == "1 × GRID P40-24Q ok"


def test_eight_h100_on_an_hgx_board_have_their_fabric_complete_and_no_ecc_errors():
    report = doctor.parse_smi_q(lines("h100-sxm-hgx8-535.nvidia-smi-q.txt"))
    assert [g.bus for g in report.gpus] == ["19:00.0", "3b:00.0", "4c:00.0", "5d:00.0", "9b:00.0", "bb:00.0",
                                            "cb:00.0", "db:00.0"]
    assert {(g.fabric_state, g.fabric_status, g.ecc_uncorrectable) for g in report.gpus} == {("Completed", "Success", 0)}


def test_a_pending_row_remap_is_a_problem_and_an_applied_one_is_not():
    a10 = judged(smi="a10-passthrough-535-remap-pending.nvidia-smi-q.txt")
    assert whats(a10) == ["GPU 07:00.0: row remap pending"] and "reset the GPU" in a10.problems[0].fix
    assert whats(judged(smi="gh200-passthrough-550-remapped-1.nvidia-smi-q.txt")) == []


def test_a_gpu_whose_name_reads_unknown_error_no_longer_answers_the_driver():
    d = judged(smi="geforce-375-product-name-unknown-error.nvidia-smi-q.partial.txt")
    assert whats(d) == ["GPU 4b:00.0 no longer answers the driver (nvidia-smi reads Unknown Error for Product Name)"]
    assert d.model != "Unknown Error"


def test_ecc_mode_unknown_error_is_the_same_finding():
    """No capture of this shape exists: the A10 capture with its ECC mode as a lost GPU reports it (reconstructed)."""
    text = "\n".join(lines("a10-passthrough-535-remap-pending.nvidia-smi-q.txt"))
    text = text.replace("        Current                           : Enabled\n        Pending                           : Enabled",
                        "        Current                           : Unknown Error\n        Pending                           : Unknown Error", 1)
    assert "Unknown Error" in text
    d = doctor.diagnose({"lspci": [], "fm": ["active"], "smi": text.splitlines(), "smi-rc": ["0"]})
    assert any("ECC Mode Current" in w for w in whats(d))


def test_each_gpu_in_a_pci_domain_of_its_own_keeps_it():
    report = doctor.parse_smi_q(lines("azure-ndv4-a100-sxm4-40gb-8gpu-domains-460.nvidia-smi-q.first-2-gpus.txt"))
    assert [g.bus for g in report.gpus] == ["0001:00:00.0", "0002:00:00.0"]
    pci = doctor.parse_pci(lines("azure-a100-sxm4-8gpu-nvswitch.lspci-nn.txt"))
    gpus = [d.bus for d in pci if d.kind == "gpu"]
    assert len(set(gpus)) == 8 and gpus[:2] == ["0001:00:00.0", "0002:00:00.0"]
    assert [d.bus for d in pci if d.kind == "nvswitch"] == [f"{n:04x}:00:00.0" for n in range(5, 11)]


def test_a_gpu_lost_from_nvidia_smi_on_a_per_domain_vm_is_named_by_its_domain():
    """The Azure lspci lists 8 GPUs; an nvidia-smi that shows the first two only (cut capture) loses six."""
    d = judged(smi="azure-ndv4-a100-sxm4-40gb-8gpu-domains-460.nvidia-smi-q.first-2-gpus.txt",
               lspci="azure-a100-sxm4-8gpu-nvswitch.lspci-nn.txt")
    assert whats(d)[0] == ("6 of 8 GPUs missing from nvidia-smi (0003:00:00.0, 0004:00:00.0, 000b:00:00.0, "
                           "000c:00:00.0, 000d:00:00.0, 000e:00:00.0)")


def test_plain_lspci_of_a_grace_node_finds_its_gpus_in_their_domains():
    pci = doctor.parse_pci(lines("gb200-grace-multi-domain.lspci.txt"))
    assert [d.bus for d in pci if d.kind == "gpu"] == ["0008:01:00.0", "0009:01:00.0", "0018:01:00.0", "0019:01:00.0"]


def test_a_vm_with_one_a10_has_one_gpu_and_no_nvswitch():
    pci = doctor.parse_pci(lines("a10-qemu-vm.lspci-nn.txt"))
    assert [(d.bus, d.kind) for d in pci] == [("06:00.0", "gpu")]


# --------------------------------------------------------------------------- topo -m and NVLink


def test_full_mesh_boards_read_every_pair_on_nvlink():
    h100 = doctor.parse_topo(lines("h100-hgx8-nv18-8nic-570.topo-m.txt"))
    assert len(h100.links) == 56 and set(h100.links.values()) == {"NV18"} and h100.nics["NIC7"] == "mlx5_7"
    a100 = doctor.parse_topo(lines("aws-p4d.24xlarge-a100-nv12.topo-m.txt"))
    assert set(a100.links.values()) == {"NV12"}
    for topo, model in ((h100, "NVIDIA H100 80GB HBM3"), (a100, "NVIDIA A100-SXM4-40GB")):
        assert doctor.nvlink_findings(topo, doctor.full_mesh_expected(model, 0), {}) == []


def test_a_v100_hybrid_cube_mesh_is_healthy_by_design():
    topo = doctor.parse_topo(lines("v100-sxm2-dgx1-hybrid-cube-mesh-440.topo-m.txt"))
    assert topo.links[(0, 5)] == "SYS" and topo.links[(0, 1)] == "NV1" and topo.links[(0, 3)] == "NV2"
    assert not doctor.full_mesh_expected("Tesla V100-SXM2-16GB", 0)
    assert doctor.nvlink_findings(topo, False, {}) == []


@pytest.mark.parametrize("capture", ["v100-4gpu-nv3-pairs-traverse-power9.topo-m.txt",
                                     "consumer-5gpu-5090-4090-pcie-sys-phb-node-580.topo-m.txt",
                                     "rtx5090-2gpu-threadripper-phb-tabs.topo-m.txt",
                                     "a100-pcie-2gpu-della-sys-2nic.topo-m.txt",
                                     "aws-g6e.12xlarge-4gpu-node-only.topo-m.txt"])
def test_bridge_pairs_and_pcie_only_boxes_are_not_broken_nvlink(capture):
    topo = doctor.parse_topo(lines(capture))
    assert topo.links  # read, spaces or tabs
    assert doctor.nvlink_findings(topo, doctor.full_mesh_expected("NVIDIA GeForce RTX 5090", 0), {}) == []


def test_a_full_mesh_board_with_a_link_down_or_fewer_links_is_a_problem():
    """Reconstructed: the captured NV18 matrix with GPU2-GPU5 on SYS and GPU0-GPU1 on NV17 (no capture has it)."""
    text = "\n".join(lines("h100-hgx8-nv18-8nic-570.topo-m.txt"))
    rows = text.splitlines()
    for i, j, cell in ((2, 5, "SYS "), (5, 2, "SYS "), (0, 1, "NV17"), (1, 0, "NV17")):
        words = rows[i + 1].split()
        words[j + 1] = cell.strip()
        rows[i + 1] = "\t".join(words)
    topo = doctor.parse_topo(rows)
    found = [f.what for f in doctor.nvlink_findings(topo, True, {})]
    assert found == ["1 GPU pairs without NVLink (GPU2-GPU5 SYS)",
                     "1 GPU pairs with fewer NVLinks than the board's NV18 (GPU0-GPU1 NV17)"]


def test_inactive_nvlinks_are_named_on_any_board():
    inactive = doctor.parse_nvlink_status(lines("v100-sxm2-8gpu-nvlink-inactive-links.nvlink-s.txt"))
    assert inactive == {3: [3, 5], 4: [1], 5: [0, 4], 6: [1]}
    d = judged(smi="v100-sxm2-8gpu-gcp-vm-550.nvidia-smi-q.first-gpu.txt",
               topo="v100-sxm2-dgx1-hybrid-cube-mesh-440.topo-m.txt",
               nvlink="v100-sxm2-8gpu-nvlink-inactive-links.nvlink-s.txt")
    assert whats(d) == ["6 NVLinks inactive (GPU3 links 3, 5; GPU4 link 1; GPU5 links 0, 4; GPU6 link 1)"]


def test_an_nvswitch_board_expects_a_full_mesh_whatever_its_model_says():
    assert doctor.full_mesh_expected("", 6) and doctor.full_mesh_expected("NVIDIA H100 80GB HBM3", 0)
    assert not doctor.full_mesh_expected("NVIDIA H100 NVL", 0) and not doctor.full_mesh_expected("NVIDIA L40S", 0)


# --------------------------------------------------------------------------- the kernel log


KERNEL = [
    ("dmesg-xid79-fallen-off-bus-pciehp-linkdown.txt", ["XID 79 on GPU 01:00.0 since boot: GPU has fallen off the bus"],
     []),
    ("dmesg-fallen-off-bus-no-xid-570-open.txt", ["GPU b3:00.0 has fallen off the bus (kernel log, no XID)"], []),
    ("dmesg-xid79-plus-sxid20034-nvswitch-h100.txt",
     ["XID 79 on GPU 91:00.0 since boot: GPU has fallen off the bus",
      "NVSwitch 06:00.0: SXid 20034 since boot (Fatal, Link 48 LTSSM Fault Up)",
      "NVSwitch 05:00.0: SXid 20034 since boot (4 times) (Fatal, Link 63 LTSSM Fault Up)",
      "NVSwitch 07:00.0: SXid 20034 since boot (3 times) (Fatal, Link 37 LTSSM Fault Up)"], []),
    ("dmesg-xid119-gsp-timeout-h100-xe9680.txt", ["XID 119 on GPU 9b:00.0 since boot (5 times): GSP RPC timeout"], []),
    ("dmesg-xid13-xid109-ctime-h100.txt", [],
     ["XID 13 on GPU cb:00.0 since boot (3 times): graphics engine exception (usually the program)",
      "XID 109 on GPU cb:00.0 since boot: context switch timeout (usually the program)"]),
    ("dmesg-T-xid43-xid31-xid94-vm-535.txt", [],
     ["XID 43 on GPU 00:05.0 since boot (2 times): GPU stopped processing (usually the program)",
      "XID 31 on GPU 00:07.0 since boot: GPU memory page fault (usually the program)",
      "XID 94 on GPU 00:08.0 since boot: contained ECC error (the program that hit it was stopped)"]),
    ("dmesg-xid48-dbe-xid64-syslog.txt",
     ["the driver cannot start GPU 0a:00.0: RmInitAdapter failed (0x24:0x72:1568) (3 times)",
      "XID 48 on GPU 07:00.0 since boot: double-bit ECC error",
      "XID 64 on GPU 07:00.0 since boot: ECC page retirement or row remap failed"], []),
    ("dmesg-rminitadapter-failed-syslog-0x24-0x72.txt",
     ["the driver cannot start GPU 0a:00.0: RmInitAdapter failed (0x24:0x72:1568) (6 times)"], []),
    ("dmesg-rminitadapter-failed-vm-0x11-0x45.txt",
     ["the driver cannot start GPU 04:01.0: RmInitAdapter failed (0x11:0x45:2525) (3 times)",
      "the driver cannot start GPU 04:02.0: RmInitAdapter failed (0x11:0x45:2525) (2 times)"], []),
    ("dmesg-rminitadapter-gsp-firmware-3090-550-open.txt",
     ["the driver cannot start GPU 98:00.0: RmInitAdapter failed (0x62:0x65:1792)"], []),
    ("dmesg-xid45-caused-by-xid145-149-590.txt", [],
     ["XID 45 on GPU dc:00.0 since boot (2 times): preemptive cleanup after a killed program",
      "XID 45 on GPU ed:00.0 since boot (2 times): preemptive cleanup after a killed program",
      "XID 45 on GPU ba:00.0 since boot (2 times): preemptive cleanup after a killed program",
      "XID 45 on GPU 97:00.0 since boot: preemptive cleanup after a killed program"]),
    ("kmsg-xid144-149-nvlink-gb200.txt",
     ["XID 149 on GPU 00:00.0 since boot (2 times): NVLink fabric error",
      "XID 149 on GPU 0019:01:00.0 since boot: NVLink fabric error"],
     ["XID 144 on GPU 01:00.0 since boot: NVLink event (nonfatal)",
      "XID 145 on GPU 0018:01:00.0 since boot: NVLink event (nonfatal)"]),
]


@pytest.mark.parametrize("capture,problems,warnings", KERNEL, ids=[k[0].split(".")[0] for k in KERNEL])
def test_the_kernel_log_says_which_gpu_is_broken_and_which_program_failed(capture, problems, warnings):
    found, warned = doctor.kernel_findings(doctor.parse_kernel_log(lines(capture)))
    assert [f.what for f in found] == problems
    assert [f.what for f in warned] == warnings


def test_the_root_pass_greps_every_shape_of_those_lines():
    script = doctor.ROOT_SCRIPT
    for needle in ("NVRM: (Xid", "fallen off the bus", "RmInitAdapter failed", "The NVIDIA GPU ", "SXid \\("):
        assert needle in script


# --------------------------------------------------------------------------- InfiniBand / RoCE rails


def ports(capture: str) -> infiniband.IbFacts:
    return infiniband.IbFacts(tuple(infiniband.parse_ibstat((CAPTURED / "net" / capture).read_text())), True)


RAILS = [
    ("ibstat_h100_8xNDR_400_plus_mlx5_bond_0_ethernet.txt",
     "=mlx5_0:1,mlx5_1:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_7:1,mlx5_8:1,mlx5_9:1", None),
    ("ibstat_h100_8xNDR_some_ethernet_ports_down_disabled.txt",
     "=mlx5_0:1,mlx5_10:1,mlx5_11:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_9:1", None),
    ("ibstatus_a100_8xHDR_200_plus_ethernet_mlx5_8_azure_like.txt",
     "=mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_6:1,mlx5_7:1", None),
    ("ibstat_h100_roce_400G_ethernet_link_layer_some_down.txt",
     "=mlx5_0:1,mlx5_10:1,mlx5_3:1,mlx5_4:1,mlx5_6:1,mlx5_9:1", "3"),
    ("ibstatus_roce_100G_EDR_ethernet_nccl1866.txt", "=mlx5_0:1,mlx5_1:1", "3"),
]


@pytest.mark.parametrize("capture,hca,gid", RAILS, ids=[r[0].split(".")[0] for r in RAILS])
def test_only_fabric_rails_become_nccl_hcas_and_a_gid_index_only_for_roce(capture, hca, gid):
    settings = infiniband.nccl_settings(ports(capture))
    assert settings.get("NCCL_IB_HCA") == hca
    assert settings.get("NCCL_IB_GID_INDEX") == gid


def test_an_azure_vm_s_accelerated_networking_function_is_no_rail_and_a_port_in_init_waits_for_a_subnet_manager():
    facts = ports("azure_ndv4_mlx5_an0_ibstat_ibpanic_port_initializing_azhpcdiag59.txt")
    assert [p.name for p in facts.active] == ["mlx5_an0:1"] and facts.rails() == []
    assert infiniband.nccl_settings(facts) == {}  # so netenv writes the ethernet settings, NCCL_IB_DISABLE=1
    assert [p.name for p in facts.waiting_for_sm] == ["mlx5_ib0:1"]
    ib = "\n".join(f"ibport={p.device} {p.port}|{p.state}|{p.link_layer}|{p.rate}||{p.phys_state}|"
                   for p in facts.ports) + "\nverbs=yes"
    d = doctor.diagnose({"lspci": [], "smi-missing": [""], "ib": ib.splitlines()})
    assert whats(d) == ["InfiniBand ports up but not active: mlx5_ib0:1 (INIT: no subnet manager has brought them up)"]


def test_netenv_leaves_the_default_route_s_roce_port_out_of_the_rails():
    facts = nic.parse_nic_facts("route=198.19.0.11 dev ens1f0np0 src 198.19.0.12\ndefroute=ens1f0np0\n"
                                   "ibport=mlx5_0 1|4: ACTIVE|Ethernet|100 Gb/sec (4X EDR)|ens1f0np0|5: LinkUp|vf\n"
                                   "ibgid=mlx5_0 1 3|RoCE v2|0000:0000:0000:0000:0000:ffff:c613:000c\nverbs=yes")
    assert facts.ib.ports[0].vf and facts.default_dev == "ens1f0np0"
    ib, why = netenv.ib_choice("auto", facts)
    assert ib is None and why == "no active InfiniBand/RoCE fabric port (front-end only: mlx5_0:1): ethernet"


def test_show_gids_says_which_gid_is_roce_v2_with_ipv4_and_that_is_the_index_nccl_gets():
    from fabfile.lab import gpu as gpu_lab
    text = (CAPTURED / "net" / "show_gids_roce_v1_v2_nccl1538.txt").read_text()
    gids = gpu_lab.parse_show_gids(text)
    ports = [infiniband.IbPort(dev, port, "ACTIVE", "Ethernet", "100 Gb/sec", gid_index=infiniband.roce_gid_index(
        [(i, kind, gid) for i, kind, gid in table])) for (dev, port), table in sorted(gids.items())]
    # The thread's conclusion: index 7 (v2, IPv4 filled) on every device the capture shows whole; mlx5_3's
    # index 7 line is cut from the post, so it has no RoCE v2 IPv4 GID here.
    assert [(p.device, p.gid_index) for p in ports] == [("mlx5_0", 7), ("mlx5_1", 7), ("mlx5_2", 7), ("mlx5_3", None)]
    assert gpu_lab.show_gids_netdevs(text) == {"mlx5_0": "net1", "mlx5_1": "net2", "mlx5_2": "net3", "mlx5_3": "net4"}


def test_ibv_devinfo_captures_read_their_ports():
    assert [(p.name, p.state, p.link_layer) for p in infiniband.parse_ibv_devinfo(
        (CAPTURED / "net" / "ibv_devinfo_cx7_vf_in_pod_PORT_INIT_networkoperator1646.txt").read_text())][0][1] == "INIT"
    active = infiniband.parse_ibv_devinfo(
        (CAPTURED / "net" / "ibv_devinfo_fragment_PORT_ACTIVE_IB_cx7_vf_deepep55.txt").read_text())
    assert active and all(p.state == "ACTIVE" and p.link_layer == "InfiniBand" for p in active)
    # `ibv_devinfo -v`'s capability section alone (the post stops before the port lines) says nothing of a rail.
    assert infiniband.parse_ibv_devinfo(
        (CAPTURED / "net" / "ibv_devinfo_v_fragment_cx5_mlx5_1_ompi6137.txt").read_text()) == []
    roce = infiniband.parse_ibv_devinfo(
        (CAPTURED / "net" / "ibv_devinfo_fragment_RoCE_cx7_4129_ethernet_h100_deepep38.txt").read_text())
    assert roce and all(p.roce for p in roce)


# --------------------------------------------------------------------------- NCCL's own word


NCCL_LOGS = [
    ("nccl_log_NET_IB_0_GDRDMA_P2P_IPC_connected_all_rings_nccl687.txt", "InfiniBand with GPUDirect RDMA; inside nodes P2P/IPC"),
    ("nccl_log_NET_IB_GDRDMA_plus_P2P_CUMEM_h20_nccl1189.txt", "InfiniBand with GPUDirect RDMA; inside nodes P2P/CUMEM"),
    ("nccl_log_h100_IBext_GDRDMA_channels_nccl1453.txt", "InfiniBand with GPUDirect RDMA"),
    ("nccl_log_NET_IB_3_no_GDRDMA_P2P_direct_nccl1412.txt", "InfiniBand without GPUDirect RDMA; inside nodes P2P/direct"),
    ("nccl_log_NET_IB_without_GDR_distance_disabled_nvpeermem56.txt",
     "InfiniBand without GPUDirect RDMA; inside nodes P2P/IPC"),
    ("nccl_log_NCCL_IB_HCA_set_using_network_IB_nccltests228.txt",
     "InfiniBand (2 HCAs; GPUDirect RDMA not shown: no channel lines)"),
    ("nccl_log_NVLS_available_8x_IB_SHARP_rails_nccl1584.txt",
     "InfiniBand (8 HCAs; GPUDirect RDMA not shown: no channel lines)"),
    ("nccl_log_RoCE_mlx5_10_11_dgxh100_nccltests185.txt", "RoCE (2 HCAs; GPUDirect RDMA not shown: no channel lines)"),
    ("nccl_log_NET_Socket_channels_P2P_IPC_16gpu_nccl952.txt", "sockets (no InfiniBand/RoCE); inside nodes P2P/IPC"),
    ("nccl_log_NCCL_NET_Socket_dgx_a100_nccl676.txt", "sockets (no InfiniBand/RoCE)"),
    ("nccl_log_socket_fallback_aws_no_ib_device_nccl226.txt", "sockets (no InfiniBand/RoCE)"),
    ("nccl_log_socket_ib_disabled_lo_nccl1053.txt", "sockets (no InfiniBand/RoCE)"),
    ("nccl_tests_broadcast_2node_V100_PCIe_socket_no_libibverbs_nccltests82.txt", "sockets (no InfiniBand/RoCE)"),
    ("nccl_log_P2P_CUMEM_intranode_nccl1538.txt", "inside one node (P2P/CUMEM)"),
    ("nccl_log_SHM_direct_connected_all_rings_h800_nccl1609.txt", "inside one node (SHM)"),
    ("nccl_log_0_nvls_channels_connected_all_trees_h800_nccl892_b.txt", "inside one node (P2P/direct)"),
    ("nccl_log_nvls_not_available_16gpu_nccl952_b.txt", "inside one node (no channel seen)"),
    ("nccl_tests_header_8xH800_NVLS_not_available_nccl892.txt", "inside one node (no channel seen)"),
]


@pytest.mark.parametrize("capture,transport", NCCL_LOGS, ids=[n[0].split(".")[0] for n in NCCL_LOGS])
def test_the_nccl_log_says_which_transport_it_took(capture, transport):
    assert nccl.parse_debug_log((CAPTURED / "net" / capture).read_text()).describe() == transport


@pytest.mark.parametrize("capture,cause", [
    ("nccl_log_socket_fallback_aws_no_ib_device_nccl226.txt", "NCCL found no usable HCA"),
    ("nccl_log_socket_ib_disabled_lo_nccl1053.txt", "NCCL_IB_DISABLE=1 in the job's environment"),
    ("nccl_tests_broadcast_2node_V100_PCIe_socket_no_libibverbs_nccltests82.txt", "libibverbs cannot be loaded"),
])
def test_a_socket_fall_back_where_fabric_ports_are_active_is_a_problem_with_its_cause(capture, cause):
    t = nccl.parse_debug_log((CAPTURED / "net" / capture).read_text())
    problem = nccl.transport_problem(t, active_rails=8)
    assert problem.startswith("NCCL used sockets between nodes although 8 InfiniBand/RoCE ports are active: " + cause)
    assert nccl.transport_problem(t, active_rails=0) is None  # an ethernet cluster: sockets are all there is


def test_infiniband_without_gpudirect_names_why():
    t = nccl.parse_debug_log((CAPTURED / "net" / "nccl_log_NET_IB_without_GDR_distance_disabled_nvpeermem56.txt")
                             .read_text())
    assert nccl.transport_problem(t, 1) == ("NCCL used InfiniBand without GPUDirect RDMA; inside nodes P2P/IPC: "
                                            "GPU Direct RDMA Disabled for GPU 2[2] / HCA 0 (distance 3 >= 2) "
                                            "(is nvidia-peermem loaded?)")


def test_nvls_availability_is_read():
    assert nccl.parse_debug_log((CAPTURED / "net" / "nccl_log_NVLS_available_8x_IB_SHARP_rails_nccl1584.txt")
                                .read_text()).nvls is True
    assert nccl.parse_debug_log((CAPTURED / "net" / "nccl_log_nvls_not_available_16gpu_nccl952_b.txt")
                                .read_text()).nvls is False


# --------------------------------------------------------------------------- is busbw what the hardware allows


RUNS = [
    # (capture, model, GPUs per node, nodes, rails, rail Gb/s, verdict)
    ("all_reduce_perf_8xA100_SXM4_40GB_single_node_superbench.txt", "A100-SXM4-40GB", 8, 1, 0, 0,
     "busbw 235 GB/s at 8 GiB, 103% of expected 228 GB/s for 8 × A100 SXM (NVLink) (Azure ND A100 v4 health check, "
     "conf/nd96asr_v4.conf)"),
    ("all_reduce_perf_8node_64xH100_IB_SHARP_coreweave_readme.txt", "NVIDIA H100 80GB HBM3", 8, 8, 8, 400,
     "busbw 387 GB/s at 8 GiB, 105% of expected 368 GB/s for 8 nodes × 8 × 400 Gb/s (46 GB/s per 400 Gb/s NIC: "
     "NVIDIA/nccl-tests#290)"),
    ("all_reduce_perf_8node_8xV100_100G_IB_low_busbw_nccltests78.txt", "Tesla V100-SXM2-32GB", 1, 8, 1, 100,
     "busbw 4.32 GB/s at 512 MiB, 38% of expected 11.5 GB/s for 8 nodes × 1 × 100 Gb/s (46 GB/s per 400 Gb/s NIC: "
     "NVIDIA/nccl-tests#290, scaled to 100 Gb/s, measured at 8 GiB): below expected"),
]


@pytest.mark.parametrize("capture,model,gpus,nodes,rails,gbps,said", RUNS, ids=[r[0].split(".")[0] for r in RUNS])
def test_busbw_is_judged_against_a_named_public_figure(capture, model, gpus, nodes, rails, gbps, said):
    run = nccl.parse_tests_output((CAPTURED / "net" / capture).read_text())
    top = run.at_largest()
    ref, why = nccl.expected(model, gpus, nodes, rails, gbps)
    text, ok = nccl.verdict(top.busbw, top.bytes, ref, why)
    assert text == said and ok == said.endswith(")")


def test_the_aws_efa_runs_have_no_infiniband_figure_and_say_so():
    for capture in ("all_reduce_perf_2node_16xH100_aws_p5_efa.txt", "all_reduce_perf_2node_16xA100_aws_p4de_efa.txt"):
        top = nccl.parse_tests_output((CAPTURED / "net" / capture).read_text()).at_largest()
        ref, why = nccl.expected("NVIDIA H100 80GB HBM3", 8, 2)
        assert ref is None and nccl.verdict(top.busbw, top.bytes, ref, why)[0].endswith(
            "no expected figure for 2 nodes without an InfiniBand/RoCE fabric")


def test_gloo_on_cpus_gets_no_invented_figure_and_an_inventory_override_wins():
    ref, why = nccl.expected("", 0, 3)
    assert nccl.verdict(0.41, 64 << 20, ref, why) == ("busbw 0.41 GB/s at 64 MiB; no expected figure for CPU/ethernet (Gloo)",
                                                     True)
    ref, _ = nccl.expected("NVIDIA H100 80GB HBM3", 8, 1, override=400)
    assert nccl.verdict(452, 1 << 30, ref) == (
        "busbw 452 GB/s at 1 GiB, 113% of expected 400 GB/s for this cluster (inventory allreduce_expected_gbps)", True)


def test_the_gcp_tcpxo_run_has_its_header_s_devices():
    run = nccl.parse_tests_output((CAPTURED / "net" / "all_reduce_perf_2node_16xH100_gcp_a3mega_tcpxo.txt").read_text())
    assert run.devices[0] == "NVIDIA H100 80GB HBM3" and run.at_largest().busbw == 338.82 and run.average == 70.742


# --------------------------------------------------------------------------- provenance


def test_every_fixture_is_in_the_readme_and_every_capture_names_a_public_source():
    readme = (CAPTURED.parent / "README.md").read_text()
    marks = list(re.finditer(r"^ *- \*\*`([^`]+)`\*\*", readme, re.M))
    entries = {m.group(1): readme[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(readme)]
               for i, m in enumerate(marks)}
    on_disk = sorted(str(p.relative_to(CAPTURED.parent)) for p in CAPTURED.parent.rglob("*")
                     if p.is_file() and p.name != "README.md")
    assert sorted(entries) == on_disk
    unsourced = [name for name, body in entries.items() if name.startswith("captured/") and "https://" not in body]
    assert unsourced == []
