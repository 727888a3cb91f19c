"""Images and containers against a real registry on this machine (no internet), as the sudo user.

Debian's `docker-registry` (distribution 2.8) serves on the lab's public bridge; the images are made
offline on node1 (`docker import` of a tarball: one text file, or Debian's static busybox) and pushed
there. `docker.pull` and the images step, then the containers step with a busybox httpd as the sandbox.
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
#: The same registry software with a login (htpasswd, bcrypt): a private registry.
PRIVATE = "198.18.0.1:5001"
USER, PASSWORD = "gpufab", "lab-Registry-pw-7"
REF = f"{REGISTRY}/gpufab/tiny:1"
SANDBOX = f"{REGISTRY}/gpufab/sandbox:1"
CONTAINERS = f"""  containers:
    - name: sandbox-fusion
      image: {SANDBOX}
      command: [/bin/busybox, httpd, -f, -p, "8080"]
      ports: ["8080:8080"]
"""


def bcrypt(password: str) -> str:
    """The htpasswd line's hash the registry wants (bcrypt), from the C library: no extra package."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


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
    (d / "htpasswd").write_text(f"{USER}:{bcrypt(PASSWORD)}\n")
    (d / "private.yml").write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d / 'private'}\n"
                                   f"http:\n  addr: {PRIVATE}\nauth:\n  htpasswd:\n    realm: gpufab-lab\n"
                                   f"    path: {d / 'htpasswd'}\n")
    servers = [subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve", str(d / name)],
                                stdout=open(d / f"{name}.log", "w"), stderr=subprocess.STDOUT)
               for name in ("config.yml", "private.yml")]
    try:
        for port in (5000, 5001):
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("198.18.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline and all(s.poll() is None for s in servers), \
                        (d / "config.yml.log").read_text() + (d / "private.yml.log").read_text()
                    time.sleep(0.2)
        text = LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n")
        text += (f"docker:\n  daemon:\n    insecure-registries: [\"{REGISTRY}\", \"{PRIVATE}\"]\n  images: [{REF}]\n"
                 f"{CONTAINERS}")
        (d / "gpu.yaml").write_text(text)
        env = {**lab, "GPUFAB_INVENTORY": str(d / "gpu.yaml"), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
        docker = cli("inv", "bootstrap", "--only", "docker", env=env, timeout=900)
        assert docker.returncode == 0, docker.stdout + docker.stderr
        make_image("node1", "first", push=True)
        # A sandbox that serves: Debian's static busybox (through the lab's apt proxy), its httpd as the command.
        on_host("node1", "cd /tmp && rm -rf bb && mkdir -p bb/root/bin && cd bb && apt-get download -q busybox-static "
                         ">/dev/null && dpkg-deb -x busybox-static_*.deb x && cp x/bin/busybox root/bin/ && "
                         f"tar -C root -c . | docker import - {SANDBOX} >/dev/null && docker push -q {SANDBOX} && "
                         f"docker rmi -f {SANDBOX} >/dev/null")
        yield {"env": env, "dir": d}
    finally:
        for server in servers:
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
    assert os.path.exists(registry["dir"] / "config.yml.log")


def test_the_sandbox_container_runs_on_every_node_reachable_on_the_private_network_only(registry):
    proc = cli("inv", "bootstrap", "--only", "containers,verify", env=registry["env"], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {s for (n, step), s in progress(proc.stdout).items() if step == "containers"} == {"changed"}
    assert "Containers: sandbox-fusion running on 3/3 nodes (docker ps)" in proc.stdout
    # The seed's check, by name, on every node.
    seen = cli("inv", "docker.verify", "--container", "sandbox-fusion", env=registry["env"], timeout=300)
    assert seen.returncode == 0 and seen.stdout.count("container sandbox-fusion: Up") == 3, seen.stdout
    # Published on the node's private address: node1 reaches node2's sandbox there, not on the public one.
    private = on_host("node1", "curl -s -o /dev/null -w '%{http_code}' http://198.19.0.12:8080/", check=False)
    assert private.stdout in ("200", "404"), private.stdout + private.stderr
    public = on_host("node1", "curl -s -m 5 -o /dev/null http://198.18.0.12:8080/", check=False)
    assert public.returncode != 0
    again = cli("inv", "docker.containers", env=registry["env"], timeout=300)
    assert again.returncode == 0 and "docker.containers: 3 hosts: 0 changed, 3 ok" in again.stdout, again.stdout


def test_a_stopped_sandbox_is_named_and_started_again(registry):
    on_host("node2", "docker stop -t 1 sandbox-fusion >/dev/null")
    seen = cli("inv", "docker.verify", "--container", "sandbox-fusion", env=registry["env"], timeout=300)
    assert seen.returncode != 0 and "node2: container sandbox-fusion is not running" in seen.stdout, seen.stdout
    fixed = cli("inv", "docker.containers", env=registry["env"], timeout=300)
    assert fixed.returncode == 0 and "1 changed, 2 ok" in fixed.stdout and "started container sandbox-fusion" \
        in fixed.stdout, fixed.stdout
    assert on_host("node2", "docker inspect -f '{{.State.Status}}' sandbox-fusion").stdout.strip() == "running"


def test_a_private_registry_login_comes_from_the_env_file_and_is_never_shown(registry, tmp_path):
    private_ref = f"{PRIVATE}/gpufab/tiny:1"
    on_host("node1", f"echo {PASSWORD} | docker login -u {USER} --password-stdin {PRIVATE} >/dev/null 2>&1 && "
                     f"docker tag {REF} {private_ref} && docker push -q {private_ref} >/dev/null && "
                     f"docker rmi {private_ref} >/dev/null && docker logout {PRIVATE} >/dev/null")
    refused = cli("inv", "docker.pull", "--images", private_ref, env=registry["env"], timeout=600)
    assert refused.returncode != 0 and "3 failed" in refused.stdout, refused.stdout
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DOCKER_USERNAME={USER}\nDOCKER_PASSWORD={PASSWORD}\n")
    args = ("inv", "docker.pull", "--images", private_ref, "--login", "--env-file", str(dotenv))
    proc = cli(*args, env=registry["env"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(f"logged in to {PRIVATE} as {USER} (password not shown)") == 3
    assert PASSWORD not in proc.stdout + proc.stderr
    for node in NODES:
        assert on_host(node, "stat -c '%a %U' /etc/gpufab/registry-login").stdout.strip() == "600 root"
        assert on_host(node, f"grep -rl {PASSWORD} /var/backups/gpufab 2>/dev/null || true").stdout.strip() == ""
    again = cli(*args, env=registry["env"], timeout=600)
    assert again.returncode == 0 and "0 changed, 3 ok" in again.stdout, again.stdout
    dotenv.write_text(f"DOCKER_USERNAME={USER}\nDOCKER_PASSWORD=not-{PASSWORD}\n")
    wrong = cli(*args, "--nodes", "node2", env=registry["env"], timeout=600)
    assert wrong.returncode != 0 and f"docker login to {PRIVATE} as {USER} failed" in wrong.stdout, wrong.stdout
    assert f"not-{PASSWORD}" not in wrong.stdout + wrong.stderr


def test_reset_takes_out_the_sandbox_and_the_registry_login_and_keeps_the_images(registry):
    proc = cli("inv", "reset", "--yes", "--nodes", "node3", env=registry["env"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removed container sandbox-fusion" in proc.stdout and f"docker logged out of {PRIVATE}" in proc.stdout
    assert on_host("node3", "docker ps -aq --filter name=sandbox-fusion").stdout.strip() == ""
    assert on_host("node3", f"ls /etc/gpufab/registry-login 2>/dev/null; grep -c '{PRIVATE}' "
                            "/root/.docker/config.json 2>/dev/null || true").stdout.strip() in ("", "0")
    assert image_id("node3").startswith("sha256:")  # pulled images stay, like installed packages
