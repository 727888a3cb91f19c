"""Issue 32, item 7: every listener gpufab opens reaches the private network only.

Each one is held to the same rule as the NFS export and the dashboard: a
private range (or the inventory's `private_ranges`), unless
`allow_public_networks: true`, which the report then states every run.
"""

from __future__ import annotations

import pytest

from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import parse_inventory
from fabfile.core.networks import read_reach
from fabfile.ops import containers, docker, preflight
from fabfile.ops.storage import nfs, sshfs

from fakes import FakeRemote
from fabfile.ops.shared import downloads

ONE_NIC = "nodes:\n  - {name: a, public: 203.0.113.7, private: 203.0.113.7}\n  - {name: b, public: 203.0.113.8, private: 203.0.113.8}\n"


def inventory(extra: str = "", vars: str = "") -> object:
    text = ("nodes:\n  - {name: a, public: 198.18.0.11, private: 10.0.0.1}\n" + (f"vars:\n{vars}" if vars else "") + extra)
    return parse_inventory(text, "hosts.yaml")


@pytest.mark.parametrize("host", ["tcp://0.0.0.0:2375", "tcp://:2375", "tcp://8.8.8.8:2375", "tcp://[2001:db8::1]:2375"])
def test_a_docker_api_socket_on_a_public_address_is_refused(host):
    inv = inventory(f"docker:\n  daemon:\n    hosts: ['{host}']\n")
    with pytest.raises(InputError, match="docker.daemon.hosts: refusing"):
        docker.read(None, inv, {})


def test_a_private_docker_api_socket_is_taken_and_a_public_one_only_with_the_override_and_a_warning():
    assert docker.read(None, inventory("docker:\n  daemon:\n    hosts: ['unix:///run/docker.sock', "
                                       "'tcp://10.0.0.1:2375']\n"), {}).warnings == ()
    allowed = docker.read(None, inventory("docker:\n  daemon:\n    hosts: ['tcp://0.0.0.0:2375']\n",
                                          "  allow_public_networks: true\n"), {})
    assert allowed.warnings and "every interface" in allowed.warnings[0]


@pytest.mark.parametrize("port", ["0.0.0.0:80:80", "8.8.8.8:80:80"])
def test_a_container_port_published_on_every_or_a_public_address_is_refused(port):
    inv = inventory(f"docker:\n  containers:\n    - {{name: web, image: busybox, ports: ['{port}']}}\n")
    with pytest.raises(InputError, match="container web: refusing"):
        containers.read(None, inv, {})


def test_container_ports_default_to_the_private_address_and_loopback_is_fine():
    inv = inventory("docker:\n  containers:\n    - {name: web, image: busybox, ports: ['80:80', '127.0.0.1:81:81']}\n")
    args = containers.run_args(containers.read(None, inv, {}).containers[0], "10.0.0.1")
    published = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    assert published == ["10.0.0.1:80:80", "127.0.0.1:81:81"]


def test_the_download_server_is_not_started_on_a_public_head_address():
    inv = parse_inventory(ONE_NIC, "h")
    s = downloads.read(None, inv, {})

    from fabfile.core.fanout import HostResult, OK
    from fabfile.core.packages import Downloads
    from fakes import FakeRun
    run = FakeRun(inv=inv, failures={}, dry_run=False, session=None, workers=1, remotes={})
    run.keep("downloads", {n.name: HostResult(n, OK, value=Downloads(debs=("docker.io",))) for n in inv.nodes})
    out = downloads.for_the_cluster(run, list(inv.nodes), s, lambda d: d.debs, None, None, "nothing")
    assert all("refusing to open the head's download server to 203.0.113.7" in r.notes[0] and
               r.notes[0].endswith("every node downloads for itself") for r in out)


def test_the_sftp_service_is_not_started_on_a_public_head_address():
    plan = nfs.NfsPlan("203.0.113.7", "a", "/mnt/shared", "/mnt/shared", None)
    remote = FakeRemote()
    with pytest.raises(HostError, match="refusing to open the share's SFTP service to 203.0.113.7"):
        sshfs.serve_share(remote, {}, plan)
    assert remote.changes == []


def test_a_public_range_declared_private_is_warned_about_every_run():
    assert read_reach(["198.18.0.0/15", "10.9.0.0/16"], False).warnings() == []
    warned = read_reach(["8.8.0.0/16"], False).warnings()
    assert warned and "8.8.0.0/16" in warned[0] and "public" in warned[0]
    s = preflight.read(None, inventory(vars="  private_ranges: [8.8.0.0/16]\n"), {})
    assert s.reach.warnings() == warned
