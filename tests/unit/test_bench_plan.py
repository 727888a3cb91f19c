"""The bench targets' plan: addresses, sshd config and each tool's inventory."""

from __future__ import annotations

import ipaddress

import pytest

from bench.targets import NETWORK, addresses, ansible_inventory, gpufab_inventory, known_hosts, pyinfra_inventory, sshd_config
from fabfile.core.inventory import parse_inventory

LAB_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def test_512_distinct_addresses_inside_the_benchmark_range_and_off_the_lab():
    hosts = addresses(512)
    assert len(set(hosts)) == 512
    assert all(ipaddress.ip_address(h) in NETWORK for h in hosts)
    assert NETWORK.subnet_of(LAB_NETWORK)
    lab = ipaddress.ip_network("198.18.0.0/24")
    assert not NETWORK.overlaps(lab)


def test_more_targets_than_the_network_holds_is_refused():
    with pytest.raises(ValueError, match="at most"):
        addresses(NETWORK.num_addresses)


def test_sshd_only_lets_the_bench_user_in_from_the_bench_network(tmp_path):
    text = sshd_config(tmp_path, port=2222, user="gpufab-bench")
    lines = set(text.splitlines())
    assert {"Port 2222", "AllowUsers gpufab-bench@198.18.64.0/22", "PasswordAuthentication no",
            "PermitRootLogin no", f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}"} <= lines
    assert "MaxStartups 4096" in lines  # 512 handshakes at once must not be early-dropped


def test_every_tool_gets_the_same_hosts_port_user_and_key():
    hosts = addresses(3)
    inv = parse_inventory(gpufab_inventory(hosts, "/k", "/kh"))
    assert [n.public for n in inv.nodes] == hosts
    assert {(n.user, n.port) for n in inv.nodes} == {("gpufab-bench", 2222)}
    assert inv.known_hosts == "/kh"
    ini = ansible_inventory(hosts, "/k")
    assert all(h in ini.splitlines() for h in hosts) and "ansible_port=2222" in ini
    namespace: dict = {}
    exec(pyinfra_inventory(hosts, "/k", "/kh"), namespace)
    assert [h for h, _ in namespace["targets"]] == hosts
    assert namespace["targets"][0][1]["ssh_known_hosts_file"] == "/kh"
    assert known_hosts(hosts, "ssh-ed25519 AAAA").splitlines()[0] == "[198.18.64.1]:2222 ssh-ed25519 AAAA"
