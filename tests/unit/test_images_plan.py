"""`docker.pull` as data: names checked, IDs compared across nodes, the odd node named."""

from __future__ import annotations

import pytest

from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import parse_inventory
from fabfile.ops import images

from fakes import FakeRemote

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
REF = "198.18.0.1:5000/gpufab/tiny:1"


@pytest.mark.parametrize("ref", [REF, "nvcr.io/nvidia/pytorch:24.05-py3", "ubuntu", "ghcr.io/a/b-c_d.e:latest",
                                 "registry.local/x@sha256:" + "0" * 64])
def test_image_names_that_pass(ref):
    assert images.check_refs([ref]) == (ref,)


@pytest.mark.parametrize("ref", ["-v", "ubuntu;id", "a b", "x:$(id)", "../x", "a/../b", "UPPER:tag;"])
def test_image_names_a_shell_would_read_are_one_input_error(ref):
    with pytest.raises(InputError, match="invalid image name"):
        images.check_refs([ref])


def test_ids_are_parsed_and_shown_short():
    found = images.parse_ids(f"{REF} {A}\nubuntu none\nnoise line here\n")
    assert found == {REF: A, "ubuntu": "none"}
    assert images.short(A) == "a" * 12 and images.short("none") == "none"


def test_the_odd_node_out_is_named_with_what_the_others_hold():
    ids = {"node1": {REF: A}, "node2": {REF: A}, "node3": {REF: B}}
    assert images.odd_ones(ids, "node1") == {"node3": [f"{REF} is image {'b' * 12} here, {'a' * 12} on node1, node2"]}
    # A tie: the head's image is the cluster's.
    assert set(images.odd_ones({"node1": {REF: B}, "node2": {REF: A}}, "node1")) == {"node2"}
    missing = images.odd_ones({"node1": {REF: A}, "node2": {REF: "none"}}, "node1")
    assert missing == {"node2": [f"{REF} is no such image here, {'a' * 12} on node1"]}
    assert images.odd_ones({"node1": {REF: A}, "node2": {REF: A}}, "node1") == {}


def test_pull_reports_a_change_only_where_the_image_changed():
    remote = FakeRemote(user="gpu").answer(r"docker image inspect", f"{REF} none\n")
    remote.after(r"docker pull", r"docker image inspect", f"{REF} {A}\n")
    out = images.pull_node(remote, [REF])
    assert out.changes == [f"pulled {REF} ({'a' * 12})"] and out.value == {REF: A}
    assert remote.sent(rf"^docker pull -q {REF}$")
    again = images.pull_node(remote, [REF])
    assert again.changes == [] and again.notes == [f"{REF} {'a' * 12}"]


def test_a_failed_pull_fails_the_node_with_dockers_reason():
    remote = FakeRemote().answer(r"docker pull", exit=1)
    with pytest.raises(HostError, match=f"docker pull {REF} failed: fake: failed"):
        images.pull_node(remote, [REF])


def test_the_inventory_lists_images_and_a_bad_list_is_one_error():
    base = "nodes:\n  - name: n1\n    public: 203.0.113.1\n    private: 10.0.0.1\n    role: head\n"
    inv = parse_inventory(base + f"docker:\n  images: [{REF}, ubuntu]\n", "hosts.yaml")
    assert inv.docker_images == (REF, "ubuntu")
    assert images.read(None, inv, {}).images == (REF, "ubuntu")
    assert images.read(None, inv, {"images": "alpine,busybox"}).images == ("alpine", "busybox")
    with pytest.raises(InputError, match="'docker.images' must be a list of image names"):
        parse_inventory(base + "docker:\n  images: ubuntu\n", "hosts.yaml")
    with pytest.raises(InputError, match="no images"):
        images.pull(None, inv, [], images.ImagesSettings())  # type: ignore[arg-type]
