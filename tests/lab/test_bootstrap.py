"""`bootstrap` on a fresh lab: dry run, a host dying mid-run, retry, idempotent re-run, report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from browser import marks_of, read_page, render
from helpers import BIN, REPO, cli, one_error_line

from .conftest import LAB_INVENTORY, LAB_KEY, NODES, on_host
from .test_node_setup import LAB_NICS

REPORT_JSON = REPO / "inventory" / "lab.report.json"
REPORT_MD = REPO / "inventory" / "lab.report.md"
FAILED_FILE = REPO / "inventory" / "lab.failed"
HF_HOME = "/mnt/shared/.cache/huggingface"
STEPS = ("preflight", "fetch", "wheels", "limits", "docker", "netenv", "mesh", "storage", "ray", "allreduce", "verify")

#: Everything a step could touch: config, installed software, units, backups.
TREE_DIGEST = (
    "find /etc /opt /usr/local /var/backups /var/lib/dpkg/status /var/lib/docker -xdev \\( -type f -o -type l \\)"
    " -print0 2>/dev/null | sort -z | xargs -0 sha256sum 2>/dev/null | sha256sum"
)


def reset_lab():
    for args in (("lab.down",), ("lab.up", "--nodes", "3")):
        proc = cli("inv", *args, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def fresh(lab):
    """Hosts as rented: nothing installed. Afterwards a fresh lab again for the other modules."""
    reset_lab()
    yield lab
    reset_lab()


def progress(stdout: str) -> dict:
    """(node, step) -> status from the live progress lines."""
    found = {}
    for m in re.finditer(r"^\[\s*[\d.]+s\] (node\d)\s+(\w+)\s+(ok|changed|failed|unreachable)\s", stdout, re.M):
        found[(m.group(1), m.group(2))] = m.group(3)
    return found


def ray_pids() -> dict:
    """The MainPID of each node's Ray unit: a restart would change it."""
    units = {n: "gpufab-ray-head" if n == "node1" else "gpufab-ray-worker" for n in NODES}
    pids = {n: on_host(n, f"systemctl show {u} -p MainPID --value").stdout.strip() for n, u in units.items()}
    assert "0" not in pids.values() and "" not in pids.values(), pids
    return pids


def tree_digests() -> dict:
    return {n: on_host(n, TREE_DIGEST).stdout.split()[0] for n in NODES}


#: What a read-only command must leave as it was: every file's name, mtime, size, mode and owner where
#: gpufab works (its files, the logins' homes, the share on the head). A worker's mount is left out, its
#: mount point too: what sshfs shows of the head's directory is its attribute cache, refreshed by any look.
STAT_DIGEST = (
    "find /etc /opt /usr/local /var/backups /var/lib/dpkg /root /home /mnt/shared -xdev"
    " \\( -fstype fuse.sshfs -o -fstype nfs -o -fstype nfs4 \\) -prune"
    " -o -printf '%p %T@ %s %m %u\\n' 2>/dev/null | sort | sha256sum"
)


def untouched(report) -> dict:
    """Per node, the tree digest and the stat digest; and the saved report's bytes and mtime."""
    nodes = {n: (on_host(n, TREE_DIGEST).stdout.split()[0], on_host(n, STAT_DIGEST).stdout.split()[0])
             for n in NODES}
    return {**nodes, "report": (report.read_bytes(), report.stat().st_mtime_ns)}


def timed_status(env: dict, *args: str):
    began = time.monotonic()
    proc = cli("inv", "status", *args, env=env, timeout=120)
    return proc, time.monotonic() - began


def problem_steps(found: dict) -> dict:
    """`status --json` -> {node: the steps its problems name} for the nodes with any."""
    return {n["node"]: sorted({p.split(":", 1)[0] for p in n["problems"]}) for n in found["nodes"] if n["problems"]}


