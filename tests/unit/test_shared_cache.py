"""HF_HOME in the share: where it is, who makes it, what reset leaves."""

from __future__ import annotations

import pytest

from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import Inventory
from fabfile.ops import netenv, storage
from fabfile.ops.shared import share
from fabfile.ops.storage.nfs import NfsPlan

from fakes import FakeRemote, node

SHARE = NfsPlan("10.0.0.1", "node1", "/srv/share", "/mnt/shared", None)


def inv(**variables):
    return Inventory(nodes=(node(),), vars=variables)


@pytest.mark.parametrize("variables,cache", [
    ({}, "/mnt/shared/.cache/huggingface"),
    ({"shared_cache": "none"}, None), ({"shared_cache": False}, None),
    ({"shared_cache": "/mnt/shared/models/hf"}, "/mnt/shared/models/hf"),
])
def test_the_cache_is_in_the_mount_unless_turned_off(variables, cache):
    assert share.read_cache(None, inv(**variables), "/mnt/shared") == cache


@pytest.mark.parametrize("value,message", [
    ("/home/gpu/hf", "not inside the shared mount /mnt/shared"),
    ("/mnt/shared/../etc", "not inside the shared mount"),
    ("/mnt/shared", "not inside the shared mount"),
    ("/mnt/shared/$(x)", "invalid shared_cache"),
])
def test_a_cache_outside_the_share_is_one_input_error(value, message):
    with pytest.raises(InputError, match=message):
        share.read_cache(None, inv(shared_cache=value), "/mnt/shared")


@pytest.mark.parametrize("variables,hf_home", [
    ({}, "/mnt/shared/.cache/huggingface"),
    ({"nfs_export": "/data", "nfs_mount": "/shared"}, "/shared/.cache/huggingface"),
    ({"bootstrap_skip": ["nfs"]}, None), ({"bootstrap_skip": "storage"}, None), ({"shared_cache": "none"}, None),
])
def test_netenv_sets_hf_home_where_the_cluster_keeps_shared_storage(variables, hf_home):
    assert netenv.hf_home_of(None, inv(**variables)) == hf_home
    env = netenv.netenv_files("n", "eth1", "10.0.0.1", 29500, "ethernet", hf_home=hf_home)[0].content
    assert (f"\nHF_HOME={hf_home}\n" in env) if hf_home else ("HF_HOME" not in env)


def test_the_head_makes_the_cache_as_the_ssh_user_once():
    remote = FakeRemote(user="gpu").answer(r"^test -d", exit=1)
    remote.after(r"^mkdir", r"^test -d")
    out = storage.make_cache(remote, SHARE, "/mnt/shared/.cache/huggingface")
    assert out.changes == ["created the shared cache /srv/share/.cache/huggingface (HF_HOME=/mnt/shared/.cache/huggingface)"]
    assert remote.sent(r"^mkdir -p -- /srv/share/.cache/huggingface$")
    # Made by an earlier run as root: given to the SSH user, without following links.
    roots = FakeRemote(user="gpu").answer(r"^test -d", exit=1).answer(r"! -user gpu 2>", "/srv/share/.cache\n")
    roots.after(r"-exec chown", r"^test -d")
    out = storage.make_cache(roots, SHARE, "/mnt/shared/.cache/huggingface")
    assert out.changes == ["gave /srv/share/.cache to gpu"]
    assert roots.sent(r"^find -P /srv/share/.cache /srv/share/.cache/huggingface -maxdepth 0 -type d ! -user gpu "
                      r"-exec chown -h gpu: \{\} \+")
    there = FakeRemote(user="gpu")
    assert storage.make_cache(there, SHARE, "/mnt/shared/.cache/huggingface").changes == []
    refused = FakeRemote(user="gpu").answer(r"^test -d", exit=1).answer(r"^mkdir", exit=1)
    with pytest.raises(HostError, match="cannot create the shared cache /srv/share/.cache/huggingface as gpu"):
        storage.make_cache(refused, SHARE, "/mnt/shared/.cache/huggingface")


def test_verify_reads_whether_the_user_can_write_the_cache():
    s = storage.StorageSettings("sshfs", SHARE, "/mnt/shared/.cache/huggingface")
    assert storage.check_cache(FakeRemote().answer(r"-w", "yes\n"), s).value.writable
    assert not storage.check_cache(FakeRemote().answer(r"-w", "no\n"), s).value.writable
    assert storage.check_cache(FakeRemote(), storage.StorageSettings("sshfs", SHARE)).value is None


def test_reset_removes_the_cache_only_while_it_is_empty():
    assert share.dirs_below("/srv/share/.cache/huggingface", "/srv/share") == [
        "/srv/share/.cache/huggingface", "/srv/share/.cache"]
    empty = FakeRemote(user="gpu").answer(r"rmdir", "2\n")
    assert storage.remove_empty_cache(empty, SHARE, "/mnt/shared/.cache/huggingface").changes == [
        "removed the empty shared cache /srv/share/.cache/huggingface"]
    full = FakeRemote(user="gpu").answer(r"rmdir", "0\n")
    assert storage.remove_empty_cache(full, SHARE, "/mnt/shared/.cache/huggingface").changes == []
