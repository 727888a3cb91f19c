"""Pure planning of the node-setup steps: templates, parsers, merging, file plans."""

from __future__ import annotations

import json

import pytest

from fabfile.ops import docker

from fabfile.ops import limits

from fabfile.ops import netenv

from fabfile.ops.storage import nfs
from fabfile.ops.shared import share
from fabfile.core.errors import InputError
from fabfile.core.files import FileState, ManagedFile, plan_files, replace_block
from fabfile.core.packages import install_command, parse_installed, query_command
from fabfile.core.remote import parse_state
from fabfile.ops.shared import nic
from fabfile.ops.shared import nodeenv, secrets


# --------------------------------------------------------------------------- files


def test_plan_files_creates_updates_fixes_perms_and_leaves_equal_alone():
    a = ManagedFile("/a", "x\n")
    b = ManagedFile("/b", "new\n")
    c = ManagedFile("/c", "same\n", mode=0o600)
    d = ManagedFile("/d", "same\n")
    found = {
        "/a": FileState("/a", exists=False),
        "/b": FileState("/b", True, content="old\n", mode=0o644, owner="root", group="root"),
        "/c": FileState("/c", True, content="same\n", mode=0o644, owner="root", group="root"),
        "/d": FileState("/d", True, content="same\n", mode=0o644, owner="root", group="root"),
    }
    changes = plan_files([a, b, c, d], found)
    assert [(ch.file.path, ch.kind) for ch in changes] == [("/a", "create"), ("/b", "update"), ("/c", "perms")]
    assert "-old\n+new\n" in changes[1].diff()


def test_secret_files_compare_by_digest_and_never_show_values():
    secret = ManagedFile("/s", "TOKEN='hunter2'\n", mode=0o600, secret=True)
    same = FileState("/s", True, digest=secret.digest, mode=0o600, owner="root", group="root")
    assert plan_files([secret], {"/s": same}) == []
    other = FileState("/s", True, digest="0" * 64, mode=0o600, owner="root", group="root")
    (change,) = plan_files([secret], {"/s": other})
    assert "hunter2" not in change.diff() and "***" in change.diff()


def test_parse_state_reads_content_digest_and_missing():
    text = (
        "==gpufab-file 644 root root /etc/a b\n" + "aGVsbG8K\n"
        "==gpufab-digest 600 gpu gpu /etc/s\n" + "ab" * 32 + "\n"
        "==gpufab-missing /etc/none\n"
    )
    found = parse_state(text)
    assert found["/etc/a b"].content == "hello\n" and found["/etc/a b"].mode == 0o644
    assert found["/etc/s"].digest == "ab" * 32 and found["/etc/s"].owner == "gpu" and found["/etc/s"].content is None
    assert not found["/etc/none"].exists


def test_replace_block_never_duplicates_and_keeps_the_rest():
    begin, end = nfs.FSTAB_BEGIN, nfs.FSTAB_END
    fstab = "UUID=1 / ext4 defaults 0 1\n"
    block = nfs.fstab_block("10.0.0.1", "/mnt/shared", "/mnt/shared")
    once = replace_block(fstab, block, "fstab", begin, end)
    assert replace_block(once, block, "fstab", begin, end) == once
    assert once.startswith(fstab) and once.count("10.0.0.1:/mnt/shared") == 1
    moved = replace_block(once, nfs.fstab_block("10.0.0.2", "/mnt/shared", "/mnt/shared"), "fstab", begin, end)
    assert "10.0.0.1" not in moved and moved.count("10.0.0.2:/mnt/shared") == 1
    assert replace_block(once, "", "fstab", begin, end) == fstab


# --------------------------------------------------------------------------- limits


def test_limit_files_render_value_in_all_three_places():
    files = limits.limit_files(16384)
    assert [f.path for f in files] == [limits.LIMITS_FILE, limits.SYSTEMD_FILE, limits.DOCKER_FILE]
    assert "*       soft    nofile  16384" in files[0].content
    assert "root    hard    nofile  16384" in files[0].content
    assert "DefaultLimitNOFILE=16384" in files[1].content
    assert "LimitNOFILE=16384" in files[2].content


@pytest.mark.parametrize("value", ["lots", "100", "99999999"])
def test_bad_nofile_is_input_error(value):
    with pytest.raises(InputError):
        limits.check_nofile(value)


def test_parse_login_limits():
    assert limits.parse_login_limits("65536 65536\n") == (65536, 65536)
    assert limits.parse_login_limits("1024 unlimited") == (1024, limits.MAX_NOFILE)


# --------------------------------------------------------------------------- docker


def test_daemon_json_merge_keeps_unmanaged_keys_and_sets_managed_ones():
    existing = docker.parse_daemon_json('{"debug": true, "max-concurrent-downloads": 3}')
    merged = docker.merge_daemon_json(existing, docker.managed_settings({"log-driver": "local"}), None)
    assert merged["debug"] is True
    assert merged["max-concurrent-downloads"] == 10 and merged["max-concurrent-uploads"] == 10
    assert docker.pools(merged) == [("172.17.0.0/16", 24), ("192.168.0.0/16", 24)]
    assert merged["log-driver"] == "local"
    assert "runtimes" not in merged
    assert json.loads(docker.dump_daemon_json(merged)) == merged


