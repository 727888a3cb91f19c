"""netenv, nfs, sshfs, storage, ray and preflight against a fake node."""

import json

import pytest

from fabfile.core.errors import HostError, InputError
from fabfile.ops import netenv, preflight, ray, storage
from fabfile.ops.storage import nfs, sshfs

from fakes import FakeRemote, FakeRun, node

HEAD = "10.0.0.1"


def nic_facts(dev: str = "ens14np0", own: str = "10.0.0.2/24") -> str:
    return (f"route={HEAD} dev {dev} src {own.split('/')[0]} uid 0\nowner=\n"
            f"addr=lo 127.0.0.1/8\naddr=eth0 203.0.113.2/24\naddr={dev} {own}\n"
            f"link=lo 65536\nlink=eth0 1500\nlink={dev} 9000\n")


def worker(**vars):
    return node("node2", "10.0.0.2", "worker", **vars)


def test_netenv_writes_the_nic_toward_the_head_then_nothing():
    remote = FakeRemote([(r"route get", nic_facts(), 0)], the_node=worker())
    s = netenv.NetenvSettings(HEAD, 29500, "ethernet")
    out = netenv.apply(remote, s)
    env = remote.files[netenv.ENV_FILE].content
    assert "NCCL_SOCKET_IFNAME=ens14np0\n" in env and "GLOO_SOCKET_IFNAME=ens14np0\n" in env
    assert f"MASTER_ADDR={HEAD}\n" in env and out.value == netenv.NetenvState("ens14np0")
    assert set(remote.paths_written()) == {netenv.ENV_FILE, netenv.NCCL_CONF, netenv.PROFILE_SNIPPET}
    assert "NIC ens14np0 (10.0.0.2/24, MTU 9000)" in out.notes
    assert netenv.apply(remote, s).changes == []


def test_netenv_an_unknown_nic_override_fails_naming_the_nics_there():
    remote = FakeRemote([(r"route get", nic_facts(), 0)], the_node=worker(nic="eth9"))
    with pytest.raises(HostError, match="eth9.*ens14np0"):
        netenv.apply(remote, netenv.NetenvSettings(HEAD, 29500, "ethernet"))
    assert remote.written == []


def test_netenv_secrets_are_root_s_readable_by_the_ssh_user_s_group_and_never_in_the_report():
    remote = FakeRemote([(r"route get", nic_facts() + "group=gpuusers\n", 0)], the_node=worker(), user="gpu")
    out = netenv.apply(remote, netenv.NetenvSettings(HEAD, 29500, "ethernet", {"HF_TOKEN": "hf_s3cret"}))
    state = remote.files[netenv.SECRETS_FILE]
    assert (state.mode, state.owner, state.group) == (0o640, "root", "gpuusers") and "hf_s3cret" in state.content
    assert "hf_s3cret" not in " ".join(out.changes + out.notes) and "HF_TOKEN" in " ".join(out.notes)


def test_netenv_check_reads_back_the_nic_and_the_firewall():
    remote = FakeRemote([(r"iptables|nft", "-A INPUT -p tcp --dport 6379 -j DROP\n", 0)])
    remote.put(netenv.ENV_FILE, "MASTER_ADDR=10.0.0.1\nNCCL_SOCKET_IFNAME=enp27s0f0np0\n")
    found = netenv.check(remote, netenv.NetenvSettings(HEAD, 29500, "ethernet")).value
    assert found.nic == "enp27s0f0np0" and found.firewall == ("-A INPUT -p tcp --dport 6379 -j DROP",)


KERNEL_NO_NFS = "nodev\tsysfs\next4\nkernel 6.1.0-test\n"
KERNEL_NFS = "nodev\tnfs\nnodev\tnfsd\nkernel 6.1.0\n"
SHARE = nfs.NfsPlan(server=HEAD, server_name="node1", export="/mnt/shared", mount="/mnt/shared", subnet="10.0.0.0/24")


