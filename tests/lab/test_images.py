"""`docker.pull` and the images step against a real registry on this machine (no internet), as the sudo user.

Debian's `docker-registry` (distribution 2.8) serves on the lab's public bridge; the image is made
offline on node1 (`docker import` of a one-file tarball) and pushed there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from helpers import cli

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_bootstrap import progress, reset_lab

REGISTRY = "198.18.0.1:5000"
REF = f"{REGISTRY}/gpufab/tiny:1"


def image_id(node: str) -> str:
    return on_host(node, f"docker image inspect --format '{{{{.Id}}}}' {REF}").stdout.strip()


def make_image(node: str, text: str, push: bool) -> None:
    """A one-file image, made offline on `node` under REF (pushed to the registry when asked)."""
    on_host(node, f"rm -rf /tmp/tiny && mkdir /tmp/tiny && echo {text} > /tmp/tiny/hello && "
                  f"tar -C /tmp/tiny -c . | docker import - {REF} >/dev/null" + (f" && docker push -q {REF}" if push else ""))


@pytest.fixture(scope="module")
def registry(lab, tmp_path_factory):
    """The registry on the bridge, an inventory for `gpu` that trusts it and lists the image; a fresh lab after."""
    d = tmp_path_factory.mktemp("images")
    (d / "config.yml").write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
                                  f"http:\n  addr: {REGISTRY}\n")
    server = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(d / "config.yml")],
                              stdout=open(d / "registry.log", "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("198.18.0.1", 5000), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (d / "registry.log").read_text()
                time.sleep(0.2)
        text = LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n")
        text += f"docker:\n  daemon:\n    insecure-registries: [\"{REGISTRY}\"]\n  images: [{REF}]\n"
        (d / "gpu.yaml").write_text(text)
        env = {**lab, "GPUFAB_INVENTORY": str(d / "gpu.yaml"), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
        docker = cli("inv", "bootstrap", "--only", "docker", env=env, timeout=900)
        assert docker.returncode == 0, docker.stdout + docker.stderr
        make_image("node1", "first", push=True)
        yield {"env": env, "dir": d}
    finally:
        server.terminate()
        server.wait(timeout=30)
        reset_lab()  # daemon.json and Docker as rented again, for the modules after this one


def test_bootstrap_pulls_the_image_on_every_node_with_one_id(registry):
    proc = cli("inv", "bootstrap", "--only", "images,verify", env=registry["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert {n: steps[(n, "images")] for n in NODES} == {"node1": "ok", "node2": "changed", "node3": "changed"}
    ids = {n: image_id(n) for n in NODES}
    assert len(set(ids.values())) == 1 and ids["node1"].startswith("sha256:")
    assert f"Images: {REF} {ids['node1'].split(':')[1][:12]} on 3/3 nodes, the same image ID on each" in proc.stdout
    again = cli("inv", "docker.pull", env=registry["env"], timeout=600)
    assert again.returncode == 0 and "docker.pull: 3 hosts: 0 changed, 3 ok" in again.stdout, again.stdout


def test_a_node_holding_another_image_under_the_tag_is_named_and_a_pull_there_fixes_it(registry):
    cluster = image_id("node1")
    make_image("node3", "drifted", push=False)  # same name, other content, on node3 only
    drifted = image_id("node3")
    assert drifted != cluster
    proc = cli("inv", "docker.pull", "--nodes", "node1,node2", env=registry["env"], timeout=600)
    assert proc.returncode != 0, proc.stdout
    short = cluster.split(":")[1][:12]
    assert f"{REF} is image {drifted.split(':')[1][:12]} here, {short} on node1, node2" in proc.stdout, proc.stdout
    assert "1 failed" in proc.stdout and "node3" in proc.stdout.split("docker.pull: ")[-1]
    fixed = cli("inv", "docker.pull", env=registry["env"], timeout=600)
    assert fixed.returncode == 0 and "1 changed, 2 ok" in fixed.stdout, fixed.stdout
    assert image_id("node3") == cluster


def test_bad_image_names_are_one_error_line_and_touch_nothing(registry):
    before = {n: image_id(n) for n in NODES}
    proc = cli("inv", "docker.pull", "--images", "ubuntu;id", env=registry["env"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "gpufab: error: --images: invalid image name 'ubuntu;id'"
    assert {n: image_id(n) for n in NODES} == before
    assert os.path.exists(registry["dir"] / "registry.log")
