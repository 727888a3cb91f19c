import ipaddress

import pytest

from fabfile.lab import plan as lab
from fabfile.core.errors import InputError
from fabfile.core.inventory import parse_inventory

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


def test_hosts_use_only_the_benchmark_range_and_distinct_nic_names():
    hosts = lab.plan_hosts(8)
    assert [h.name for h in hosts] == [f"node{i}" for i in range(1, 9)]
    for h in hosts:
        assert ipaddress.ip_address(h.public_ip) in LAB_RANGE
        assert ipaddress.ip_address(h.private_ip) in LAB_RANGE
        assert len(h.private_nic) <= 15 and len(h.host_pub_veth) <= 15
    assert len({h.private_nic for h in hosts}) == 8
    assert hosts[0].private_nic == "enp27s0f0np0" and hosts[1].private_nic == "ens14np0"
    assert str(lab.BRIDGE_IP) == "198.18.0.1"
    with pytest.raises(InputError):
        lab.plan_hosts(0)


def test_netns_commands_set_addresses_without_a_default_route():
    h = lab.plan_hosts(2)[1]
    cmds = [" ".join(c) for c in lab.netns_commands(h)]
    assert "ip netns exec gpufab-node2 ip addr add 198.19.0.12/24 dev ens14np0" in cmds
    assert not any("route" in c for c in cmds)
    assert cmds[-1].endswith("sysctl -qw net.ipv4.ip_forward=1")


def test_nspawn_line_has_what_dockerd_and_fuse_need():
    h = lab.plan_hosts(1)[0]
    cmd = lab.nspawn_command(h, "/r", "/d")
    for flag in ("--boot", "--register=no", "--keep-unit", "--capability=all", "--resolv-conf=off",
                 "--network-namespace-path=/run/netns/gpufab-node1", "--bind=/d:/var/lib/docker", "--bind=/dev/fuse"):
        assert flag in cmd
    assert lab.NSPAWN_ENV == {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}


def test_lab_inventory_loads_with_the_lab_key_and_known_hosts():
    inv = parse_inventory(lab.lab_inventory(lab.plan_hosts(3), "/s/id_ed25519", "/s/known_hosts"), "lab.yaml")
    assert [(n.name, n.public, n.private, n.role) for n in inv.nodes][0] == ("node1", "198.18.0.11", "198.19.0.11", "head")
    assert inv.known_hosts == "/s/known_hosts" and inv.nodes[2].key == "/s/id_ed25519"


def test_mirror_is_taken_from_this_machines_sources():
    deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    assert lab.apt_mirror(deb822) == "http://mirror.example/debian"
    assert lab.apt_mirror("deb [arch=amd64] http://m.example/debian/ bookworm main\n") == "http://m.example/debian"
    assert lab.apt_mirror("deb http://security.debian.org/debian-security bookworm-security main\n") == "http://deb.debian.org/debian"


def test_recipe_change_changes_the_base_id(monkeypatch):
    before = lab.recipe_id("http://m")
    monkeypatch.setattr(lab, "RECIPE_VERSION", "other")
    assert lab.recipe_id("http://m") != before


def test_proxy_listens_on_the_bridge_only():
    conf = lab.tinyproxy_config("/p", "/l")
    assert "Listen 198.18.0.1" in conf and "Allow 198.18.0.0/15" in conf