def test_nfs_server_writes_the_export_for_the_subnet_then_stops_at_a_kernel_without_nfsd():
    remote = FakeRemote([(r"dpkg-query", "nfs-kernel-server installed\n", 0), (r"/proc/filesystems", KERNEL_NO_NFS, 0),
                         (r"stat -c %U", "root\n", 0)])
    with pytest.raises(HostError, match="nfsd") as err:
        nfs.setup_server(remote, SHARE)
    assert "\n/mnt/shared 10.0.0.0/24(" in remote.files[nfs.EXPORTS_FILE].content
    assert f"created {nfs.EXPORTS_FILE}" in err.value.changes and not remote.sent("exportfs -ra")


def test_nfs_client_adds_one_fstab_block_mounts_once_and_never_twice(monkeypatch):
    monkeypatch.setattr(nfs.time, "sleep", lambda s: None)
    remote = FakeRemote([(r"dpkg-query", "nfs-common installed\n", 0), (r"/proc/filesystems", KERNEL_NFS, 0),
                         (r"stat -c %U", "root\n", 0), (r"findmnt", "", 0)],
                        files={nfs.FSTAB: "UUID=abc / ext4 defaults 0 1\n"}, the_node=worker())
    remote.after(r"^mount ", r"findmnt", f"{HEAD}:/mnt/shared nfs4\n")  # the share shows once mounted
    out = nfs.setup_client(remote, SHARE, None)
    fstab = remote.files[nfs.FSTAB].content
    assert fstab.startswith("UUID=abc / ext4") and fstab.count(nfs.FSTAB_BEGIN) == 1
    assert f"{HEAD}:/mnt/shared /mnt/shared nfs" in fstab and out.changes[-1].startswith("mounted")
    again = nfs.setup_client(remote, SHARE, None)
    assert again.changes == [] and remote.files[nfs.FSTAB].content == fstab and len(remote.sent(r"^mount ")) == 1


def test_nfs_client_refuses_a_hand_written_line_for_the_same_mount():
    remote = FakeRemote([(r"dpkg-query", "nfs-common installed\n", 0), (r"stat -c %U", "root\n", 0)],
                        files={nfs.FSTAB: "10.9.9.9:/x /mnt/shared nfs rw 0 0\n"}, the_node=worker())
    with pytest.raises(HostError, match="outside gpufab's block"):
        nfs.setup_client(remote, SHARE, None)
    assert remote.written == []


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG gpufab-sshfs@node2"


def test_sshfs_worker_makes_its_own_key_pins_the_head_key_and_writes_one_fstab_line():
    remote = FakeRemote([(r"dpkg-query", "sshfs installed\n", 0), (r"test -s", "", 1), (r"^cat .*\.pub", KEY, 0),
                         (r"stat -c %U", "", 0)], the_node=worker())
    out = sshfs.prepare_worker(remote, SHARE, "gpu", "ssh-ed25519 AAAAhostkey root@node1\n")
    assert any(c.startswith("install -d -m 0700 /etc/gpufab/sshfs") and "ssh-keygen" in c for c in remote.changes)
    # The head's key pinned for the SFTP service's port only, not for its login sshd.
    assert remote.files[sshfs.KNOWN_HOSTS].content == f"[{HEAD}]:2222 ssh-ed25519 AAAAhostkey\n"
    fstab = remote.files[nfs.FSTAB].content
    assert fstab.count("fuse.sshfs") == 1 and out.value == KEY
    assert f"gpu@{HEAD}:/share /mnt/shared fuse.sshfs " in fstab and ",Port=2222," in fstab


HEAD_FACTS = [(r"test -d /run/systemd/system", "", 0), (r"dpkg-query", "openssh-server installed\n", 0),
              (r"getent passwd", "/home/gpu\n", 0), (r"stat -c %U", "gpu\n", 0),
              (r"^ls /etc/ssh/ssh_host", "/etc/ssh/ssh_host_ed25519_key\n/etc/ssh/ssh_host_rsa_key\n", 0),
              (r"systemctl is-enabled", "", 1), (r"systemctl is-active", "", 1)]