def test_nvidia_runtime_added_when_toolkit_present_and_kept_if_custom():
    added = docker.merge_daemon_json({}, docker.managed_settings({}), docker.nvidia_runtime())
    assert added["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    custom = {"runtimes": {"nvidia": {"path": "/opt/nv/runtime", "runtimeArgs": []}}}
    kept = docker.merge_daemon_json(custom, docker.managed_settings({}), docker.nvidia_runtime())
    assert kept["runtimes"]["nvidia"]["path"] == "/opt/nv/runtime"


@pytest.mark.parametrize("text", ['{"debug": true,\n}', "[1, 2]", "not json"])
def test_invalid_daemon_json_is_reported_not_replaced(text):
    with pytest.raises(docker.DaemonJsonError):
        docker.parse_daemon_json(text)


def test_empty_or_missing_daemon_json_is_empty():
    assert docker.parse_daemon_json(None) == {} and docker.parse_daemon_json("  \n") == {}


def test_parse_docker_info():
    text = json.dumps({
        "ServerVersion": "20.10.24+dfsg1",
        "DefaultAddressPools": [{"Base": "172.17.0.0/16", "Size": 24}, {"Base": "192.168.0.0/16", "Size": 24}],
        "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}},
    })
    info = docker.parse_docker_info(text)
    assert info.server_version == "20.10.24+dfsg1"
    assert info.pools == [("172.17.0.0/16", 24), ("192.168.0.0/16", 24)]
    assert info.runtimes == ["nvidia", "runc"]
    with pytest.raises(ValueError, match="Cannot connect"):
        docker.parse_docker_info(json.dumps({"ServerErrors": ["Cannot connect to the Docker daemon"]}))


def test_official_source_line_is_signed_by_the_keyring():
    line = docker.source_list("ubuntu", "jammy", "arm64").splitlines()[-1]
    assert line == (
        "deb [arch=arm64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu jammy stable"
    )
    with pytest.raises(InputError):
        docker.check_source("snap")


# --------------------------------------------------------------------------- netenv


def test_parse_ip_route_get():
    assert nic.parse_route_dev("198.19.0.11 dev ens14np0 src 198.19.0.12 uid 0 \\    cache ") == "ens14np0"
    assert nic.parse_route_dev("local 198.19.0.11 dev lo table local src 198.19.0.11 uid 0") == "lo"
    assert nic.parse_route_dev("RTNETLINK answers: Network is unreachable") is None


FACTS = """route=local 198.19.0.11 dev lo table local src 198.19.0.11 uid 0
owner=enp27s0f0np0
addr=lo 127.0.0.1/8
addr=eth0 198.18.0.11/24
addr=enp27s0f0np0 198.19.0.11/24
link=lo 65536
link=eth0 1500
link=enp27s0f0np0 9000
"""


def test_choose_nic_on_head_worker_and_override():
    facts = nic.parse_nic_facts(FACTS)
    assert nic.choose_nic(facts) == "enp27s0f0np0"  # head: the NIC holding the address
    assert facts.mtus["enp27s0f0np0"] == 9000 and facts.addresses["eth0"] == ["198.18.0.11/24"]
    worker = nic.parse_nic_facts("route=198.19.0.11 dev ens14np0 src 198.19.0.12 uid 0\nlink=ens14np0 1500\n")
    assert nic.choose_nic(worker) == "ens14np0"
    assert nic.choose_nic(facts, "eth0") == "eth0"
    with pytest.raises(ValueError, match="interface eth9 .* has: enp27s0f0np0, eth0"):
        nic.choose_nic(facts, "eth9")
    with pytest.raises(ValueError, match="no route"):
        nic.choose_nic(nic.parse_nic_facts("route=RTNETLINK answers: Network is unreachable\n"))


def test_netenv_files_ethernet_profile():
    env, nccl, profile = netenv.netenv_files("node2", "ens14np0", "198.19.0.11", 29500, "ethernet")
    values = nodeenv.env_lines(env.content)
    for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
        assert values[key] == "ens14np0"
    assert values["MASTER_ADDR"] == "198.19.0.11" and values["MASTER_PORT"] == "29500"
    for key in ("NCCL_IB_DISABLE", "NCCL_CROSS_NIC", "GLOO_USE_IPV4"):
        assert values[key] == "1"
    # P2P and shared memory only carry traffic inside a node: left on by default.
    assert "NCCL_P2P_DISABLE" not in values and "NCCL_SHM_DISABLE" not in values
    assert values["NCCL_NET_GDR_LEVEL"] == "0" and values["GLOO_TIMEOUT_MS"] == "60000"
    nccl_values = nodeenv.env_lines(nccl.content)
    assert nccl_values == {k: v for k, v in values.items() if k.startswith("NCCL_")}
    assert env.mode == 0o644 and nccl.path == "/etc/nccl.conf"
    assert profile.path.startswith("/etc/profile.d/") and ". /etc/gpufab/netenv.env" in profile.content


def test_netenv_conservative_profile_keeps_the_seed_guides_p2p_and_shm_off():
    env = netenv.netenv_files("n", "eth1", "10.0.0.1", 29500, netenv.check_profile("conservative"))[0]
    values = nodeenv.env_lines(env.content)
    assert values["NCCL_P2P_DISABLE"] == "1" and values["NCCL_SHM_DISABLE"] == "1"
    assert values["NCCL_IB_DISABLE"] == "1" and values["NCCL_SOCKET_IFNAME"] == "eth1"


def test_netenv_files_infiniband_profile_lists_hcas():
    env = netenv.netenv_files("n", "ib0", "10.0.0.1", 29500, "infiniband", ["mlx5_0", "mlx5_1"])[0]
    values = nodeenv.env_lines(env.content)
    assert values["NCCL_IB_DISABLE"] == "0" and values["NCCL_IB_HCA"] == "mlx5_0,mlx5_1"
    assert "NCCL_P2P_DISABLE" not in values
    with pytest.raises(InputError):
        netenv.check_profile("wifi")


def test_secrets_from_dotenv_go_to_a_0600_secret_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# comment\nHF_TOKEN=hf_abc\nexport WANDB_API_KEY=\"w-123\"\n")
    values = secrets.load_secrets(str(path))
    assert values == {"HF_TOKEN": "hf_abc", "WANDB_API_KEY": "w-123"}
    f = netenv.secrets_file(values, "gpu")
    assert (f.mode, f.owner, f.group) == (0o640, "root", "gpu") and f.secret
    assert "HF_TOKEN='hf_abc'" in f.content


@pytest.mark.parametrize("text, message", [
    ("A='it''s'\nB=x'y\n", "the value of B"),
    ("A\n", "A has no value"),
])
def test_bad_secrets_name_the_key_never_the_value(tmp_path, text, message):
    path = tmp_path / ".env"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        secrets.load_secrets(str(path))
    assert "x'y" not in str(err.value)


def test_probe_summary():
    probes = netenv.parse_probes("10.0.0.2 29500 open\n10.0.0.3 29500 timeout\n10.0.0.2 6379 refused\n")
    names = {"10.0.0.2": "node2", "10.0.0.3": "node3"}
    assert netenv.summarize_probes(probes, names, 29500) == "1/2 open; node3 timeout"
    assert netenv.summarize_probes(probes, names, 6379) == "0/1 open; node2 refused"


# --------------------------------------------------------------------------- nfs

NO_NFS = "nodev\tsysfs\nnodev\tproc\n\text4\nnodev\tfuse\nkernel 6.1.0-test\n"


def test_proc_filesystems_decides_nfs_support():
    assert "no NFS server (nfsd)" in nfs.kernel_lacks(NO_NFS, "nfsd")
    assert "6.1.0-test" in nfs.kernel_lacks(NO_NFS, "nfs")
    assert nfs.kernel_lacks(NO_NFS + "nodev\tnfs\nnodev\tnfs4\n", "nfs") is None
    assert nfs.kernel_lacks(NO_NFS + "module nfsd\n", "nfsd") is None  # loadable counts


def test_export_line_is_for_the_private_subnet_only():
    f = nfs.exports_file("/mnt/shared", nfs.private_subnet("198.19.0.11/24"))
    lines = [l for l in f.content.splitlines() if l and not l.startswith("#")]
    assert lines == ["/mnt/shared 198.19.0.0/24(rw,sync,no_subtree_check,root_squash)"]
    with pytest.raises(InputError, match="every address"):
        nfs.exports_file("/mnt/shared", "0.0.0.0/0")


def test_fstab_conflict_and_findmnt():
    lines = ["UUID=1 / ext4 defaults 0 1", "# 10.0.0.1:/x /mnt/shared nfs", "10.0.0.9:/y /mnt/shared/ nfs rw 0 0"]
    assert nfs.fstab_conflict(lines, "/mnt/shared") == "10.0.0.9:/y /mnt/shared/ nfs rw 0 0"
    assert nfs.fstab_conflict(lines[:2], "/mnt/shared") is None
    found = nfs.parse_findmnt("10.0.0.1:/mnt/shared nfs4\n")
    assert nfs.mounted_from(found, "10.0.0.1", "/mnt/shared")
    assert not nfs.mounted_from(nfs.parse_findmnt(""), "10.0.0.1", "/mnt/shared")


@pytest.mark.parametrize("path", ["relative", "/mnt/a b", "/mnt/$(x)", "/"])
def test_bad_nfs_path(path):
    with pytest.raises(InputError):
        share.check_path(path)


# --------------------------------------------------------------------------- packages


def test_package_queries():
    assert "dpkg-query -W" in query_command(["docker.io"])
    assert parse_installed("docker.io installed\nnfs-common not-installed\n") == {"docker.io"}
    cmd = install_command(["nfs-common"])
    assert "DPkg::Lock::Timeout=300" in cmd and cmd.endswith("install --no-install-recommends nfs-common")
