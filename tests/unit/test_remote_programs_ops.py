"""The steps' remote programs (templates/remote/), run here against fixture inputs: stub commands on
PATH (docker, ssh, nft, nvidia-smi, dpkg-query...), a fake `ray` module, temporary paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict

from fabfile.core.files import ABSENT_SUFFIX
from fabfile.ops import allreduce, docker, images, mesh, netenv, ray, reset, storage
from fabfile.ops.docker import nvidia_toolkit
from fabfile.ops.storage import nfs, sshfs
from fabfile.ops.shared import share
from fabfile.ops.shared import python
from fabfile.ops.shared import versions
from helpers import stubs


def sh(text: str, *args: str, env=None, shell: str = "sh") -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-c", text, "gpufab", *args], capture_output=True, text=True, timeout=60, env=env)


def py(text: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", text, *args], capture_output=True, text=True, timeout=60, env=env)


def test_kernel_and_fuse_facts_list_filesystems_modules_and_the_device():
    out = sh(storage.FACTS_SCRIPT).stdout.splitlines()
    assert storage.FACTS_SCRIPT == storage.FUSE_SCRIPT + nfs.KERNEL_SCRIPT
    assert out[-1] == f"kernel {os.uname().release}"
    assert any(line.split()[-1] == "proc" for line in out)  # /proc/filesystems, twice (each script reads it)
    assert ("fusedev" in out) == Path("/dev/fuse").is_char_device()


def test_docker_install_facts_find_dockerd_outside_a_login_path(tmp_path):
    env = stubs(tmp_path, dpkg="echo amd64", **{"dpkg-query": r"printf 'installed docker.io 20.10.24\n'"})
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    text = docker.INSTALL_FACTS.replace("/usr/local/sbin:", f"{sbin}:")  # dockerd where only root's PATH looks
    (sbin / "dockerd").write_text("#!/bin/sh\n")
    (sbin / "dockerd").chmod(0o755)
    lines = sh(text, env=env).stdout.splitlines()
    assert f"DOCKERD={sbin}/dockerd" in lines and "ARCH=amd64" in lines and "VERSION=docker.io 20.10.24" in lines
    assert lines[0].startswith("ID=") and any(line.startswith("GROUPS=") for line in lines)


def test_docker_runtime_facts_find_dockerd_outside_a_login_path_and_nvidias_runtime(tmp_path):
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    text = docker.RUNTIME_FACTS.replace("/usr/local/sbin:", f"{sbin}:")  # dockerd where only root's PATH looks
    login = dict(os.environ, PATH="/usr/bin:/bin")  # no sbin, as Debian gives a regular user
    assert sh(text, env=login).stdout == ""  # neither here
    (sbin / "dockerd").write_text("#!/bin/sh\n")
    (sbin / "dockerd").chmod(0o755)
    assert sh(text, env=login).stdout == "docker=yes\n"
    env = stubs(tmp_path, **{"nvidia-container-runtime": "true"})
    assert sh(text, env=dict(env, PATH=env["PATH"].split(":")[0] + ":/usr/bin:/bin")).stdout == "docker=yes\nnvidia=yes\n"


def test_nvidia_toolkit_facts_count_gpus_and_nvidia_pci_functions(tmp_path):
    env = stubs(tmp_path, **{"nvidia-smi": 'echo "GPU 0: x"; echo "GPU 1: y"',
                             "lspci": 'echo "01:00.0 3D controller [0302]: NVIDIA [10de:2330]"',
                             "dpkg-query": "printf 'installed 1.14.6-1'", "nvidia-ctk": "true"})
    lines = sh(nvidia_toolkit.FACTS, env=env).stdout.splitlines()
    assert lines[:3] == ["GPUS=2", "PCI=1", "TOOLKIT=installed 1.14.6-1"]
    assert lines[3] == f"CTK={tmp_path}/bin/nvidia-ctk" and lines[4].startswith("RUNTIME=")


def test_reset_facts_name_its_files_and_what_was_there_before(tmp_path):
    assert "gpufab" not in str(tmp_path)  # only the marker or a name of its own make a file gpufab's
    before, backup = tmp_path / "before", tmp_path / "backup"
    mine = tmp_path / "etc" / "gpufab-x.conf"
    shared = tmp_path / "etc" / "nccl.conf"
    other = tmp_path / "etc" / "other.conf"
    mine.parent.mkdir()
    mine.write_text("x\n")
    shared.write_text("# gpufab-managed\nNCCL_DEBUG=INFO\n")
    other.write_text("not ours\n")
    Path(f"{before}{mine}").parent.mkdir(parents=True)
    Path(f"{before}{mine}{ABSENT_SUFFIX}").write_text("")
    Path(f"{before}{shared}").write_text("node's own\n")
    out = sh(reset.FACTS_SCRIPT, str(before), str(backup), "gpufab-managed", str(mine), str(shared), str(other),
             f"own:{mine}", f"parent:{mine.parent}", "unit:gpufab-none.service").stdout.splitlines()
    assert f"file {mine}" in out and f"absent {mine}" in out and f"file {shared}" in out and f"before {shared}" in out
    assert f"file {other}" not in out and f"own {mine}" in out
    assert f"parent {mine.parent} gpufab-x.conf nccl.conf other.conf " in out
    assert not [line for line in out if line.startswith("active")]


def test_share_account_plans_nothing_and_reads_ids_of_an_account(tmp_path):
    assert sh(share.ACCOUNT_SCRIPT, "gpufab-no-such-account", "plan").stdout == ""
    me = sh(share.ACCOUNT_SCRIPT, "root", "apply").stdout
    assert me == "ids 0 0\n"
    env = stubs(tmp_path, useradd="exit 9")
    assert sh(share.ACCOUNT_SCRIPT, "gpufab-no-such-account", "apply", env=env).returncode == 1


def test_find_python_runs_the_torch_probe_and_names_absent_pythons():
    out = sh(allreduce.FIND_PYTHON_SCRIPT, allreduce.PROBE, "/nonexistent/python3", sys.executable).stdout.splitlines()
    assert out[0] == "absent=/nonexistent/python3" and out[1] == f"python={sys.executable}"
    probe = json.loads(out[2].split(" ", 1)[1])
    assert out[2].startswith(python.PYTHON_MARK) and python.PYTHON_MARK == "GPUFAB-PYTHON "  # the parser's mark
    assert probe["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert ("torch" in probe) != ("error" in probe)


def test_image_ids_and_registry_login_go_through_docker(tmp_path):
    env = stubs(tmp_path, docker='case "$1 $2" in\n'
                '  "image inspect") [ "$5" = have:1 ] && echo sha256:abc || exit 1 ;;\n'
                '  "login --username") read -r pw; [ "$pw" = s3cret ] && echo "Login Succeeded" || { echo "denied" >&2; exit 1; } ;;\n'
                'esac')
    assert sh(images.IDS_SCRIPT, "have:1", "lack:2", env=env).stdout == "have:1 sha256:abc\nlack:2 none\n"
    creds = tmp_path / "login"
    creds.write_text("registry.example:5000\nbot\ns3cret\n")
    ok = sh(images.LOGIN_SCRIPT, str(creds), env=env)
    assert ok.returncode == 0 and ok.stdout == ""  # its chatter goes away
    creds.write_text("registry.example:5000\nbot\nwrong\n")
    bad = sh(images.LOGIN_SCRIPT, str(creds), env=env)
    assert bad.returncode == 1 and bad.stdout == "denied\n"


def test_mesh_key_is_made_once_and_only_its_public_half_printed(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    first = sh(mesh.KEY_SCRIPT, "gpufab_mesh", "gpufab-mesh node1", env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == "==gpufab-generated" and lines[1].startswith("==gpufab-public ssh-ed25519 ")
    assert oct((tmp_path / ".ssh" / "gpufab_mesh").stat().st_mode & 0o777) == "0o600"
    again = sh(mesh.KEY_SCRIPT, "gpufab_mesh", "gpufab-mesh node1", env=env).stdout.splitlines()
    assert again == lines[1:]
    assert "PRIVATE" not in first.stdout


def test_mesh_pairs_try_every_peer_and_report_each(tmp_path):
    env = stubs(tmp_path, ssh='for a; do h=$a; done; [ "$h" = true ] && shift $(($# - 2))\n'
                'case "$*" in *node2*) exit 0 ;; *) echo "ssh: connect to host node3 port 22: No route to host" >&2; exit 255 ;; esac')
    out = sorted(sh(mesh.PAIRS_SCRIPT, "5", "node2", "node3", env=env).stdout.splitlines())
    assert out == ["node2 0 ", "node3 255 ssh: connect to host node3 port 22: No route to host"]


def test_netenv_firewall_lists_dropping_input_rules_but_gpufabs_own(tmp_path):
    ruleset = ("table inet filter {\n  chain input {\n    type filter hook input priority 0; policy accept;\n"
               "    tcp dport 6379 drop\n  }\n}\ntable inet gpufab_ray {\n  chain input {\n"
               "    type filter hook input priority 0;\n    tcp dport 8265 drop\n  }\n}\n")
    (tmp_path / "ruleset").write_text(ruleset)
    env = stubs(tmp_path, nft=f"cat {tmp_path}/ruleset")
    assert sh(netenv.FIREWALL_SCRIPT, env=env).stdout == "nft input: tcp dport 6379 drop\n"


def test_netenv_probe_tells_open_from_refused():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            shut = closed.getsockname()[1]
        out = sh(netenv.PROBE_SCRIPT, f"{port} {shut}", "127.0.0.1", shell="bash").stdout
    assert out == f"127.0.0.1 {port} open\n127.0.0.1 {shut} refused\n"


def test_ray_versions_read_installed_distributions():
    out = json.loads(py(versions.VERSIONS_CODE, "pytest", "gpufab-no-such-package").stdout)
    assert out["python"] == "%d.%d.%d" % sys.version_info[:3] and out["gpufab-no-such-package"] is None
    assert out["pytest"] and out["pytest"][0].isdigit()


def fake_ray(tmp_path: Path) -> Dict[str, str]:
    """A `ray` package with just what the programs call: two nodes, tasks run in place."""
    pkg = tmp_path / "ray"
    (pkg / "util").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import types\nfrom . import util\n"
        "def init(**kw): pass\n"
        "def nodes(): return [{'Alive': True}, {'Alive': True}, {'Alive': False}]\n"
        "class _Ref:\n    def __init__(self, v): self.v = v\n"
        # Tasks run in place, so the sleep that holds a real node's CPU would only hold the test.
        "def remote(**kw):\n"
        "    def wrap(f):\n        f.__globals__['time'] = types.SimpleNamespace(sleep=lambda s: None)\n"
        "        return types.SimpleNamespace(remote=lambda *a: _Ref(f(*a)))\n    return wrap\n"
        "def get(refs, timeout=None): return [r.v for r in refs]\n")
    (pkg / "util" / "__init__.py").write_text("def get_node_ip_address(): return '10.0.0.1'\n")
    (pkg / "util" / "state.py").write_text(
        "import types\n"
        "def list_nodes(address, limit, raise_on_missing_output):\n"
        "    assert address == 'ray://h:10001'\n"
        "    return [types.SimpleNamespace(node_ip='10.0.0.1', state='ALIVE', is_head_node=True,"
        " resources_total={'CPU': 8.0})]\n")
    (tmp_path / "time.py").write_text("")  # never shadows: the real time module is a builtin
    return dict(os.environ, PYTHONPATH=str(tmp_path))


def test_ray_nodes_and_smoke_print_json_from_ray(tmp_path):
    env = fake_ray(tmp_path)
    nodes = py(ray.NODES_CODE, "ray://h:10001", env=env)
    assert json.loads(nodes.stdout) == [{"ip": "10.0.0.1", "state": "ALIVE", "head": True, "resources": {"CPU": 8.0}}], nodes.stderr
    smoke = py(ray.SMOKE_CODE, env=env)
    tasks = json.loads(smoke.stdout)
    assert [t["task"] for t in tasks] == [0, 1] and {t["ip"] for t in tasks} == {"10.0.0.1"}, smoke.stderr


def test_ssh_ready_waits_for_an_ssh_banner():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            conn.sendall(b"SSH-2.0-test\r\n")
            conn.close()

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        assert py(sshfs.SSH_READY, "127.0.0.1", str(port)).returncode == 0
        server.join(timeout=5)
