"""limits, docker and tools against a fake node: first run, second run, failure and rollback."""

import json

import pytest

from fabfile.core.packages import record_command
from fabfile.core.errors import HostError, InputError
from fabfile.ops import docker, limits, tools

from fakes import FakeRemote

DOCKER_INFO = json.dumps({"ServerVersion": "27.1.1", "DefaultAddressPools": [
    {"Base": "172.17.0.0/16", "Size": 24}, {"Base": "192.168.0.0/16", "Size": 24}], "Runtimes": {"runc": {}}})


def test_limits_first_run_writes_three_files_and_reexecs_then_second_run_changes_nothing():
    node = FakeRemote([(r"is-active --quiet docker", "", 3)])
    s = limits.LimitsSettings(65536)
    first = limits.apply(node, s)
    assert sorted(node.paths_written()) == sorted([limits.LIMITS_FILE, limits.SYSTEMD_FILE, limits.DOCKER_FILE])
    assert "65536" in node.files[limits.LIMITS_FILE].content
    assert node.changes == ["systemctl daemon-reexec"]  # docker is not running: not restarted
    assert first.value == limits.LoginLimits(65536, 65536)
    node.changes.clear()
    second = limits.apply(node, s)
    assert second.changes == [] and node.changes == [] and len(node.written) == 3


def test_limits_restarts_a_running_docker_when_only_its_drop_in_changed():
    node = FakeRemote(files={f.path: f.content for f in limits.limit_files(65536)[:2]})
    limits.apply(node, limits.LimitsSettings(65536))
    assert node.paths_written() == [limits.DOCKER_FILE]
    assert node.changes == ["systemctl daemon-reload", "systemctl restart docker"]


def test_limits_a_login_that_cannot_reach_the_limit_fails_with_the_reason_and_keeps_the_changes():
    node = FakeRemote(new_login="16384 20000")
    with pytest.raises(HostError) as err:
        limits.apply(node, limits.LimitsSettings(65536))
    assert "hard limit 20000" in err.value.reason and "nofile <= 20000" in err.value.reason
    assert f"created {limits.LIMITS_FILE}" in err.value.changes


def test_limits_dry_run_plans_the_files_and_runs_no_change():
    node = FakeRemote(dry_run=True)
    out = limits.apply(node, limits.LimitsSettings(4096))
    assert len(node.planned) == 3 and node.written == []
    assert "systemctl daemon-reexec" in out.changes and node.sent("new login") == []


def test_docker_install_from_the_distro_when_missing_then_left_alone():
    facts = "ID=debian\nVERSION_CODENAME=bookworm\nARCH=amd64\nDOCKERD=\nVERSION=\nGROUPS=gpu sudo\n"
    node = FakeRemote([(r"ID=\$ID", facts, 0), (r"is-active --quiet docker", "", 3), (r"Server.Version", "20.10.24", 0)],
                      user="gpu")
    out = docker.install_docker(node, "distro")
    installs = [c for c in node.changes if "apt-get" in c]
    assert len(installs) == 1 and installs[0].endswith("install --no-install-recommends docker.io")
    assert "systemctl enable --now docker" in node.changes and "usermod -aG docker gpu" in node.changes
    # What reset takes back: the user it added, recorded right after the usermod.
    assert node.changes[node.changes.index("usermod -aG docker gpu") + 1] == record_command(["gpu"], docker.GROUP_RECORD)
    assert out.notes[-1] == "docker 20.10.24"
    node.answer(r"ID=\$ID", facts.replace("DOCKERD=", "DOCKERD=/usr/bin/dockerd").replace("gpu sudo", "gpu sudo docker"))
    node.answer(r"is-active --quiet docker", "", 0)
    node.changes.clear()
    again = docker.install_docker(node, "distro")
    assert node.changes == [] and again.changes == []