def test_sshfs_head_serves_the_share_to_worker_keys_through_a_chrooted_sftp_only_sshd():
    remote = FakeRemote(HEAD_FACTS, user="gpu")
    remote.after("systemctl restart", r"systemctl is-active", "", 0)
    remote.after("systemctl enable", r"systemctl is-enabled", "", 0)
    remote.put("/home/gpu/.ssh/authorized_keys", f"ssh-ed25519 AAAAown me@laptop\n{sshfs.KEYS_BEGIN}\nold\n"
               f"{sshfs.KEYS_END}\n", mode=0o600, owner="gpu", group="gpu")
    line = sshfs.key_line("node2", "10.0.0.2", KEY)
    out = sshfs.serve_share(remote, {"node2": line}, SHARE)
    keys = remote.files[sshfs.SFTP_KEYS]
    assert f'restrict,from="10.0.0.2",command="internal-sftp" {KEY}' in keys.content
    assert (keys.owner, keys.mode) == ("root", 0o644)
    # The login sshd no longer takes any worker key: gpufab's old block is gone, the user's own key stays.
    assert remote.files["/home/gpu/.ssh/authorized_keys"].content == "ssh-ed25519 AAAAown me@laptop\n"
    config = remote.files[sshfs.SFTP_CONFIG].content
    for wanted in (f"ListenAddress {HEAD}:2222", "AllowUsers gpu", f"AuthorizedKeysFile {sshfs.SFTP_KEYS}",
                   "ChrootDirectory /var/lib/gpufab/sftp", "ForceCommand internal-sftp -d /share",
                   "PasswordAuthentication no", "AllowTcpForwarding no", "PermitRootLogin no",
                   "HostKey /etc/ssh/ssh_host_ed25519_key", "HostKey /etc/ssh/ssh_host_rsa_key"):
        assert wanted in config.splitlines(), wanted
    unit = remote.files[sshfs.SFTP_UNIT_FILE].content
    assert "BindPaths=/mnt/shared:/var/lib/gpufab/sftp/share" in unit
    assert "ExecStart=/usr/sbin/sshd -D -e -f /etc/gpufab/sftp/sshd_config" in unit
    assert any("install -d -m 0755 -o root -g root" in c and "/var/lib/gpufab/sftp/share" in c for c in remote.changes)
    assert "systemctl restart gpufab-sftp.service" in remote.changes
    assert out.notes == [f"1 worker keys, SFTP into /mnt/shared only (gpufab-sftp.service on {HEAD}:2222)"]
    again = sshfs.serve_share(remote, {"node2": line}, SHARE)
    assert [c for c in again.changes if c] == [], again.changes
    assert remote.changes.count("systemctl restart gpufab-sftp.service") == 1


def test_sshfs_head_without_systemd_is_named_not_half_done():
    remote = FakeRemote([(r"test -d /run/systemd/system", "", 1)], user="gpu")
    with pytest.raises(HostError, match="needs systemd on the head"):
        sshfs.serve_share(remote, {}, SHARE)
    assert remote.written == [] and remote.changes == []


def test_sshfs_port_is_checked_before_any_node_is_touched():
    assert nfs.check_sftp_port("2299") == 2299 and nfs.check_sftp_port(4022) == 4022
    for bad in ("22", 22, 0, 70000, "abc", True, "２２２２", None):
        with pytest.raises(InputError, match="sshfs_port"):
            nfs.check_sftp_port(bad)


def test_storage_choice_and_the_workers_round_trip():
    head = node()
    assert storage.choose("auto", head, {"node1": KERNEL_NO_NFS, "node2": "fusedev\n" + "nodev\tfuse\n"}).backend == "sshfs"
    dd = "67108864 bytes (67 MB, 64 MiB) copied, 0.5 s, 134 MB/s\n"
    remote = FakeRemote([(r"findmnt", f"gpu@{HEAD}:/share fuse.sshfs\n", 0), (r"^cat ", "tok", 0),
                         (r"dd if=/dev/zero", dd, 0), (r"dd if=", dd, 0)], the_node=worker())
    out = storage.verify_worker(remote, SHARE, "sshfs", "gpu", "tok")
    assert out.value == storage.Trip(128.0, 128.0)
    with pytest.raises(HostError, match="does not hold the head's token"):
        storage.verify_worker(remote, SHARE, "sshfs", "gpu", "other")
    remote.answer(r"findmnt", "")
    with pytest.raises(HostError, match="is not an sshfs mount"):
        storage.verify_worker(remote, SHARE, "sshfs", "gpu", "tok")


