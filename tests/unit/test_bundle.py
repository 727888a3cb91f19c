"""`gpufab bundle`: the node's program run here on stub commands, its MANIFEST, the secrets blanked, -o refused."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Dict

import pytest
from invoke.runners import Result

from fabfile.core import programs
from fabfile.core.fanout import OK, UNREACHABLE, HostResult
from fabfile.ops import bundle, ray
from fakes import node
from helpers import one_error_line, stubs
from inprocess import run_cli

SECRET = "hf_s3cr3t-value-1234"
TOKEN = "ray-token-0123456789abcdef0123456789abcdef"
SUDO = "sudo-pass-word-9"

#: Stand-ins for the node's tools: nvidia-smi, ibstat, dmesg and journalctl print what a broken node prints,
#: journalctl and systemctl with the secrets in them (a unit that logged its environment).
STUBS = {
    "nvidia-smi": 'case "$1" in -q) echo "GPU 00000000:5D:00.0"; echo "    Product Name : NVIDIA H100";; '
                  'topo) echo "GPU0 X NV18";; nvlink) echo "Link 0: 26.562 GB/s";; *) echo "550.54.15, H100";; esac',
    "lspci": 'echo "5d:00.0 3D controller [0302]: NVIDIA Corporation GH100 [10de:2330]"',
    "ibstat": 'echo "CA \'mlx5_0\'"; echo "    Port 1: State: Active"',
    "ibv_devinfo": "sleep 30",  # hung: cut at the collector's bound
    "dmesg": 'echo "[1] boot"; i=0; while [ $i -lt 20 ]; do echo "[2] noise $i"; i=$((i+1)); done; '
             'echo "[3] NVRM: Xid (PCI:0000:5d:00): 79, GPU has fallen off the bus."; echo "[4] after"',
    "journalctl": f'echo "gpufab-ray-head[1]: started with RAY_AUTH_TOKEN={TOKEN}"; '
                  f'echo "gpufab-ray-head[1]: env HF_TOKEN={SECRET} and {SECRET} again"; echo "args: $*"',
    "systemctl": 'echo "gpufab-ray-head.service loaded active running"; echo "$*" > /dev/null',
    "docker": 'echo "Client: 24.0.7"; echo "HF_TOKEN=abc-leaked-by-docker"',
    "uname": 'echo "Linux node1 6.1.0-18-amd64"',
}


@pytest.fixture(scope="module")
def node_files(tmp_path_factory):
    """A node's secrets file, its Ray token, netenv and a venv whose ray prints its version."""
    tmp_path = tmp_path_factory.mktemp("node")
    (tmp_path / "secrets.env").write_text(f"# managed\nHF_TOKEN='{SECRET}'\nWANDB_API_KEY='wandb-key-5678'\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "netenv.env").write_text("NCCL_SOCKET_IFNAME=eth1\nMASTER_ADDR=10.0.0.1\n")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "ray").write_text("#!/bin/sh\necho 'ray, version 2.60.0'\n")
    (tmp_path / "venv" / "bin" / "ray").chmod(0o755)
    return tmp_path


def program(tmp: Path, **changes: object) -> str:
    values = dict(bundle.VALUES, secrets_file=tmp / "secrets.env", netenv_file=tmp / "netenv.env", venv=tmp / "venv",
                  token_path=os.path.relpath(tmp / "token", "/root"), ib_sysfs=tmp / "ib", per=1, **changes)
    return programs.text("bundle-collect.sh", **values)


class LocalRemote:
    """Runs the program here, as `Remote.script` runs it on a node (`sh -c BODY gpufab ARGS`)."""

    def __init__(self, env: Dict[str, str], body: str):
        self.env, self.body, self.user = env, body, "nobody-here"

    def script(self, body: str, *args: str, sudo: bool = False, warn: bool = False, timeout=None) -> Result:
        assert body == bundle.PROGRAM and sudo  # the program as sent, as root
        proc = subprocess.run(["sh", "-c", self.body, "gpufab", *args], capture_output=True, text=True, timeout=60,
                              env=self.env, cwd="/")
        return Result(stdout=proc.stdout, stderr=proc.stderr, exited=proc.returncode)


def collected(tmp: Path, **changes: object) -> bundle.NodeBundle:
    return bundle.collect(LocalRemote(stubs(tmp, **STUBS), program(tmp, **changes)))


@pytest.fixture(scope="module")
def node_bundle(node_files) -> bundle.NodeBundle:
    """What the node sends (the hung ibv_devinfo costs its second once for all the tests)."""
    return collected(node_files)


def test_the_program_as_sent_is_the_file_with_its_bounds():
    assert programs.source("bundle-collect.sh") in bundle.PROGRAM
    assert f"per={bundle.COLLECT_TIMEOUT}\n" in bundle.PROGRAM and f"cap={bundle.FILE_CAP}\n" in bundle.PROGRAM
    assert "gpufab-ray-head.service" in bundle.journal_units() and "gpufab-*" in bundle.journal_units()
    assert bundle.RAY_TOKEN == f"{ray.TOKEN_DIR}/{ray.TOKEN_NAME}"  # the token ray.setup writes is the one blanked


def test_every_file_is_collected_with_its_command_and_exit_status(node_bundle):
    got = node_bundle
    names = [c.name for c in got.collected]
    assert names == list(bundle.FILES) and set(got.files) == set(bundle.FILES)
    by_name = {c.name: c for c in got.collected}
    assert by_name["nvidia-smi-q.txt"].command == "nvidia-smi -q" and by_name["nvidia-smi-q.txt"].ending() == "exit 0"
    assert b"Product Name : NVIDIA H100" in got.files["nvidia-smi-q.txt"]
    assert got.files["nvidia-smi-topo.txt"] == b"GPU0 X NV18\n"
    assert got.files["ibstat.txt"].startswith(b"CA 'mlx5_0'")
    assert by_name["ibv_devinfo.txt"].ending() == f"timed out after {bundle.COLLECT_TIMEOUT}s"
    assert got.files["version-ray.txt"] == b"ray, version 2.60.0\n"
    assert got.files["netenv.env"].startswith(b"NCCL_SOCKET_IFNAME=eth1\n")
    # The kernel log: the Xid with its context, not the whole log.
    kernel = got.files["kernel-errors.txt"].decode()
    assert "NVRM: Xid (PCI:0000:5d:00): 79" in kernel and "[4] after" in kernel and "noise 15" in kernel
    assert "noise 14" not in kernel and "boot" not in kernel
    journal = by_name["journal-units.txt"].command
    assert "--since '1 hour ago'" in journal and "-u 'gpufab-ray-head.service'" in journal and "-u 'gpufab-*'" in journal


def test_no_secret_value_leaves_the_node(node_bundle):
    got = node_bundle
    everything = b"".join(got.files.values())
    assert SECRET.encode() not in everything and TOKEN.encode() not in everything and b"wandb-key" not in everything
    assert b"abc-leaked-by-docker" not in everything  # a secret-looking assignment the node has no value for
    journal = got.files["journal-units.txt"].decode()
    assert "RAY_AUTH_TOKEN=***" in journal and "env HF_TOKEN=*** and *** again" in journal
    assert not list(Path("/tmp").glob(".gpufab-bundle-*"))  # its work directory (the values' list) is gone


def test_a_file_is_cut_at_its_cap(node_files):
    got = collected(node_files, cap=10)
    assert got.files["nvidia-smi-q.txt"] == b"GPU 000000\n"  # the redaction ends the last line
    assert {c.name: c.size for c in got.collected}["nvidia-smi-q.txt"] == 10
    assert max(len(data) for data in got.files.values()) == 11


def test_a_spent_budget_names_each_collector_it_skipped_and_runs_none(node_files):
    got = collected(node_files, budget=0)
    assert [(c.name, c.ending()) for c in got.collected] == [
        (name, "skipped: the node's time budget was spent") for name in bundle.FILES]
    assert got.files == {}


def test_a_failed_program_is_that_nodes_failure():
    class Broken(LocalRemote):
        def script(self, body, *args, **kw):
            return Result(stdout="", stderr="sudo: a password is required\n", exited=1)

    with pytest.raises(Exception, match="the collection failed: sudo: a password is required"):
        bundle.collect(Broken({}, ""))


def test_the_node_names_no_path_outside_its_own_folder():
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name in ("./ok.txt", "../evil.txt", "/etc/passwd", "sub/dir.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    assert set(bundle.unpack(data.getvalue()).files) == {"ok.txt"}


def test_the_manifest_names_each_file_its_command_and_the_dead_node(node_bundle):
    alive = HostResult(node("node1"), OK, value=node_bundle, seconds=2.5)
    dead = HostResult(node("node3"), UNREACHABLE, 255, reason="connection timed out after 10s")
    extra = [("report/lab.report.json", b"{}", "the last bootstrap's report (JSON), from inventory/lab.report.json")]
    text = bundle.manifest([alive, dead], extra, "inventory/lab.yaml", 0.0, "")
    assert text.startswith("gpufab bundle, 1970-01-01 00:00:00 UTC, inventory inventory/lab.yaml: 1 of 2 nodes collected\n")
    assert "report/lab.report.json: the last bootstrap's report (JSON)" in text
    assert f"node1 (203.0.113.1): {len(bundle.FILES)} files in 2.5s" in text
    assert ("  node1/nvidia-smi-q.txt: every GPU's full state: ECC, row remaps, fabric state, clocks, persistence; "
            "`nvidia-smi -q`: exit 0\n") in text
    assert "  node1/ibv_devinfo.txt: InfiniBand devices as libibverbs sees them; `ibv_devinfo -v`: timed out after" in text
    assert "node3 (203.0.113.1): NOT COLLECTED: connection timed out after 10s" in text


def test_the_archive_holds_the_manifest_the_report_and_each_nodes_files_the_sudo_password_blanked(node_bundle, tmp_path):
    got = bundle.NodeBundle(dict(node_bundle.files), node_bundle.collected)
    got.files["version-kernel.txt"] += f"typed {SUDO}\n".encode()
    alive = HostResult(node("node1"), OK, value=got)
    extra = [("report/allreduce.json", b'{"busbw": 1}\n', "figures")]
    members = bundle.archive_members([alive], extra, "MANIFEST TEXT\n", [SUDO])
    path = tmp_path / "out" / "b.tar.gz"
    path.parent.mkdir()
    size = bundle.write_archive(str(path), bundle.top_name(str(path)), members, time.time())
    assert size == path.stat().st_size and oct(path.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(path) as tar:
        names = tar.getnames()
        kernel = tar.extractfile("b/node1/version-kernel.txt").read()
    assert names[:2] == ["b/MANIFEST", "b/report/allreduce.json"]
    assert {f"b/node1/{n}" for n in bundle.FILES} <= set(names)
    assert SUDO.encode() not in kernel and b"typed ***" in kernel
    assert [p.name for p in path.parent.iterdir()] == ["b.tar.gz"]  # no temporary file left


# --------------------------------------------------------------------------- the command


@pytest.fixture
def cluster(tmp_path):
    """A one-node inventory whose node refuses connections (nothing listens on port 1), and its last report."""
    (tmp_path / "hosts.yaml").write_text("nodes:\n  - {name: node1, public: 127.0.0.1, port: 1}\n")
    (tmp_path / "hosts.report.json").write_text('{"results": {"allreduce": {"busbw_gbps": 12.5}}}\n')
    return tmp_path


def contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dead_node_is_named_in_the_manifest_and_the_exit_status_the_archive_still_written(cluster):
    out = cluster / "b.tar.gz"
    done = run_cli("gpufab", "bundle", "-o", str(out), env={"GPUFAB_INVENTORY": str(cluster / "hosts.yaml")},
                   cwd=str(cluster))
    assert done.returncode == 255, done.stdout + done.stderr
    assert done.stdout == (f"bundle: wrote {out} ({out.stat().st_size} bytes): 0 of 1 nodes; "
                           "not collected: node1 (connection refused)\n")
    with tarfile.open(out) as tar:
        manifest = tar.extractfile("b/MANIFEST").read().decode()
        figures = tar.extractfile("b/report/allreduce.json").read()
    assert "node1 (127.0.0.1): NOT COLLECTED: connection refused" in manifest
    assert "report/allreduce.json: the all-reduce figures of the last bootstrap" in manifest
    assert b'"busbw_gbps": 12.5' in figures


@pytest.mark.parametrize("target,message", [
    ("{d}/hosts.yaml", "{d}/hosts.yaml: is the inventory: give the bundle a file of its own"),
    ("{d}/hosts.report.json", "{d}/hosts.report.json: is the JSON report: give the bundle a file of its own"),
    ("{d}/hosts.report.md", "{d}/hosts.report.md: is the Markdown report"),
    ("{d}/hosts.failed", "{d}/hosts.failed: is the failed-hosts file"),
    ("{d}/other.yml", "{d}/other.yml: is an inventory or report file of gpufab, by its name"),
    ("{d}", "{d}: is a directory, not a file"),
    ("{d}/hosts.report.json/b.tar.gz", "{d}/hosts.report.json/b.tar.gz: cannot write here: {d}/hosts.report.json"
                                       " is not a writable directory"),
])
def test_a_bad_output_is_one_line_and_nothing_is_written_nor_asked(cluster, target, message):
    before = contents(cluster)
    done = run_cli("gpufab", "bundle", "-o", target.format(d=cluster), env={"GPUFAB_INVENTORY": str(cluster / "hosts.yaml")})
    line = one_error_line(done)
    assert line.startswith("gpufab: error: " + message.format(d=cluster)), line
    assert contents(cluster) == before and "node1" not in done.stdout


def test_an_unwritable_output_is_named_for_a_user_and_nothing_is_written(cluster):
    from inprocess import Unprivileged

    locked = cluster / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    user = Unprivileged()
    try:
        line = one_error_line(user.cli("inv", "bundle", "-o", str(locked / "b.tar.gz"),
                                       env={"GPUFAB_INVENTORY": str(cluster / "hosts.yaml")}))
    finally:
        user.close()
    assert line == f"gpufab: error: {locked}/b.tar.gz: cannot write here: {locked} is not a writable directory"
    assert list(locked.iterdir()) == []


def test_an_archive_cut_off_half_way_leaves_nothing_behind_and_a_whole_one_is_0600(tmp_path):
    class Unreadable(bytes):
        def __len__(self):
            raise RuntimeError("the member went away")

    path = tmp_path / "b.tar.gz"
    with pytest.raises(RuntimeError, match="went away"):
        bundle.write_archive(str(path), "top", [("a.txt", b"a"), ("b.txt", Unreadable(b"b"))], 0)
    assert list(tmp_path.iterdir()) == []
    size = bundle.write_archive(str(path), "top", [("a.txt", b"whole")], 0)
    assert size == path.stat().st_size and stat.S_IMODE(path.stat().st_mode) == 0o600
    with tarfile.open(path) as tar:
        assert tar.extractfile("top/a.txt").read() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar.gz"]