def test_docker_configure_merges_keeps_other_keys_restarts_once_then_nothing():
    node = FakeRemote([(r"command -v dockerd", "docker=yes\n", 0), (r"docker info", DOCKER_INFO, 0)],
                      files={docker.DAEMON_JSON: '{"log-driver": "json-file"}\n'})
    out = docker.configure_docker(node, {"mtu": 9000}, force=False)
    merged = json.loads(node.files[docker.DAEMON_JSON].content)
    assert merged["log-driver"] == "json-file" and merged["mtu"] == 9000 and "default-address-pools" in merged
    assert "systemctl restart docker" in node.changes and out.changes[-1] == "restarted docker"
    node.changes.clear()
    assert docker.configure_docker(node, {"mtu": 9000}, force=False).changes == [] and node.changes == []


def test_docker_configure_restores_the_previous_file_when_dockerd_does_not_come_back(monkeypatch):
    monkeypatch.setattr(docker, "RESTART_WAIT", 0)
    monkeypatch.setattr(docker.time, "sleep", lambda s: None)
    broken = json.dumps({"ServerErrors": ["Cannot connect to the Docker daemon"]})
    node = FakeRemote([(r"command -v dockerd", "docker=yes\n", 0), (r"docker info", broken, 0),
                       (r"journalctl -u docker", "unable to configure the Docker daemon: invalid mtu\n", 0)],
                      files={docker.DAEMON_JSON: "{}\n"})
    with pytest.raises(HostError) as err:
        docker.configure_docker(node, {"mtu": -1}, force=False)
    assert node.restored == [docker.DAEMON_JSON]
    assert "invalid mtu" in err.value.reason and "previous file restored" in err.value.reason
    assert "restored the previous daemon.json" in err.value.changes


def test_docker_configure_leaves_invalid_json_alone_unless_forced():
    node = FakeRemote([(r"command -v dockerd", "docker=yes\n", 0), (r"docker info", DOCKER_INFO, 0)],
                      files={docker.DAEMON_JSON: "{broken"})
    with pytest.raises(HostError, match="not valid JSON"):
        docker.configure_docker(node, {}, force=False)
    assert node.written == []
    docker.configure_docker(node, {}, force=True)
    assert node.paths_written() == [docker.DAEMON_JSON]


def test_docker_check_reads_the_version_and_wants_the_configured_pools():
    node = FakeRemote([(r"docker info", DOCKER_INFO, 0)])
    assert docker.check(node, docker.DockerSettings("distro")).value == docker.DockerStatus("27.1.1")
    other = json.dumps({"ServerVersion": "27.1.1", "DefaultAddressPools": []})
    node.answer(r"docker info", other)
    with pytest.raises(HostError, match="not the configured ones"):
        docker.check(node, docker.DockerSettings("distro"))


def test_tools_installs_only_what_is_missing_then_nothing():
    node = FakeRemote([(r"dpkg-query", "htop installed\n", 0)])
    out = tools.apply(node, tools.ToolsSettings(("tmux", "htop")))
    assert out.changes == ["installed tmux"] and node.changes[-2].endswith("install --no-install-recommends tmux")
    assert node.changes[-1] == record_command(["tmux"])  # what reset --packages may purge
    node.answer(r"dpkg-query", "tmux installed\nhtop installed\n")
    node.changes.clear()
    assert tools.apply(node, tools.ToolsSettings(("tmux", "htop"))).changes == [] and node.changes == []


def test_tools_names_a_failed_install():
    node = FakeRemote([(r"dpkg-query", "", 0), (r"apt-get", "E: Unable to locate package nvtop", 100)])
    with pytest.raises(HostError, match="apt-get install nvtop failed"):
        tools.apply(node, tools.ToolsSettings(("nvtop",)))


@pytest.mark.parametrize("value", ["tmux; rm -rf /", ["Tmux"], ["-o"], {"a": 1}])
def test_tools_package_names_are_validated(value):
    with pytest.raises(InputError):
        tools.check_packages(value)