RAY = ray.RaySettings(version="2.60.0", venv="/opt/gpufab/venv", extra=[], port=6379, dashboard_host=None,
                      index_url=None, find_links=None, proxy=None)


def test_ray_install_creates_the_venv_and_pins_then_leaves_it():
    # No uv, and none can be installed: pip, with a note saying so.
    remote = FakeRemote([(r"command -v uv", "", 1), (r"^\[ -x /opt/gpufab/uv/bin/uv \]", "", 1),
                         (r"index - 0.13.9 /opt/gpufab/uv/bin", "", 1),
                         (r"dpkg-query", "python3-venv installed\nnftables installed\n", 0),
                         (r"importlib.metadata", "", 1)], user="gpu")
    # After the install, the venv answers with the pinned version.
    remote.after(r"pip.* install", r"importlib.metadata", json.dumps({"python": "3.11.2", "ray": "2.60.0"}))
    out = ray.install_ray(remote, RAY)
    calls = remote.sent(r"pip.* install")
    assert "created venv /opt/gpufab/venv (python3 -m venv)" in out.changes
    assert any("ray[default]==2.60.0" in c for c in calls)
    assert out.notes == ["ray 2.60.0 in /opt/gpufab/venv", "uv could not be installed (fake: failed): pip used"]
    assert ray.install_ray(remote, RAY).changes == []


def test_ray_install_with_uv_takes_exactly_the_heads_wheels_against_their_hashes():
    from fabfile.core.packages import Peer
    hashes = {"ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl": "a" * 64,
              "aiohttp-3.10.0-cp311-cp311-manylinux_2_17_x86_64.whl": "b" * 64,
              "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl": "c" * 64}
    remote = FakeRemote([(r"command -v uv", "", 1), (r"^\[ -x /opt/gpufab/uv/bin/uv \]", "", 1),
                         (r"importlib.metadata", "", 1)], user="gpu", the_node=worker())
    remote.peer = Peer(debs="http://10.0.0.1:8741/debs", wheels="http://10.0.0.1:8741/wheels/k/", hashes=hashes)
    remote.after(r"uv pip install", r"importlib.metadata", json.dumps({"python": "3.11.2", "ray": "2.60.0"}))
    out = ray.install_ray(remote, RAY)
    # uv's binary out of the head's uv wheel, checked against the hash read on the head.
    uv = next(c for c in remote.changes if "uv-0.13.9-py3" in c)
    assert (f"wheel http://10.0.0.1:8741/wheels/k/uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl {'c' * 64} "
            "/opt/gpufab/uv/bin") in uv and uv.startswith("NO_PROXY=10.0.0.1 ")
    install = next(c for c in remote.changes if "uv pip install" in c)
    assert f"'ray==2.60.0 --hash=sha256:{'a' * 64}'" in install and "aiohttp==3.10.0" in install
    assert "uv==" not in install and "--no-index" in install and "--require-hashes" in install
    assert "created venv /opt/gpufab/venv (uv)" in out.changes and "installed uv 0.13.9" in out.changes
    assert "installed ray[default]==2.60.0 (uv, from the cluster's one download)" in out.changes
    # Without the head's wheels, uv installs from the index with pip's own proxy and index settings.
    remote = FakeRemote([(r"importlib.metadata", "", 1)], user="gpu")
    remote.after(r"uv pip install", r"importlib.metadata", json.dumps({"python": "3.11.2", "ray": "2.60.0"}))
    out = ray.install_ray(remote, RAY)
    install = next(c for c in remote.changes if "uv pip install" in c)
    assert "UV_NATIVE_TLS=1" in install and "p=$(cfg proxy)" in install and "--no-index" not in install
    assert "installed ray[default]==2.60.0 (uv)" in out.changes