def test_dry_run_on_a_fresh_lab_prints_diffs_and_changes_nothing(fresh):
    before = tree_digests()
    proc = cli("inv", "bootstrap", "--dry-run", env=fresh, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("  limits: would change:") == 3 and out.count("  ray: would change:") == 3
    assert "+++ /etc/security/limits.d/90-gpufab-nofile.conf" in out
    assert "+++ /etc/docker/daemon.json" in out and "- installed docker.io" in out
    node2 = out[out.index("== node2"):out.index("== node3")]
    assert f"+NCCL_SOCKET_IFNAME={LAB_NICS['node2']}" in node2
    # The Ray unit is planned against the netenv the same run would write (its digest in the unit).
    assert "+++ /etc/systemd/system/gpufab-ray-worker.service" in node2
    # Storage defaults to auto: this kernel has no NFS, so sshfs, planned like any step.
    assert out.count("  storage: would change:") == 3 and "+++ /etc/gpufab/sftp/sshd_config" in out
    # The mesh too: the hostfile; no private key is ever part of the plan (each node makes its own).
    assert out.count("  mesh: would change:") == 3 and "+node2 slots=1" in out and "PRIVATE KEY" not in out
    assert "nothing was changed" in out
    assert tree_digests() == before
    assert not REPORT_JSON.exists() and not FAILED_FILE.exists()
    for node in NODES:
        assert on_host(node, "command -v dockerd; ls /opt/gpufab /etc/gpufab", check=False).stdout == ""


def test_the_readme_demo_bootstraps_every_node_of_a_fresh_lab(fresh):
    env = {k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}
    proc = subprocess.run([str(REPO / "scripts" / "demo")], cwd=str(REPO), env=env, capture_output=True, text=True,
                          timeout=1800, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert set(steps) == {(n, s) for n in NODES for s in STEPS}, steps
    assert set(steps.values()) <= {"ok", "changed"}, steps
    assert "bootstrap: 3 hosts: 3 changed, 0 ok, 0 failed, 0 unreachable" in proc.stdout
    assert "Storage (sshfs): round trip 2/2 workers read the head's token (node1:/mnt/shared on /mnt/shared)" \
        in proc.stdout and "Ray: 3/3 nodes alive" in proc.stdout
    for node in ("node2", "node3"):  # a shared directory on both workers, not just a line in a report
        assert on_host(node, "findmnt -rn -o SOURCE,FSTYPE /mnt/shared").stdout.strip() == \
            "gpufab-share@198.19.0.11:/share fuse.sshfs"
    # The cluster is proven by a collective across it, on each node's own NIC.
    assert re.search(r"^  All-reduce: 3 nodes, gloo over the netenv NICs, busbw [\d.]+ GB/s at 64 MiB "
                     r"\(link [\d.]+ GB/s, slowest node\d\u2192node1\); sums right; "
                     r"no expected figure for CPU/ethernet \(Gloo\)$", proc.stdout, re.M), proc.stdout
    assert REPORT_MD.exists() and not FAILED_FILE.exists()
    # As root too: the head reaches a worker by name, with its own mesh key and a known host key.
    assert "SSH mesh: 6/6 node pairs reach each other by name" in proc.stdout
    assert on_host("node1", "ssh -o BatchMode=yes node3 hostname").stdout.strip() == "node3"
    # One Hugging Face cache for the cluster: the same HF_HOME in every login, in the share.
    assert {on_host(n, "bash -lc 'echo $HF_HOME'").stdout.strip() for n in NODES} == {HF_HOME}
    on_host("node2", "bash -lc 'echo written-on-node2 > \"$HF_HOME/gpufab-probe\"'")
    assert on_host("node3", "bash -lc 'cat \"$HF_HOME/gpufab-probe\"'").stdout == "written-on-node2\n"
    on_host("node1", f"rm -f {HF_HOME}/gpufab-probe")
    assert f"Shared cache: HF_HOME={HF_HOME}, writable by the SSH user on 3/3 nodes" in proc.stdout


def test_second_bootstrap_reports_every_step_ok_and_changes_no_file(fresh):
    units = ray_pids()
    before = tree_digests()
    proc = cli("inv", "bootstrap", env=fresh, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert steps == {(n, s): "ok" for n in NODES for s in STEPS}, steps
    assert "bootstrap: 3 hosts: 0 changed, 3 ok, 0 failed, 0 unreachable" in proc.stdout
    assert tree_digests() == before
    assert ray_pids() == units
    report = json.loads(REPORT_JSON.read_text())
    by_node = {r["node"]: r for r in report["nodes"]}
    for node in NODES:
        row = by_node[node]
        shared = "sshfs shared" if node == "node1" else "sshfs mounted"
        assert (row["nic"], row["ulimit"], row["nfs"], row["result"]) == (LAB_NICS[node], "16384",
                                                                          f"{shared}, round trip ok", "ok")
        assert row["docker"].startswith("20.10") and row["ray"].startswith("alive")
    assert by_node["node1"]["ray"] == "alive (head)" and by_node["node1"]["role"] == "head"
    checks = " | ".join(report["checks"])
    assert "Ray: 3/3 nodes alive, 6 CPUs" in checks and "Docker: 3/3 nodes active" in checks
    assert "Versions: python 3.11.2, ray 2.60.0 on 3/3 nodes" in checks
    # The GPU doctor's and the fleet's verdicts, read from the nodes in the verify phase.
    assert "GPU doctor: no GPUs on 3/3 nodes" in checks
    assert "Fleet: driver major, CUDA, NCCL, torch, ray, Python match on 3/3 nodes" in checks
    assert {row["gpus"] for row in report["nodes"]} == {"none"}
    preflight = report["results"]["preflight"]
    assert {n: (d["gpus_pci"], d["problems"]) for n, d in preflight["doctor"].items()} == {n: (0, []) for n in NODES}
    fleet = preflight["fleet"]["facts"]
    assert {n: (f["Python"], f["ray"], f["GPUs"], f["NIC"]) for n, f in fleet.items()} == \
        {n: ("3.11.2", "2.60.0", "none", LAB_NICS[n]) for n in NODES}, fleet
    assert preflight["fleet"]["mismatched"] == {}
    assert {f["torch"] for f in fleet.values()} != {"-"}
    assert any(w.startswith("auto: NFS unavailable (node1: this kernel") for w in report["warnings"])
    assert "ssh -N -L 8265:198.19.0.11:8265" in " ".join(report["access"])
    allreduce = report["results"]["allreduce"]
    assert allreduce["ok"] and allreduce["backend"] == "gloo" and allreduce["nodes"] == list(NODES)
    assert [s["bytes"] for s in allreduce["sizes"]] == [1 << 20, 16 << 20, 64 << 20]
    assert all(s["sum_right"] and s["busbw_bytes_per_s"] > 0 for s in allreduce["sizes"])
    assert {r["node"]: r["interface"] for r in allreduce["ranks"]} == LAB_NICS
    assert [(link["from"], link["to"]) for link in allreduce["links"]] == [("node2", "node1"), ("node3", "node1")]
    assert all(link["bytes_per_s"] > 0 for link in allreduce["links"])


def test_status_is_quick_read_only_and_names_exactly_what_broke_which_bootstrap_repairs(fresh, tmp_path):
    """Issue 37: status on the bootstrapped lab, 0; Ray stopped on node2, the share unmounted on node3 and
    netenv.env edited on node1: 1, naming exactly those three; nothing written; the next bootstrap repairs.

    The lab's inventory under another name, the last report beside it: the repair's report is saved
    there, and the lab's stays the second bootstrap's (every step ok) for the report tests below."""
    inventory = tmp_path / "status.yaml"
    inventory.write_text(LAB_INVENTORY.read_text())
    saved = tmp_path / "status.report.json"
    saved.write_text(REPORT_JSON.read_text())
    env = {**fresh, "GPUFAB_INVENTORY": str(inventory)}
    before = untouched(saved)
    proc, seconds = timed_status(env)
    print(f"gpufab status on 3 healthy lab hosts: {seconds:.2f}s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "status: 3 nodes: 3 well, 0 with problems" in proc.stdout and seconds < 5, (seconds, proc.stdout)
    assert re.search(r"^node2\s+yes\s+GPUs none\s+nofile 16384\s+NIC ens14np0\s+sshfs mounted\s+alive\s+none$",
                     proc.stdout, re.M), proc.stdout
    assert untouched(saved) == before
    on_host("node2", "systemctl stop gpufab-ray-worker.service")
    on_host("node3", "umount /mnt/shared")
    on_host("node1", "echo '# edited by hand' >> /etc/gpufab/netenv.env")
    broken = untouched(saved)
    proc, seconds = timed_status(env, "--json")
    print(f"gpufab status on 3 lab hosts, 3 broken: {seconds:.2f}s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    assert not found["ok"] and problem_steps(found) == {"node1": ["netenv"], "node2": ["ray"], "node3": ["storage"]}
    by_node = {n["node"]: n for n in found["nodes"]}
    assert {n: sorted(by_node[n]["drift"]) for n in NODES} == {"node1": ["netenv"], "node2": ["ray"],
                                                                "node3": ["storage"]}
    assert by_node["node1"]["drift"]["netenv"] == ["updated /etc/gpufab/netenv.env"]
    assert by_node["node2"]["seen"]["ray"] == {"shown": "not alive", "problems": ["not alive in the Ray cluster"]}
    assert by_node["node3"]["seen"]["storage"] == {"shown": "not mounted", "problems": ["/mnt/shared is not mounted"]}
    assert all(n["reachable"] for n in found["nodes"])
    assert untouched(saved) == broken
    text = cli("inv", "status", env=env, timeout=120)
    assert text.returncode == 1 and "status: 3 nodes: 0 well, 3 with problems (node1, node2, node3)" in text.stdout
    repair = cli("inv", "bootstrap", env=env, timeout=600)
    assert repair.returncode == 0, repair.stdout + repair.stderr
    steps = progress(repair.stdout)
    assert {k for k, v in steps.items() if v == "changed"} == {("node1", "netenv"), ("node2", "ray"),
                                                              ("node3", "storage")}, steps
    again, _ = timed_status(env)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_node_whose_train_python_has_no_torch_fails_alone_and_the_rest_all_reduce(fresh, tmp_path):
    inventory = tmp_path / "python.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace(
        "    private: 198.19.0.13\n", "    private: 198.19.0.13\n    vars:\n      train_python: /opt/gpufab/venv/bin/python\n"))
    proc = cli("inv", "bootstrap", env={**fresh, "GPUFAB_INVENTORY": str(inventory)}, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    why = "torch not found in /opt/gpufab/venv/bin/python (set train_python)"
    steps = progress(proc.stdout)
    assert steps[("node3", "allreduce")] == "failed" and ("node3", "verify") not in steps
    assert {steps[(n, s)] for n in ("node1", "node2") for s in ("allreduce", "verify")} == {"ok"}
    assert f"bootstrap: 3 hosts: 0 changed, 2 ok, 1 failed, 0 unreachable (node3: {why})" in proc.stdout
    report = json.loads((tmp_path / "python.report.json").read_text())
    assert report["results"]["allreduce"]["nodes"] == ["node1", "node2"] and report["results"]["allreduce"]["ok"]
    assert any(c.startswith("All-reduce: 2 nodes, gloo over the netenv NICs") for c in report["checks"])


def test_bootstrap_as_the_sudo_user_twice_with_password_then_nopasswd_sudo(fresh, tmp_path):
    """The common rented login: `gpu` with sudo. The whole chain, then re-runs that change nothing."""
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    env = {**fresh, "GPUFAB_INVENTORY": str(inventory), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    proc = cli("inv", "bootstrap", env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert set(steps) == {(n, s) for n in NODES for s in STEPS}, steps
    assert {steps[(n, "verify")] for n in NODES} == {"ok"}
    report = json.loads((tmp_path / "gpu.report.json").read_text())
    for row in report["nodes"]:
        assert (row["nic"], row["ulimit"]) == (LAB_NICS[row["node"]], "16384")
        assert row["nfs"] == ("sshfs shared" if row["node"] == "node1" else "sshfs mounted") + ", round trip ok"
        assert row["docker"].startswith("20.10"), row
        assert row["ray"] == ("alive (head)" if row["node"] == "node1" else "alive"), row
    # Ray's units run as that user, and the all-reduce ran as it too, from its own home.
    assert on_host("node2", "systemctl show -p User --value gpufab-ray-worker.service").stdout.strip() == "gpu"
    assert any(c.startswith("All-reduce: 3 nodes, gloo") for c in report["checks"]), report["checks"]
    assert "GPU doctor: no GPUs on 3/3 nodes" in report["checks"], report["checks"]
    assert "Fleet: driver major, CUDA, NCCL, torch, ray, Python match on 3/3 nodes" in report["checks"]
    assert on_host("node2", "stat -c %U /home/gpu/.cache/gpufab/allreduce-*.py").stdout.strip() == "gpu"
    # The shared cache is gpu's now (root's run made it first), written on one node and read on another.
    on_host("node2", "su - gpu -c 'echo by-gpu > \"$HF_HOME/gpufab-probe-gpu\"'")
    assert on_host("node3", "su - gpu -c 'cat \"$HF_HOME/gpufab-probe-gpu\"'").stdout == "by-gpu\n"
    on_host("node1", f"rm -f {HF_HOME}/gpufab-probe-gpu")
    again = cli("inv", "bootstrap", env=env, timeout=600)
    assert again.returncode == 0 and "bootstrap: 3 hosts: 0 changed, 3 ok, 0 failed" in again.stdout, again.stdout
    # Sudo without a password, and none given: the same cluster, nothing to change.
    for node in NODES:
        on_host(node, "echo 'gpu ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/zz-gpu && chmod 440 /etc/sudoers.d/zz-gpu")
    try:
        env.pop("INVOKE_SUDO_PASSWORD")
        third = cli("inv", "bootstrap", env=env, timeout=600)
    finally:
        for node in NODES:
            on_host(node, "rm -f /etc/sudoers.d/zz-gpu")
    assert third.returncode == 0 and "bootstrap: 3 hosts: 0 changed, 3 ok, 0 failed" in third.stdout, third.stdout
    for node in NODES:  # no managed block written twice into any file
        for path in ("/etc/fstab", "/etc/hosts", "/home/gpu/.ssh/authorized_keys", "/home/gpu/.ssh/known_hosts",
                     "/home/gpu/.ssh/config"):
            twice = on_host(node, f"grep '^# BEGIN gpufab' {path} 2>/dev/null | sort | uniq -d").stdout
            assert twice == "", (node, path, twice)


def test_status_as_the_sudo_user_is_well_and_writes_nothing(fresh, tmp_path):
    """After the sudo user's bootstrap, through sudo with a password: all well, nothing written."""
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    env = {**fresh, "GPUFAB_INVENTORY": str(inventory), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    before = {n: on_host(n, STAT_DIGEST).stdout for n in NODES}
    proc, seconds = timed_status(env)
    print(f"gpufab status as gpu on 3 lab hosts: {seconds:.2f}s")
    assert proc.returncode == 0 and "status: 3 nodes: 3 well, 0 with problems" in proc.stdout, proc.stdout + proc.stderr
    assert {n: on_host(n, STAT_DIGEST).stdout for n in NODES} == before


def test_report_shows_the_saved_report_without_the_nodes(fresh, tmp_path):
    # No inventory at all next to the copy: the command cannot reach a node.
    (tmp_path / "gone.report.json").write_text(REPORT_JSON.read_text())
    env = {"GPUFAB_INVENTORY": str(tmp_path / "gone.yaml")}
    proc = cli("inv", "report", env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^node2\s+198\.18\.0\.12\s+198\.19\.0\.12\s+1\s+worker\s+ens14np0", proc.stdout, re.M)
    md = cli("inv", "report", "--format", "markdown", env=env)
    assert md.stdout.startswith("# gpufab cluster report")
    missing = cli("inv", "report", env={"GPUFAB_INVENTORY": str(tmp_path / "none.yaml")})
    assert "none.report.json: no report yet: run bootstrap first" in one_error_line(missing)


def test_report_html_of_the_last_bootstrap_renders_its_numbers_in_chromium(fresh, tmp_path):
    """The page of the second bootstrap's report (every step ok), rendered headless with the network shut;
    its screenshot is tests/artifacts/report-html-lab.png."""
    page = tmp_path / "lab.html"
    proc = cli("inv", "report", "--html", "-o", str(page), env=fresh)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"report: wrote {page} (3 pictures: busbw, links, timeline)\n"
    report = json.loads(REPORT_JSON.read_text())
    shown = read_page(render(page, tmp_path, "report-html-lab.png").dom)
    assert shown.pictures == ["busbw", "links", "timeline"]
    sizes = report["results"]["allreduce"]["sizes"]
    assert sorted((int(m["data-bytes"]), float(m["data-busbw-bytes-per-s"])) for m in marks_of(shown, "busbw")) == \
        [(s["bytes"], s["busbw_bytes_per_s"]) for s in sizes]
    links = report["results"]["allreduce"]["links"]
    cells = {(m["data-sender"], m["data-receiver"]): m for m in marks_of(shown, "links")}
    assert {pair: float(m["data-bytes-per-s"]) for pair, m in cells.items()} == \
        {(link["from"], link["to"]): link["bytes_per_s"] for link in links}
    slowest = min(links, key=lambda link: link["bytes_per_s"])
    assert [pair for pair, m in cells.items() if m["data-slowest"] == "true"] == [(slowest["from"], slowest["to"])]
    bars = {(m["data-node"], m["data-step"]): m for m in marks_of(shown, "timeline")}
    assert set(bars) == {(n, s) for n in NODES for s in STEPS}
    assert {key: [float(m["data-start"]), float(m["data-end"])] for key, m in bars.items()} == \
        {(n, s): report["timings"][n][s] for n in NODES for s in STEPS}
    assert {m["data-status"] for m in bars.values()} == {"ok"}
    assert all(line in shown.text for line in report["checks"])


def test_inventory_can_turn_steps_off_and_fab_hosts_spelling_works(fresh, tmp_path, home):
    inventory = tmp_path / "lab.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("vars:\n", "vars:\n  bootstrap_skip: [docker, nfs, ray]\n"))
    proc = cli("inv", "bootstrap", env={**fresh, "GPUFAB_INVENTORY": str(inventory)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "steps: preflight, fetch, wheels, limits, netenv, mesh, allreduce, verify" in proc.stdout
    assert "skipped" in proc.stdout and (tmp_path / "lab.report.json").exists()

    hosts = "198.18.0.11,198.18.0.12,198.18.0.13"
    fab = cli("fab", "-i", str(LAB_KEY), "-H", hosts, "bootstrap", "--nofile", "16384", "--only", "limits,netenv",
              env={"HOME": str(home)})
    assert fab.returncode == 0, fab.stdout + fab.stderr
    # Nodes are named by address here, and netenv.env names its node: it is rewritten.
    assert "bootstrap: 3 hosts: 3 changed, 0 ok, 0 failed, 0 unreachable" in fab.stdout
    assert re.search(rf"^198\.18\.0\.12 .*{LAB_NICS['node2']}", fab.stdout, re.M), fab.stdout
    written = [REPO / "inventory" / f"fab-hosts.report.{ext}" for ext in ("json", "md")]
    assert all(p.exists() for p in written)
    for p in written:
        p.unlink()


def test_hosts_from_a_file_runs_only_those_hosts(fresh, tmp_path):
    listed = tmp_path / "hosts.txt"
    listed.write_text("# the ones to redo\n198.18.0.12   # node2, by address\n")
    proc = cli("inv", "bootstrap", "--hosts-from", str(listed), "--only", "limits", env=fresh)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("bootstrap: node2; steps: preflight, limits")
    assert {n for n, _ in progress(proc.stdout)} == {"node2"}
    listed.write_text("node9\n")
    assert "hosts.txt: not in the inventory: node9" in one_error_line(
        cli("inv", "bootstrap", "--hosts-from", str(listed), env=fresh))


def test_a_host_whose_docker_install_fails_still_gets_every_step_that_does_not_need_docker(fresh):
    reset_lab()  # hosts as rented: every step has real work on node2
    # apt cannot install docker.io on node2 (no candidate): a real failure of the Docker step there.
    on_host("node2", "printf 'Package: docker.io\\nPin: release *\\nPin-Priority: -1\\n' > /etc/apt/preferences.d/no-docker")
    try:
        proc = cli("inv", "bootstrap", env=fresh, timeout=900)
    finally:
        on_host("node2", "rm -f /etc/apt/preferences.d/no-docker")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = progress(proc.stdout)
    assert steps[("node2", "docker")] == "failed", steps
    # What does not need Docker was done on node2 too, for real, and the others finished everything.
    assert all(steps[("node2", s)] == "changed" for s in ("limits", "netenv", "mesh", "storage", "ray", "allreduce")), steps
    assert all(steps[(n, s)] in ("ok", "changed") for n in ("node1", "node3") for s in STEPS), steps
    assert on_host("node2", "systemctl is-active gpufab-ray-worker").stdout.strip() == "active"
    assert on_host("node2", "findmnt -rn -o FSTYPE /mnt/shared").stdout.strip() == "fuse.sshfs"
    assert re.search(r"^\[.*\] node2\s+verify\s+skipped\s+[\d.]+s  needs docker, which failed on this host$",
                     proc.stdout, re.M), proc.stdout
    report = json.loads(REPORT_JSON.read_text())
    row = next(r for r in report["nodes"] if r["node"] == "node2")
    assert re.fullmatch(r"failed at docker: apt-get install docker\.io failed: .*; skipped because of it: verify",
                        row["result"]), row
    assert report["step_status"]["node2"]["ray"] == "changed" and report["step_status"]["node2"]["verify"] == "skipped"
    assert "Ray: 3/3 nodes alive" in " ".join(report["checks"])
    assert FAILED_FILE.read_text().splitlines()[1].startswith("node2 198.18.0.12 docker: apt-get install docker.io")
    assert "bootstrap: 3 hosts: 2 changed, 0 ok, 1 failed" in proc.stdout


def test_a_host_powered_off_mid_run_fails_alone_and_is_named(fresh):
    reset_lab()  # hosts as rented again, so that node3 is mid-install when it dies
    env = {**{k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}, **fresh}
    proc = subprocess.Popen([str(BIN / "inv"), "bootstrap"], cwd=str(REPO), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    powered_off = False
    for line in proc.stdout:
        out.append(line)
        if not powered_off and re.match(r"^\[.*\] node3\s+fetch\s+ok", line):
            time.sleep(2)  # node3 is now installing Docker
            off = cli("inv", "lab.poweroff", "node3")
            assert off.returncode == 0, off.stderr
            powered_off = True
    code = proc.wait(timeout=1200)
    stdout = "".join(out)
    assert powered_off, stdout
    assert code == 255, stdout
    steps = progress(stdout)
    assert steps[("node3", "docker")] == "unreachable"
    assert all(steps[(n, s)] in ("ok", "changed") for n in ("node1", "node2") for s in STEPS), steps
    # Steps that ran beside Docker lost node3 too; none started there after it was found gone.
    gone = [s for (n, s), status in steps.items() if n == "node3" and status == "unreachable"]
    assert ("node3", "verify") not in steps and steps.get(("node3", "ray"), "unreachable") == "unreachable", steps
    report = json.loads(REPORT_JSON.read_text())
    row = next(r for r in report["nodes"] if r["node"] == "node3")
    # Lost mid-command, or found gone by the next command or connection: each an unreachable host's reason.
    first = re.match(r"failed at (\w+): connection (lost|refused|timed out)", row["result"])
    assert first and first.group(1) in gone, (row["result"], gone)
    assert row["result"].endswith("verify"), row  # named among the steps skipped because of it
    assert "Ray: 2/3 nodes alive" in " ".join(report["checks"])
    assert report["exit_code"] == 255
    assert FAILED_FILE.read_text().splitlines()[1].startswith(f"node3 198.18.0.13 {first.group(1)}: connection ")
    assert f"node3 failed at {first.group(1)}" in REPORT_MD.read_text()


def test_retry_failed_completes_the_dead_host_once_it_is_back(fresh):
    on = cli("inv", "lab.poweron", "node3")
    assert on.returncode == 0, on.stderr
    proc = cli("inv", "bootstrap", "--retry-failed", env=fresh, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("bootstrap: node3; steps:")
    steps = progress(proc.stdout)
    # Only node3 is set up again; on the head, only the sshfs share lets node3's key in.
    assert {n for n, s in steps if s != "verify"} <= {"node1", "node3"}, steps
    assert {(n, s) for n, s in steps if n != "node3" and s != "verify"} <= {("node1", "storage")}, steps
    assert all(steps[("node3", s)] in ("ok", "changed") for s in STEPS), steps
    assert all(steps[(n, "verify")] == "ok" for n in NODES)  # the report covers the whole cluster
    assert "Ray: 3/3 nodes alive" in proc.stdout
    assert not FAILED_FILE.exists()
    status = cli("inv", "ray.status", env=fresh)
    assert status.returncode == 0 and "ray: 3/3 inventory nodes alive" in status.stdout, status.stdout
    again = cli("inv", "bootstrap", "--retry-failed", env=fresh)
    assert again.returncode == 0 and "nothing to retry" in again.stdout


@pytest.mark.parametrize("args,message", [
    (("--skip", "dokcer"), "--skip: unknown step 'dokcer'"),
    (("--skip", "nfs", "--only", "ray"), "give --skip or --only, not both"),
    (("--hosts-from", "/nonexistent/hosts"), "/nonexistent/hosts: no such hosts file"),
])
def test_bad_bootstrap_options_are_one_error_line(fresh, args, message):
    assert message in one_error_line(cli("inv", "bootstrap", *args, env=fresh))


#: Every file a bootstrap writes or edits: none may hold a line twice (no `tee -a` on re-runs).
MANAGED = ("/etc/security/limits.d/90-gpufab-nofile.conf /etc/systemd/system.conf.d/90-gpufab-limits.conf "
           "/etc/systemd/system/docker.service.d/90-gpufab-limits.conf "
           "/etc/gpufab/netenv.env /etc/profile.d/gpufab-netenv.sh /etc/nccl.conf /etc/fstab /etc/systemd/system/gpufab-ray-*.service")


def test_ctrl_c_during_the_docker_step_ends_apt_on_every_node_and_the_next_bootstrap_completes(fresh):
    for node in NODES:  # Docker's install is what runs when the user presses Ctrl-C
        on_host(node, "systemctl stop docker.socket docker; apt-get purge -q -y docker.io >/dev/null 2>&1")
    env = {**{k: v for k, v in os.environ.items() if k != "GPUFAB_INVENTORY"}, **fresh}
    proc = subprocess.Popen([str(BIN / "inv"), "bootstrap"], cwd=str(REPO), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen = ""
    while len(re.findall(r"^\[.*\] node\d\s+limits\s+(ok|changed)", seen, re.M)) < 3:
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    deadline = time.monotonic() + 30
    while not all(on_host(n, "pgrep -x 'apt-get|dpkg'", check=False).returncode == 0 for n in NODES):
        assert time.monotonic() < deadline, "apt never ran on every node"
    pressed = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - pressed
    out = seen + out
    assert proc.returncode == 130 and took < 10, (took, out, err)
    assert "Traceback" not in out + err and err.startswith("gpufab: interrupted (Ctrl-C)"), err
    assert all(progress(out)[(n, "docker")] == "failed" for n in NODES), out
    # The steps running beside Docker (the head's wheel download, storage's apt) stop there too.
    assert re.search(r"failed at \w+: interrupted \(Ctrl-C\)", out), out
    # gpufab ended its commands on the nodes: closing the connections alone would not have.
    for node in NODES:
        assert on_host(node, "pgrep -a 'apt|dpkg'", check=False).stdout == "", node
    assert all(f"{n} " in FAILED_FILE.read_text() for n in NODES)

    again = cli("inv", "bootstrap", env=fresh, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "bootstrap: 3 hosts: 3 changed, 0 ok, 0 failed, 0 unreachable" in again.stdout
    assert "Docker: 3/3 nodes active" in again.stdout and "Ray: 3/3 nodes alive" in again.stdout
    assert not FAILED_FILE.exists()
    for node in NODES:
        assert on_host(node, "dpkg --audit").stdout == "", node
        assert on_host(node, "python3 -m json.tool /etc/docker/daemon.json >/dev/null").returncode == 0
        twice = on_host(node, f"for f in {MANAGED}; do grep -v '^[[:space:]]*#' $f | grep -v '^[[:space:]]*$' "
                              "| sort | uniq -d | sed \"s|^|$f: |\"; done").stdout
        assert twice == "", (node, twice)
        blocks = on_host(node, f"cat {MANAGED} | grep -c '^# BEGIN gpufab' || true").stdout.strip()
        assert blocks == on_host(node, f"cat {MANAGED} | grep '^# BEGIN gpufab' | sort -u | wc -l").stdout.strip()
