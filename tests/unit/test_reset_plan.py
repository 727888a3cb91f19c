"""reset as data: what the node has in, the commands that take gpufab's part away out."""

from __future__ import annotations

from fabfile.core.files import BACKUP_DIR, BEFORE_DIR
from fabfile.ops import docker, limits, netenv, ray
from fabfile.ops.storage import nfs
from fabfile.ops.docker import unmerge_daemon_json
from fabfile.ops.reset import ResetFacts, parse_facts, plan

HEAD_UNIT_FILE = f"{ray.UNIT_DIR}/{ray.HEAD_UNIT}"


def commands(facts: ResetFacts) -> list:
    return [c for _, c in plan(facts)]


def test_a_node_without_gpufab_gets_no_command():
    assert plan(parse_facts("systemd\nexportfs\n")) == []


def test_a_bootstrapped_head_loses_its_unit_files_and_dirs_units_first_reload_last():
    facts = parse_facts("\n".join([
        f"active {ray.HEAD_UNIT}", f"file {HEAD_UNIT_FILE}", f"file {netenv.ENV_FILE}", f"file {nfs.EXPORTS_FILE}",
        f"file {limits.DOCKER_FILE}", f"absent {limits.DOCKER_FILE}", "own /opt/gpufab", f"own {BACKUP_DIR}",
        "parent /etc/gpufab netenv.env", "parent /etc/exports.d gpufab.exports other.exports",
        "parent /etc/systemd/system/docker.service.d 90-gpufab-limits.conf", "systemd", "exportfs",
    ]))
    out = commands(facts)
    assert out[0] == f"systemctl disable --now {ray.HEAD_UNIT} 2>/dev/null; true"
    assert f"rm -f -- {HEAD_UNIT_FILE}" in out and f"rm -f -- {netenv.ENV_FILE}" in out
    assert out.index("exportfs -ra") > out.index(f"rm -f -- {nfs.EXPORTS_FILE}")
    assert "rm -rf -- /opt/gpufab" in out and f"rm -rf -- {BACKUP_DIR}" in out
    assert "rmdir -- /etc/gpufab" in out and "rmdir -- /etc/systemd/system/docker.service.d" in out
    assert "rmdir -- /etc/exports.d" not in out  # another exports file is in it
    assert out[-1] == "systemctl daemon-reload"


def test_the_nodes_own_file_from_before_gpufab_is_put_back_not_removed():
    facts = parse_facts(f"file {netenv.NCCL_CONF}\nbefore {netenv.NCCL_CONF}\nsystemd\n")
    assert commands(facts) == [f"cp -p --remove-destination -- {BEFORE_DIR}{netenv.NCCL_CONF} {netenv.NCCL_CONF}"]


def test_an_older_gpufabs_backup_without_the_marker_is_the_nodes_own():
    facts = parse_facts(f"file {netenv.NCCL_CONF}\nbefore-backup {netenv.NCCL_CONF}\n")
    assert commands(facts) == [f"cp -p --remove-destination -- {BACKUP_DIR}{netenv.NCCL_CONF} {netenv.NCCL_CONF}"]


def test_a_second_reset_finds_nothing_and_plans_nothing():
    assert commands(parse_facts("parent /etc/exports.d other.exports\nsystemd\nexportfs\n")) == []


def test_without_systemd_no_systemctl_runs():
    facts = parse_facts(f"file {HEAD_UNIT_FILE}\nfile {limits.SYSTEMD_FILE}\n")
    out = commands(facts)
    assert out == [f"rm -f -- {limits.SYSTEMD_FILE}", f"rm -f -- {HEAD_UNIT_FILE}"]


def test_paths_with_odd_characters_are_quoted():
    facts = ResetFacts(files=frozenset({netenv.ENV_FILE}), parents={"/etc/gpu fab": ()})
    assert "rmdir -- '/etc/gpu fab'" in commands(facts)


MANAGED = docker.managed_settings({})