def test_ray_start_writes_the_unit_starts_it_once_and_restarts_only_on_change():
    from fabfile.core.inventory import Inventory
    inv = Inventory((node(), worker()))
    remote = FakeRemote([(r"importlib.metadata", json.dumps({"python": "3.11.2", "ray": "2.60.0"}), 0),
                         (r"is-enabled", "", 1), (r"is-active", "", 3)], the_node=worker())
    remote.put(netenv.ENV_FILE, "NCCL_SOCKET_IFNAME=ens14np0\n")
    out = ray.start_ray(remote, inv, RAY)
    unit = remote.files[f"{ray.UNIT_DIR}/{ray.WORKER_UNIT}"].content
    assert "EnvironmentFile=" in unit and "--address=10.0.0.1:6379" in unit
    assert f"started {ray.WORKER_UNIT}" in out.changes
    remote.answer(r"is-enabled", "", 0).answer(r"is-active", "", 0)
    remote.changes.clear()
    assert ray.start_ray(remote, inv, RAY).changes == [] and remote.changes == []
    remote.put(netenv.ENV_FILE, "NCCL_SOCKET_IFNAME=ens15np0\n")  # netenv changed: the unit's digest does too
    assert f"restarted {ray.WORKER_UNIT}" in ray.start_ray(remote, inv, RAY).changes


def test_ray_start_refuses_without_the_pinned_ray():
    from fabfile.core.inventory import Inventory
    remote = FakeRemote([(r"importlib.metadata", json.dumps({"python": "3.11.2", "ray": "2.9.0"}), 0)])
    with pytest.raises(HostError, match="ray 2.60.0 is not installed .*found 2.9.0"):
        ray.start_ray(remote, Inventory((node(),)), RAY)


def test_preflight_check_runs_the_gpu_doctor_and_reads_the_fleet_facts():
    """The chain's preflight carries the doctor and the fleet (core.checks): its verify-phase check runs both."""
    from fabfile.ops import doctor, fleet
    from fabfile.ops.chain import CHAIN
    out = ("@@lspci\n18:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 PCIe] [10de:2331] (rev a1)\n"
           "@@smi\n@@smi-missing\n@@fm\ninactive\n")
    remote = FakeRemote([(r"@@lspci", out, 0), (r"os-release", "os=Ubuntu 22.04\nkernel=5.15\n", 0)])
    settings = preflight.PreflightSettings(checks={"doctor": doctor.DoctorSettings(), "fleet": fleet.FleetSettings("10.0.0.1")})
    found = CHAIN[0].check(remote, settings).value
    assert found["doctor"].verdict() == "1 × GH100 [H100 PCIe]: 1 NVIDIA GPU on the PCI bus but no driver (nvidia-smi not found)"
    assert "os=Ubuntu 22.04" in found["fleet"].facts


def test_preflight_says_the_doctors_first_look_in_its_note_and_keeps_it(monkeypatch):
    """The doctor looks in preflight's own round (no training python yet); its verdict sits in the
    node's one-line note between the OS and the NIC, each finding a line of its own, as before."""
    import threading
    from types import SimpleNamespace
    from fabfile.core.fanout import OK, HostResult
    from fabfile.ops import doctor, fleet
    from fabfile.ops.chain import CHAIN
    from fakes import FakeRun
    out = ("@@lspci\n18:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 PCIe] [10de:2331] (rev a1)\n"
           "@@smi\n@@smi-missing\n@@fm\ninactive\n")
    head = node()
    monkeypatch.setattr(preflight, "probe", lambda session, conn, n, private: HostResult(
        n, OK, value=preflight.Preflight(auth="ok", os="Ubuntu 22.04", gpus="1", nic="ens1")))
    remote = FakeRemote([(r"@@lspci", out, 0)], the_node=head)
    session = SimpleNamespace(workers=4, connection=lambda n: None, stopping=threading.Event())
    gathered = []
    run = FakeRun(session=session, inv=SimpleNamespace(head=head), remotes={head.name: remote}, workers=None,
                  live=lambda step: None, gather=gathered.append, facts=lambda n: remote.facts)
    settings = preflight.PreflightSettings(checks={"doctor": doctor.DoctorSettings(), "fleet": fleet.FleetSettings("10.0.0.1")})
    [result] = CHAIN[0].run(run, [head], settings)
    verdict = "1 × GH100 [H100 PCIe]: 1 NVIDIA GPU on the PCI bus but no driver (nvidia-smi not found)"
    assert result.notes[0] == f"Ubuntu 22.04; GPUs {verdict}; private NIC ens1"
    assert result.notes[1:] == [f"GPU problem: {f.line()}" for f in result.value.looks["doctor"].findings] != []
    assert result.value.looks["doctor"].verdict() == verdict and gathered == [remote]
    assert not [c for c in remote.commands if "GPUFAB-PYTHON" in c]  # no training python in the first look


