"""Containers as data: the inventory entry checked, `docker create`'s words, what a node's state makes it do."""

from __future__ import annotations

import pytest

from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import parse_inventory
from fabfile.ops import containers

from fakes import FakeRemote, node

BASE = "nodes:\n  - name: n1\n    public: 203.0.113.1\n    private: 10.0.0.1\n    role: head\n"
IMAGE = "198.18.0.1:5000/gpufab/sandbox:1"
ID = "sha256:" + "a" * 64


def read(entries: str):
    inv = parse_inventory(BASE + "docker:\n  containers:\n" + entries, "hosts.yaml")
    return containers.read(None, inv, {})


def sandbox(**kw):
    return containers.Container(**{"name": "sandbox-fusion", "image": IMAGE, "command": ("serve", "--port", "8080"),
                                   "ports": ("8080:8080",), **kw})


def test_an_entry_is_read_with_its_defaults():
    s = read(f"    - name: sandbox-fusion\n      image: {IMAGE}\n      command: serve --port 8080\n"
             "      ports: ['8080:8080']\n")
    assert s.containers == (sandbox(),)
    assert s.containers[0].restart == "unless-stopped" and s.containers[0].where == "all"


@pytest.mark.parametrize("entry,message", [
    (f"    - name: a;b\n      image: {IMAGE}\n", "hosts.yaml:8: docker.containers #1: invalid container name 'a;b'"),
    ("    - name: a\n      image: 'x;id'\n", "hosts.yaml:9: container a: invalid image name 'x;id'"),
    (f"    - name: a\n      image: {IMAGE}\n      restart: sometimes\n", "container a: restart must be one of"),
    (f"    - name: a\n      image: {IMAGE}\n      gpus: yes please\n", "container a: gpus must be true or false"),
    (f"    - name: a\n      image: {IMAGE}\n      ports: ['80:80; id']\n", "invalid port mapping '80:80; id'"),
    (f"    - name: a\n      image: {IMAGE}\n      env_file: relative.env\n", "env_file must be an absolute path"),
    (f"    - name: a\n      image: {IMAGE}\n      volumes: [/:/host]\n", "unknown key 'volumes'"),
    (f"    - name: a\n      image: {IMAGE}\n    - name: a\n      image: {IMAGE}\n", "a named twice"),
])
def test_a_bad_entry_is_one_error_naming_its_line(entry, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(";", ";")):
        read(entry)


def test_create_binds_published_ports_to_the_private_address_and_labels_the_spec():
    args = containers.run_args(sandbox(gpus=True, infiniband=True, env_file="/etc/gpufab/secrets.env"), "10.0.0.2")
    assert args[:8] == ["docker", "create", "--name", "sandbox-fusion", "--restart", "unless-stopped", "--label",
                        f"gpufab.spec={sandbox(gpus=True, infiniband=True, env_file='/etc/gpufab/secrets.env').spec}"]
    joined = " ".join(args)
    assert "--gpus all" in joined and "--device /dev/infiniband --cap-add IPC_LOCK --ulimit memlock=-1" in joined
    assert "-p 10.0.0.2:8080:8080" in joined and args[-4:] == [IMAGE, "serve", "--port", "8080"]
    assert "-p 0.0.0.0:9000:9000" in " ".join(containers.run_args(sandbox(ports=("0.0.0.0:9000:9000",)), "10.0.0.2"))
    assert sandbox().spec != sandbox(command=("serve",)).spec


def remote_with(state: str, image_id: str = ID, label: str = "") -> FakeRemote:
    remote = FakeRemote(the_node=node())
    remote.answer(r"^docker image inspect", image_id)
    remote.answer(r"^docker inspect", state if state == "missing" else f"{state} {ID} {label or sandbox().spec}")
    remote.after(r"^docker start", r"docker inspect", f"running {ID} {sandbox().spec}")
    return remote


def test_a_missing_container_is_created_and_started_and_a_running_one_left_alone():
    remote = remote_with("missing")
    out = containers.keep_running(remote, sandbox())
    assert out.changes == ["created container sandbox-fusion", "started container sandbox-fusion"]
    assert remote.sent(r"^docker create --name sandbox-fusion")
    same = remote_with("running")
    assert containers.keep_running(same, sandbox()).changes == [] and not same.changes


def test_changed_settings_or_a_newer_image_create_it_again_and_a_stopped_one_is_started():
    changed = containers.keep_running(remote_with("running", label="0123456789abcdef"), sandbox())
    assert changed.changes[0] == "removed container sandbox-fusion (its settings changed)"
    newer = containers.keep_running(remote_with("running", image_id="sha256:" + "b" * 64), sandbox())
    assert newer.changes[0] == "removed container sandbox-fusion (its image name holds a newer image)"
    stopped = remote_with("exited")
    assert containers.keep_running(stopped, sandbox()).changes == ["started container sandbox-fusion"]
    assert not stopped.sent(r"^docker create")


def test_a_container_that_cannot_start_fails_the_node_with_dockers_reason():
    remote = remote_with("missing").answer(r"^docker start", exit=1)
    with pytest.raises(HostError, match="container sandbox-fusion does not start: fake: failed") as err:
        containers.keep_running(remote, sandbox())
    assert err.value.changes == ["created container sandbox-fusion"]


def test_verify_names_the_containers_not_running():
    s = containers.ContainersSettings((sandbox(), sandbox(name="other", where="workers")))
    ok = FakeRemote(the_node=node()).answer(r"^docker inspect", f"running {ID} x")
    assert containers.check(ok, s).value == (1, 1)  # the head runs only the one meant for every node
    down = FakeRemote(the_node=node()).answer(r"^docker inspect", "exited x y")
    with pytest.raises(HostError, match="containers not running: sandbox-fusion exited"):
        containers.check(down, s)


def test_reset_removes_the_containers_gpufab_started_and_no_other():
    remote = FakeRemote().answer(r"docker ps -a --filter label=gpufab.spec", "sandbox-fusion\n")
    assert containers.remove_all(remote).changes == ["removed container sandbox-fusion"]
    assert remote.sent(r"^docker rm -f sandbox-fusion ")
    assert containers.remove_all(FakeRemote()).changes == []
    assert containers.remove_all(FakeRemote().answer(r"command -v docker", exit=1)).changes == []
