"""Pure Ray planning: pins, install commands, units, version mismatches, node lists."""

from __future__ import annotations

import json

import pytest
import yaml

from fabfile.ops import ray
from fabfile.core.errors import InputError
from fabfile.core.facts import human_bytes


def test_pins_must_be_exact():
    assert ray.check_pins("torch==2.5.1, transformers==4.46.0") == ["torch==2.5.1", "transformers==4.46.0"]
    assert ray.check_pins(["vllm==0.6.3"]) == ["vllm==0.6.3"]
    assert ray.check_pins(None) == []
    for bad in ("torch", "torch>=2", "torch==2.5;rm -rf /"):
        with pytest.raises(InputError):
            ray.check_pins(bad)
    with pytest.raises(InputError):
        ray.check_version("latest")


def test_missing_pins_compare_installed_versions():
    pins = ray.requirements("2.60.0", ["torch==2.5.1"])
    assert pins == ["ray[default]==2.60.0", "torch==2.5.1"]
    assert ray.missing_pins({"ray": "2.60.0", "torch": "2.5.1"}, pins) == []
    assert ray.missing_pins({"ray": "2.59.0", "torch": None}, pins) == pins


def test_install_commands_pip_and_uv_carry_no_index_or_proxy():
    """Issue 32, item 8: an index URL or a proxy holds a token; it reaches pip and uv in their environment."""
    pip = ray.install_command("/opt/v", ["ray[default]==2.60.0"], uv=None)
    assert pip == "/opt/v/bin/pip install -q --disable-pip-version-check 'ray[default]==2.60.0'"
    uv = ray.install_command("/opt/v", ["ray[default]==2.60.0"], uv="/opt/gpufab/uv/bin/uv")
    assert uv == "/opt/gpufab/uv/bin/uv pip install -q --python /opt/v/bin/python 'ray[default]==2.60.0'"
    from fabfile.ops.wheels import index_env
    assert index_env("https://u:T0K3N@idx/simple", "http://p:pw@proxy:3128", "/wheels") == {
        "PIP_INDEX_URL": "https://u:T0K3N@idx/simple", "UV_INDEX_URL": "https://u:T0K3N@idx/simple",
        "PIP_FIND_LINKS": "/wheels", "UV_FIND_LINKS": "/wheels",
        "PIP_PROXY": "http://p:pw@proxy:3128", "HTTPS_PROXY": "http://p:pw@proxy:3128", "HTTP_PROXY": "http://p:pw@proxy:3128"}


def test_mismatches_flag_the_odd_node_out():
    versions = {
        "node1": {"python": "3.11.2", "ray": "2.60.0", "transformers": "4.46.0", "torch": None},
        "node2": {"python": "3.11.2", "ray": "2.60.0", "transformers": "4.45.0", "torch": None},
        "node3": {"python": "3.11.2", "ray": "2.59.0", "transformers": "4.46.0", "torch": None},
    }
    assert ray.mismatches(versions) == {"ray": ["node3"], "transformers": ["node2"]}
    versions["node2"]["ray"] = None  # no ray at all is a mismatch too
    assert ray.mismatches(versions)["ray"] == ["node2", "node3"]


def test_units_bind_to_private_addresses_and_load_the_env_first():
    head = ray.unit_file(ray.UnitPlan("head", "gpu", "/opt/v", "10.0.0.1", "10.0.0.1", env_digest="abc"))
    assert head.path == "/etc/systemd/system/gpufab-ray-head.service"
    text = head.content
    assert "User=gpu" in text and "netenv: abc" in text
    assert text.index("EnvironmentFile=-/etc/gpufab/netenv.env") < text.index("ExecStart=")
    assert ("ExecStart=/opt/v/bin/ray start --head --block --node-ip-address=10.0.0.1 --port=6379"
            " --dashboard-host=10.0.0.1 --dashboard-port=8265\n") in text
    worker = ray.unit_file(ray.UnitPlan("worker", "root", "/opt/v", "10.0.0.2", "10.0.0.1", num_gpus=8)).content
    assert "/dev/tcp/10.0.0.1/6379" in worker
    assert "ExecStart=/opt/v/bin/ray start --block --address=10.0.0.1:6379 --node-ip-address=10.0.0.2 --num-gpus=8\n" in worker
    assert "Restart=always" in worker and "WantedBy=multi-user.target" in worker
    plain = ray.start_command(ray.UnitPlan("worker", "root", "/opt/v", "10.0.0.2", "10.0.0.1"))
    assert plain.index(". /etc/gpufab/netenv.env") < plain.index("ray start --address=10.0.0.1:6379")


def test_parse_nodes_keeps_alive_ones_per_ip():
    text = json.dumps([
        {"ip": "10.0.0.1", "state": "ALIVE", "head": True, "resources": {"CPU": 8.0, "GPU": 2.0, "memory": 2**34}},
        {"ip": "10.0.0.2", "state": "DEAD", "head": False, "resources": {"CPU": 8.0}},
        {"ip": "10.0.0.2", "state": "ALIVE", "head": False, "resources": {"CPU": 8.0, "GPU": 2.0}},
    ])
    nodes = ray.parse_nodes("some warning\n" + text)
    alive = ray.alive_by_ip(nodes)
    assert sorted(alive) == ["10.0.0.1", "10.0.0.2"] and alive["10.0.0.1"].head
    assert sum(n.gpus for n in alive.values()) == 4.0
    assert human_bytes(2**34) == "16.0 GiB"


def test_log_tail_is_one_clean_line():
    text = "a\n\x1b[1mbold\x1b[22m line\n" + "x" * 300 + "\n"
    tail = ray.log_tail(text, lines=2, width=20)
    assert tail == "bold line | " + "x" * 17 + "..."


def test_cluster_yaml_is_valid_for_ray_up():
    text = ray.cluster_yaml("inv.yaml", "gpufab", "203.0.113.10", "10.0.0.1",
                            [("203.0.113.11", "10.0.0.2")], "ubuntu", "~/.ssh/id", "/opt/v", 6379)
    data = yaml.safe_load(text)
    assert data["provider"] == {"type": "local", "head_ip": "203.0.113.10", "worker_ips": ["203.0.113.11"]}
    assert data["auth"] == {"ssh_user": "ubuntu", "ssh_private_key": "~/.ssh/id"}
    alone = yaml.safe_load(ray.cluster_yaml("i", "c", "1.2.3.4", "10.0.0.1", [], "root", None, "/opt/v", 6379))
    assert alone["provider"]["worker_ips"] == [] and "ssh_private_key" not in alone["auth"]


def test_the_unit_carries_no_digest_of_the_secrets_and_the_marker_is_root_only():
    """The unit is world-readable: a digest of secrets there lets anyone test guesses offline."""
    from fabfile.core.files import FileState
    from fabfile.ops.netenv import ENV_FILE, SECRETS_FILE

    def state(secret_digest):
        return {ENV_FILE: FileState(ENV_FILE, True, content="NCCL_SOCKET_IFNAME=eth1\n"),
                SECRETS_FILE: FileState(SECRETS_FILE, True, digest=secret_digest)}

    assert ray.env_digest(state("a" * 64)) == ray.env_digest(state("b" * 64))
    marker = ray.secrets_marker(state("a" * 64))
    assert (marker.path, marker.mode, marker.owner, marker.secret) == (ray.SECRETS_APPLIED, 0o600, "root", True)
    assert marker.content != ray.secrets_marker(state("b" * 64)).content  # a new secret still restarts Ray
