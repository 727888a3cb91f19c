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


def env_file(tmp_path, text):
    path = tmp_path / f"{abs(hash(text))}.env"
    path.write_text(text)
    return str(path)


def test_the_login_comes_from_the_env_file_and_the_registry_from_the_images(tmp_path):
    path = env_file(tmp_path, "DOCKER_USERNAME=gpufab\nDOCKER_PASSWORD=s3cret-pw\nHF_TOKEN=x\n")
    login = images.read_login(path, [REF])
    assert (login.registry, login.username, login.password) == ("198.18.0.1:5000", "gpufab", "s3cret-pw")
    assert "s3cret" not in repr(login) and "s3cret" not in repr(images.ImagesSettings((REF,), login))
    assert images.registry_of("nvcr.io/nvidia/pytorch:24.05-py3") == "nvcr.io" and images.registry_of("ubuntu") is None
    with pytest.raises(InputError, match="--login needs DOCKER_PASSWORD in it"):
        images.read_login(env_file(tmp_path, "DOCKER_USERNAME=gpufab\n"), [REF])
    with pytest.raises(InputError, match="set DOCKER_REGISTRY"):
        images.read_login(path, ["ubuntu"])
    with pytest.raises(InputError, match="invalid DOCKER_REGISTRY"):
        images.read_login(env_file(tmp_path, "DOCKER_USERNAME=a\nDOCKER_PASSWORD=b\nDOCKER_REGISTRY=x;id\n"), [REF])


def test_bootstrap_secrets_log_in_only_where_the_env_file_has_a_login(tmp_path):
    inv = parse_inventory("nodes:\n  - name: n1\n    public: 203.0.113.1\n    private: 10.0.0.1\n"
                          f"docker:\n  images: [{REF}]\n", "hosts.yaml")
    plain = env_file(tmp_path, "HF_TOKEN=x\n")
    assert images.read(None, inv, {"secrets": True, "env_file": plain}).login is None
    with_login = env_file(tmp_path, "DOCKER_USERNAME=gpufab\nDOCKER_PASSWORD=pw\n")
    assert images.read(None, inv, {"secrets": True, "env_file": with_login}).login.username == "gpufab"
    assert images.read(None, inv, {"env_file": with_login}).login is None  # nothing asked for


LOGIN = images.Login("198.18.0.1:5001", "gpufab", "s3cret-pw")


def test_login_writes_a_secret_root_file_then_logs_in_once():
    remote = FakeRemote(user="gpu").answer(r"grep -qF", exit=1)
    out = images.log_in(remote, LOGIN)
    written = remote.written[0].file
    assert (written.path, written.mode, written.owner, written.secret) == (images.LOGIN_FILE, 0o600, "root", True)
    assert written.content == "198.18.0.1:5001\ngpufab\ns3cret-pw\n"
    assert out.changes[-1] == "logged in to 198.18.0.1:5001 as gpufab (password not shown)"
    assert not any("s3cret" in c for c in remote.commands)  # the password travels in the file only
    remote.answer(r"grep -qF", exit=0)
    again = images.log_in(remote, LOGIN)
    assert again.changes == [] and len(remote.written) == 1


def test_a_refused_login_fails_the_node_with_dockers_reason():
    remote = FakeRemote(user="gpu").answer(r"docker login", "Error response from daemon: unauthorized: auth failed\n", 1)
    with pytest.raises(HostError, match="docker login to 198.18.0.1:5001 as gpufab failed: .*unauthorized") as err:
        images.log_in(remote, LOGIN)
    assert "s3cret" not in err.value.reason and err.value.changes == [f"created {images.LOGIN_FILE}"]


def test_reset_logs_docker_out_of_the_registry_gpufab_logged_in_to():
    remote = FakeRemote().answer(r"sed -n 1p /etc/gpufab/registry-login", "198.18.0.1:5001\n")
    assert images.log_out(remote).changes == ["docker logged out of 198.18.0.1:5001"]
    assert remote.sent(r"^docker logout 198.18.0.1:5001 ")
    assert images.log_out(FakeRemote()).changes == []
