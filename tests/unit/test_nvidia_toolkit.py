"""NVIDIA's container toolkit in the docker step: key pinned, repository a setting, runtime from nvidia-ctk, reset.

The key file is Docker's published signing key (tests/fixtures/captured/keys/docker.asc, fingerprint as
docs.docker.com publishes it): a real key file, so the fingerprint is computed on bytes gpufab did not make.
"""

import base64
import json
import re
from pathlib import Path

import pytest

from fabfile.core import openpgp
from fabfile.core import packages as apt
from fabfile.core.errors import HostError, InputError
from fabfile.core.inventory import parse_inventory
from fabfile.ops import docker, reset
from fabfile.ops.docker import nvidia_toolkit as tk

from fakes import FakeRemote

KEY = (Path(__file__).parent.parent / "fixtures" / "captured" / "keys" / "docker.asc").read_bytes()
DOCKER_FPR = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
SETTINGS = tk.ToolkitSettings(repo="http://198.18.0.1:8770", key_url="http://198.18.0.1:8770/gpgkey",
                              fingerprint=DOCKER_FPR)
GPU_NODE = "GPUS=8\nPCI=8\nTOOLKIT=\nCTK=\nRUNTIME=\n"
#: What NVIDIA's nvidia-ctk prints for `runtime configure --runtime=docker --dry-run` (Go's MarshalIndent, 4 spaces).
CTK_OUT = json.dumps({"default-address-pools": [{"base": "172.17.0.0/16", "size": 24}],
                      "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}, indent=4, sort_keys=True)


def gpu_node(**kw) -> FakeRemote:
    return FakeRemote([(r"nvidia-smi -L 2>/dev/null \| grep -c", GPU_NODE, 0),
                       (r"curl -fsSL", base64.b64encode(KEY).decode() + "\n", 0)], **kw)


# ---------------------------------------------------------------- fingerprints


def test_a_published_key_has_its_published_fingerprint_armored_and_binary():
    assert openpgp.primary_fingerprints(KEY) == [DOCKER_FPR]
    binary = openpgp.dearmor(KEY)
    assert binary[0] & 0x80 and openpgp.primary_fingerprints(binary) == [DOCKER_FPR]


def test_a_key_file_with_a_second_key_appended_shows_both():
    assert openpgp.primary_fingerprints(KEY + b"\n" + KEY) == [DOCKER_FPR, DOCKER_FPR]


@pytest.mark.parametrize("data, why", [
    (b"<html>404 Not Found</html>", "no PGP PUBLIC KEY BLOCK"),
    (KEY.replace(b"mQINBFit2ioBEADh", b"mQINBFit2i!BEADh"), "not valid base64"),
    (openpgp.dearmor(KEY)[:300], "cut short"),
    (b"\x7f\xe9 garbage", "neither binary"),
    (b"\xff\xfe garbage", "partial lengths"),
])
def test_what_is_not_a_key_file_is_named(data, why):
    with pytest.raises(openpgp.KeyFileError, match=why):
        openpgp.primary_fingerprints(data)


def test_fingerprints_are_taken_as_people_write_them():
    assert openpgp.check_fingerprint("c95b 321b 61e8 8c18 09c4  f759 ddca e044 f796 ecb0") == tk.DEFAULT_FINGERPRINT
    assert openpgp.check_fingerprint("0xC95B321B61E88C1809C4F759DDCAE044F796ECB0") == tk.DEFAULT_FINGERPRINT
    for bad in ("DDCAE044F796ECB0", "Z" * 40, ""):
        with pytest.raises(ValueError, match="40 hex digits"):
            openpgp.check_fingerprint(bad)


# ---------------------------------------------------------------- settings


def inventory(vars_text: str):
    return parse_inventory("vars:\n" + vars_text + "nodes:\n  - {name: n1, public: 198.18.0.11, private: 198.19.0.11}\n",
                           "hosts.yaml")


def test_settings_default_to_nvidias_repository_and_key():
    s = tk.read(None, inventory("  nofile: 1024\n"))
    assert (s.repo, s.key_url, s.fingerprint) == (tk.DEFAULT_REPO, tk.DEFAULT_KEY_URL, tk.DEFAULT_FINGERPRINT)
    assert tk.source_list(s.repo) == (
        "deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] "
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n")


@pytest.mark.parametrize("line, where", [
    ("nvidia_container_repo: 'http://mirror/x y'", "nvidia_container_repo"),
    ("nvidia_container_repo: \"http://mirror/x']\"", "nvidia_container_repo"),
    ("nvidia_container_repo: ftp://mirror/x", "nvidia_container_repo"),
    ("nvidia_container_key_url: https://user:secret@mirror/gpgkey", "nvidia_container_key_url"),
    ("nvidia_container_key_fingerprint: DDCAE044F796ECB0", "nvidia_container_key_fingerprint"),
    ("gpu_test_image: 'cuda; rm -rf /'", "gpu_test_image"),
])
def test_bad_settings_are_named_before_anything_runs(line, where):
    with pytest.raises(InputError) as err:
        tk.read(None, inventory(f"  {line}\n"))
    assert where in f"{err.value.path} {err.value}" and "secret" not in str(err.value)


# ---------------------------------------------------------------- install


def test_a_gpu_node_gets_the_pinned_key_the_source_and_the_package_then_nothing():
    node = gpu_node()
    out = tk.ensure_toolkit(node, SETTINGS)
    assert node.files[tk.KEYRING].content == KEY.decode()
    assert node.files[tk.SOURCE_LIST].content == (
        f"deb [signed-by={tk.KEYRING}] http://198.18.0.1:8770 /\n")
    update = node.sent(r"apt-get .* update$")
    assert len(update) == 1 and f"Dir::Etc::sourcelist={tk.SOURCE_LIST}" in update[0]
    assert "Dir::Etc::sourceparts=-" in update[0]  # only this source: its failure is its own
    assert [c for c in node.changes if "install --no-install-recommends" in c][0].endswith("nvidia-container-toolkit")
    assert "installed nvidia-container-toolkit" in out.changes
    # The URL reaches curl quoted, and the key is fetched bounded.
    assert node.sent(r"curl -fsSL --max-time 60 --max-filesize \d+ --proto =http,https http://198.18.0.1:8770/gpgkey")
    node.answer(r"nvidia-smi -L 2>/dev/null \| grep -c", GPU_NODE.replace("TOOLKIT=", "TOOLKIT=installed 1.17.8-1"))
    node.changes.clear()
    again = tk.ensure_toolkit(node, SETTINGS)
    assert again.changes == [] and node.changes == [] and again.notes == ["NVIDIA container toolkit 1.17.8-1"]


def test_a_key_that_is_not_the_pinned_one_is_never_written():
    node = gpu_node()
    with pytest.raises(HostError) as err:
        tk.ensure_toolkit(node, tk.ToolkitSettings(key_url="http://198.18.0.1:8770/gpgkey"))
    assert DOCKER_FPR in err.value.reason and tk.DEFAULT_FINGERPRINT in err.value.reason
    assert "nothing installed" in err.value.reason
    assert node.written == [] and not node.sent("apt-get")


def test_a_key_file_with_an_extra_key_is_refused():
    node = gpu_node().answer(r"curl -fsSL", base64.b64encode(KEY + KEY).decode())
    with pytest.raises(HostError, match="not the pinned"):
        tk.ensure_toolkit(node, SETTINGS)
    assert node.written == []


def test_an_unreachable_key_url_is_one_line_naming_it():
    node = gpu_node().answer(r"curl -fsSL", "", 0)
    with pytest.raises(HostError) as err:
        tk.ensure_toolkit(node, SETTINGS)
    assert err.value.reason.startswith("cannot fetch NVIDIA's container toolkit key from http://198.18.0.1:8770/gpgkey")
    assert "\n" not in err.value.reason and node.written == []


def test_a_repository_apt_cannot_use_is_taken_out_again():
    node = gpu_node().answer(r"apt-get .* update",
                             "Err:1 http://198.18.0.1:8770  InRelease\n  Could not connect to 198.18.0.1:8770\n", 0)
    with pytest.raises(HostError) as err:
        tk.ensure_toolkit(node, SETTINGS)
    assert "apt cannot use NVIDIA's repository http://198.18.0.1:8770" in err.value.reason
    assert "Could not connect" not in err.value.reason.split("(")[0]
    assert node.sent(rf"rm -f -- {tk.SOURCE_LIST} {tk.KEYRING}")
    assert not node.sent("install --no-install-recommends")


def test_nodes_without_gpus_or_without_a_driver_get_no_toolkit():
    plain = FakeRemote([(r"nvidia-smi -L 2>/dev/null \| grep -c", "GPUS=0\nPCI=0\n", 0)])
    assert tk.ensure_toolkit(plain, SETTINGS).notes == [] and plain.changes == []
    no_driver = FakeRemote([(r"nvidia-smi -L 2>/dev/null \| grep -c", "GPUS=0\nPCI=8\n", 0)])
    out = tk.ensure_toolkit(no_driver, SETTINGS)
    assert no_driver.changes == [] and "8 NVIDIA GPUs on PCI but no working driver" in out.notes[0]


def test_a_dry_run_plans_the_files_and_changes_nothing():
    node = gpu_node(dry_run=True)
    tk.ensure_toolkit(node, SETTINGS)
    assert sorted(c.file.path for c in node.planned) == sorted([tk.KEYRING, tk.SOURCE_LIST])
    assert node.written == []


# ---------------------------------------------------------------- daemon.json and verify


def test_the_runtime_is_what_nvidia_ctk_would_write_merged_in_one_write_and_one_restart():
    node = FakeRemote([(r"command -v dockerd", "docker=yes\nnvidia=yes\n", 0),
                       (r"nvidia-ctk runtime configure --runtime=docker --dry-run", CTK_OUT, 0),
                       (r"docker info", json.dumps({"ServerVersion": "27.1.1", "Runtimes": {"nvidia": {}}}), 0)],
                      files={docker.DAEMON_JSON: '{"log-driver": "journald"}\n'})
    docker.configure_docker(node, {}, force=False)
    merged = json.loads(node.files[docker.DAEMON_JSON].content)
    assert merged["runtimes"] == {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
    assert merged["log-driver"] == "journald"
    assert node.paths_written() == [docker.DAEMON_JSON] and node.changes.count("systemctl restart docker") == 1
    assert node.as_root.count(tk.CTK_DRY_RUN) == 1  # it reads daemon.json, which may be root's alone
    node.changes.clear()
    assert docker.configure_docker(node, {}, force=False).changes == [] and node.changes == []
    # reset takes out what gpufab (that is, nvidia-ctk's entry) added
    assert docker.unmerge_daemon_json(merged, docker.managed_settings({}), {"log-driver": "journald"},
                                     docker.nvidia_runtime()) == {"log-driver": "journald"}


def test_an_operators_own_nvidia_runtime_is_kept_and_nvidia_ctk_not_asked():
    own = {"runtimes": {"nvidia": {"path": "/opt/nvidia/bin/nvidia-container-runtime", "runtimeArgs": []}}}
    node = FakeRemote([(r"command -v dockerd", "docker=yes\nnvidia=yes\n", 0), (r"docker info", "{}", 0)],
                      files={docker.DAEMON_JSON: json.dumps(own)})
    docker.configure_docker(node, {}, force=False)
    assert json.loads(node.files[docker.DAEMON_JSON].content)["runtimes"] == own["runtimes"]
    assert not node.sent("nvidia-ctk")


def test_nvidia_ctk_that_gives_no_runtime_fails_the_step_with_its_complaint():
    node = FakeRemote([(r"command -v dockerd", "docker=yes\nnvidia=yes\n", 0),
                       (r"nvidia-ctk runtime configure", "not json", 0)])
    with pytest.raises(HostError, match="gave no runtime"):
        docker.configure_docker(node, {}, force=False)
    assert node.written == []


INFO_NVIDIA = json.dumps({"ServerVersion": "27.1.1", "DefaultAddressPools": [
    {"Base": "172.17.0.0/16", "Size": 24}, {"Base": "192.168.0.0/16", "Size": 24}],
    "Runtimes": {"runc": {}, "nvidia": {}}})
LISTING = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})\n" for i in range(8))


def verify_node(info: str, listing: str = LISTING, image: bool = True) -> FakeRemote:
    return FakeRemote([(r"docker info", info, 0), (r"nvidia-smi -L 2>/dev/null \| grep -c", "GPUS=8\nPCI=8\n", 0),
                       (r"docker image inspect", "", 0 if image else 1),
                       (r"docker run --rm --gpus all", listing, 0)])


def test_verify_runs_a_gpus_all_container_where_the_image_is_there():
    settings = docker.DockerSettings("distro", toolkit=tk.ToolkitSettings(test_image="lab/gpu-test:1"))
    out = docker.check(verify_node(INFO_NVIDIA), settings)
    assert "--gpus all: a container sees all 8 GPUs (lab/gpu-test:1)" in out.notes
    with pytest.raises(HostError, match="does not see the node's 8 GPUs"):
        docker.check(verify_node(INFO_NVIDIA, LISTING.split("GPU 4")[0]), settings)
    absent = docker.check(verify_node(INFO_NVIDIA, image=False), settings)
    assert "no --gpus container check: image lab/gpu-test:1 is not on the node" in absent.notes
    nothing = docker.check(verify_node(INFO_NVIDIA), docker.DockerSettings("distro"))
    assert any(n.startswith("no --gpus container check (set gpu_test_image") for n in nothing.notes)


def test_verify_fails_a_gpu_node_whose_docker_has_no_nvidia_runtime():
    info = INFO_NVIDIA.replace(', "nvidia": {}', "")
    with pytest.raises(HostError, match="no nvidia runtime on a node with 8 NVIDIA GPUs"):
        docker.check(verify_node(info), docker.DockerSettings("distro"))


def test_reset_packages_takes_nvidias_source_and_key_with_the_toolkit():
    node = FakeRemote([(r"dpkg-query", "nvidia-container-toolkit installed\n", 0)],
                      files={apt.INSTALLED_RECORD: "nvidia-container-toolkit\n"})
    out = reset.purge_packages(node)
    assert any(re.search(r"purge --auto-remove nvidia-container-toolkit$", c) for c in node.changes)
    assert f"rm -f -- {tk.SOURCE_LIST} {tk.KEYRING}" in node.changes
    assert out.changes[-1].startswith("removed NVIDIA's apt source")