def test_daemon_json_keeps_the_operators_keys_and_drops_gpufabs():
    current = {"log-driver": "journald", **MANAGED}
    assert unmerge_daemon_json(current, MANAGED, {"log-driver": "journald"}, docker.nvidia_runtime()) == {
        "log-driver": "journald"}


def test_daemon_json_key_the_node_had_before_gets_its_old_value_back():
    before = {"max-concurrent-downloads": 3}
    current = {**MANAGED}
    out = unmerge_daemon_json(current, MANAGED, before, docker.nvidia_runtime())
    assert out == {"max-concurrent-downloads": 3}


def test_daemon_json_nvidia_runtime_goes_only_where_gpufab_added_it():
    nvidia = docker.nvidia_runtime()
    added = docker.merge_daemon_json({}, MANAGED, docker.nvidia_runtime())
    assert unmerge_daemon_json(added, MANAGED, {}, nvidia) == {}
    own = {"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}}
    merged = docker.merge_daemon_json(own, MANAGED, docker.nvidia_runtime())
    assert unmerge_daemon_json(merged, MANAGED, own, nvidia) == own
    both = {"runtimes": {"crun": {"path": "crun"}}}
    merged = docker.merge_daemon_json(both, MANAGED, docker.nvidia_runtime())
    assert unmerge_daemon_json(merged, MANAGED, both, nvidia) == both


def test_daemon_json_unmerge_of_unmerged_is_unchanged():
    once = unmerge_daemon_json({"a": 1, **MANAGED}, MANAGED, {"a": 1}, docker.nvidia_runtime())
    assert unmerge_daemon_json(once, MANAGED, {"a": 1}, docker.nvidia_runtime()) == once


# --------------------------------------------------------------------------- node.remove

import pytest  # noqa: E402

from fabfile.core.errors import InputError  # noqa: E402
from fabfile.core.inventory import parse_inventory, without_node  # noqa: E402
from fabfile.ops.storage import sshfs  # noqa: E402
from tests.fakes import FakeRemote  # noqa: E402

INVENTORY = """\
# rented on Monday
ssh:
  user: ubuntu
vars:
  nofile: 65536
nodes:
  # the head first
  - name: rental0
    public: 203.0.113.10
    private: 10.0.0.10
  - name: rental1
    public: 203.0.113.11
    private: 10.0.0.11
    vars: {gpus: 8}
  - name: rental2
    public: 203.0.113.12
    private: 10.0.0.12
steps:
  - name: hello
    command: echo hi
"""


@pytest.mark.parametrize("gone", ["rental1", "rental2"])
def test_without_node_cuts_one_entry_and_keeps_every_other_line(gone):
    out = without_node(INVENTORY, gone)
    left = [n.name for n in parse_inventory(out).nodes]
    assert left == [n for n in ("rental0", "rental1", "rental2") if n != gone]
    assert "# rented on Monday" in out and "# the head first" in out and "command: echo hi" in out
    assert len(out.splitlines()) == len(INVENTORY.splitlines()) - (4 if gone == "rental1" else 3)
    assert out == INVENTORY.replace(INVENTORY[INVENTORY.index(f"  - name: {gone}"):].split("\n  - name", 1)[0]
                                    .split("\nsteps:", 1)[0] + "\n", "")


def test_without_node_of_an_unknown_name_or_a_flow_list_is_an_input_error():
    with pytest.raises(InputError, match="no node named 'rental9'"):
        without_node(INVENTORY, "rental9")
    with pytest.raises(InputError, match="by hand"):
        without_node("nodes: [{name: a, public: 1.2.3.4}, {name: b, public: 1.2.3.5}]\n", "b")


def test_forget_worker_drops_only_that_workers_key_and_a_second_time_nothing():
    keys = {n: f'restrict,from="10.0.0.{i}",command="internal-sftp" ssh-ed25519 AAAA{i} {sshfs.KEY_COMMENT}{n}'
            for i, n in enumerate(("rental1", "rental2"), 11)}
    remote = FakeRemote(files={sshfs.SFTP_KEYS: sshfs.keys_block(keys)})
    assert sshfs.forget_worker(remote, "rental2").changes == [f"removed rental2's sshfs key from {sshfs.SFTP_KEYS}"]
    assert sshfs.keys_in_block(remote.files[sshfs.SFTP_KEYS].content) == {"rental1": keys["rental1"]}
    assert sshfs.forget_worker(remote, "rental2").changes == []


# --------------------------------------------------------------------------- reset --packages

from fabfile.core import packages as apt  # noqa: E402
from fabfile.ops.reset import purge_packages, recorded_packages  # noqa: E402


def test_only_recorded_and_installed_packages_are_purged_never_sshd():
    record = "docker.io\nsshfs\nopenssh-server\ncurl\nnfs-common\n"
    assert recorded_packages(record, frozenset({"docker.io", "sshfs", "openssh-server", "curl"})) == ["docker.io", "sshfs"]


def test_purge_packages_purges_once_and_drops_dockers_apt_source_with_docker_ce():
    remote = FakeRemote([(r"dpkg-query", "docker-ce installed\ncontainerd.io installed\n", 0)],
                        files={apt.INSTALLED_RECORD: "containerd.io\ndocker-ce\n"})
    out = purge_packages(remote)
    assert out.changes[0] == "purged containerd.io docker-ce"
    assert remote.changes[0] == apt.purge_command(["containerd.io", "docker-ce"])
    assert remote.changes[1] == f"rm -f -- {docker.SOURCE_LIST} {docker.KEYRING}"


def test_purge_packages_without_a_record_says_so_and_changes_nothing():
    remote = FakeRemote()
    out = purge_packages(remote)
    assert out.changes == [] and remote.changes == [] and "installed no package" in out.notes[0]


# --------------------------------------------------------------------------- group docker

from fabfile.ops.docker import group_leavers, leave_docker_group  # noqa: E402


@pytest.mark.parametrize("record,group,out", [
    ("gpu\n", "docker:x:999:gpu,ubuntu\n", ["gpu"]),
    ("gpu\n", "docker:x:999:ubuntu\n", []),          # already out (or never in): nothing to do
    ("gpu\ngpu\nubuntu\n", "docker:x:999:ubuntu,gpu", ["gpu", "ubuntu"]),
    ("gpu\n", "", []),                                # no group docker any more (purged)
    ("-r\n$(id)\n", "docker:x:999:-r,$(id)", []),  # never what the inventory would not take as a user
])
def test_group_leavers_are_recorded_users_still_in_the_group(record, group, out):
    assert group_leavers(record, group) == out


def test_leave_docker_group_takes_out_only_whom_gpufab_added():
    remote = FakeRemote([(r"getent group docker", "docker:x:999:ubuntu,gpu\n", 0)],
                        files={docker.GROUP_RECORD: "gpu\n"})
    assert leave_docker_group(remote).changes == ["took gpu out of group docker"]
    assert remote.changes == ["gpasswd -d gpu docker >/dev/null"]  # ubuntu was the operator's


def test_leave_docker_group_without_a_record_changes_nothing():
    remote = FakeRemote([(r"getent group docker", "docker:x:999:ubuntu,gpu\n", 0)])
    assert leave_docker_group(remote).changes == [] and remote.changes == []


def test_the_heads_download_server_is_stopped_and_the_download_removed():
    facts = parse_facts("systemd\nactive gpufab-fetch.service\nown /var/cache/gpufab\nown /opt/gpufab\n")
    cmds = [c for _, c in plan(facts)]
    assert "systemctl stop gpufab-fetch.service 2>/dev/null; true" in cmds
    assert "rm -rf -- /var/cache/gpufab" in cmds and "rm -rf -- /opt/gpufab" in cmds
    assert cmds.index("systemctl stop gpufab-fetch.service 2>/dev/null; true") < cmds.index("rm -rf -- /var/cache/gpufab")