def test_storage_defaults_to_auto_and_verify_reads_the_backend_from_the_workers_mounts():
    from fabfile.core.inventory import Inventory
    inv = Inventory(nodes=(node(), worker()))
    assert storage.read(None, inv, {}).backend == "auto"
    sshfs_mount = ("root@10.0.0.1:/share", "fuse.sshfs")
    assert storage.mounted_backend({"node2": sshfs_mount, "node3": sshfs_mount}, "/mnt/shared").backend == "sshfs"
    mixed = storage.mounted_backend({"node2": ("10.0.0.1:/mnt/shared", "nfs4"), "node3": ("10.0.0.1:/mnt/shared", "nfs4"),
                                     "node4": None}, "/mnt/shared")
    assert mixed.backend == "nfs"  # node4 then fails verify, named
    none = storage.mounted_backend({"node3": None, "node2": None}, "/mnt/shared")
    assert none.backend is None and none.why == "nothing is mounted on /mnt/shared on node2, node3: run storage.setup"
    other = storage.mounted_backend({"node2": ("tmpfs", "tmpfs")}, "/mnt/shared")
    assert other.backend is None and "tmpfs mount, not gpufab's" in other.why


def test_a_storage_step_no_backend_can_do_is_skipped_with_its_reason_never_ok():
    from fabfile.core.fanout import SKIPPED
    from fabfile.core.inventory import Inventory
    from fabfile.core.report import summary_line
    head, w = node(), worker()
    no_fuse = KERNEL_NO_NFS  # no nfsd, no fuse, no /dev/fuse
    run = FakeRun(inv=Inventory(nodes=(head, w)), gathered=lambda name, n: no_fuse)
    results = storage.run_step_on(run, [head, w], storage.StorageSettings("auto", SHARE))
    assert {r.status for r in results} == {SKIPPED}
    assert all(r.reason.startswith("no shared storage: NFS unavailable (node1: ") and not r.failed for r in results)
    assert summary_line("storage", results, changed=True).startswith("storage: 2 hosts: 0 changed, 0 ok, 2 skipped, 0 failed")


def test_an_index_url_or_proxy_with_a_token_never_reaches_a_command_line():
    """Issue 32, item 8: `ps` and sudo's log see every command line; the inventory's URLs reach pip and uv
    through a file instead (Remote.run's secret_env)."""
    import dataclasses
    s = dataclasses.replace(RAY, index_url="https://u:T0K3N@idx/simple", proxy="http://p:S3CR3T@proxy:3128",
                            find_links="https://u:T0K3N@idx/links")
    remote = FakeRemote([(r"command -v uv", "", 1), (r"^\[ -x /opt/gpufab/uv/bin/uv \]", "", 1),
                         (r"index - 0.13.9 /opt/gpufab/uv/bin", "", 0),
                         (r"dpkg-query", "python3-venv installed\nnftables installed\n", 0),
                         (r"importlib.metadata", "", 1)], user="gpu")
    remote.after(r"pip.* install", r"importlib.metadata", json.dumps({"python": "3.11.2", "ray": "2.60.0"}))
    ray.install_ray(remote, s)
    assert not [c for c in remote.commands if "T0K3N" in c or "S3CR3T" in c]
    assert remote.secret_envs and all(e["UV_INDEX_URL"] == "https://u:T0K3N@idx/simple" for e in remote.secret_envs)
    assert any(e.get("PIP_FIND_LINKS") == "https://u:T0K3N@idx/links" for e in remote.secret_envs)
