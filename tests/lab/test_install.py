"""The wheel, built from the repo and installed into a fresh venv, run from an empty directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from helpers import REPO, cli

from .conftest import LAB_KEY, on_host

HOSTS = "198.18.0.11,198.18.0.12,198.18.0.13"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip wheel` of the repo, installed with pip into a new venv: the `gpufab` it gives."""
    where = tmp_path_factory.mktemp("install")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next((where / "dist").glob("gpufab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("fabfile/")]  # installed as gpufab: no top-level fabfile
    shipped = {n.split("templates/", 1)[1] for n in names if n.startswith("gpufab/templates/")}
    in_repo = {str(p.relative_to(REPO / "templates")) for p in (REPO / "templates").rglob("*") if p.is_file()}
    assert shipped == in_repo
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True,
                             text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return str(venv / "bin")


@pytest.fixture
def empty(tmp_path, home):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    return cwd


def test_the_installed_gpufab_dry_runs_bootstrap_on_the_lab_from_an_empty_directory(lab, installed, empty, home):
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    listed = cli("gpufab", "--list", bin_dir=installed, cwd=empty, env=env)
    assert listed.returncode == 0 and "bootstrap" in listed.stdout and "storage.setup" in listed.stdout, listed.stderr
    assert "reset" in listed.stdout and "node.remove" in listed.stdout
    assert "lab." not in listed.stdout  # the repo's test hosts are no task of the installed tool
    # The lab's private network is 198.19/16, outside RFC 1918: named as private at the user level.
    (home / ".gpufab.yaml").write_text("gpufab:\n  private_ranges: [198.18.0.0/15]\n")
    before = {n: on_host(n, "cat /etc/security/limits.d/90-gpufab-nofile.conf 2>&1", check=False).stdout
              for n in ("node1", "node2", "node3")}
    proc = cli("gpufab", "-H", HOSTS, "-i", str(LAB_KEY), "bootstrap", "--dry-run", "--nofile", "23456",
               bin_dir=installed, cwd=empty, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # Rendered from the templates inside the wheel, shown as diffs, per host.
    assert out.count("+++ /etc/security/limits.d/90-gpufab-nofile.conf") == 3
    assert out.count("+*       soft    nofile  23456") == 3
    assert out.count("+++ /etc/gpufab/netenv.env") == 3 and "== 198.18.0.12" in out
    assert "nothing was changed" in out
    assert {n: on_host(n, "cat /etc/security/limits.d/90-gpufab-nofile.conf 2>&1", check=False).stdout
            for n in ("node1", "node2", "node3")} == before
    assert list(empty.iterdir()) == []
    # accept-new: the hosts' keys were recorded in the user's known_hosts.
    known = (home / ".ssh" / "known_hosts").read_text()
    assert all(h in known for h in HOSTS.split(","))


def test_a_bare_remainder_is_gpufabs_exec_with_host_keys_checked(lab, installed, empty, home):
    env = {"HOME": str(home)}
    hosts = "198.18.0.12,198.18.0.13"
    proc = cli("gpufab", "-H", hosts, "-i", str(LAB_KEY), "--", "hostname", bin_dir=installed, cwd=empty, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "198.18.0.12: node2" in proc.stdout and "198.18.0.13: node3" in proc.stdout
    # Fabric's own remainder would have taken any key without recording it; gpufab's exec records it...
    known = home / ".ssh" / "known_hosts"
    lines = known.read_text().splitlines()
    assert {l.split()[0] for l in lines} == set(hosts.split(","))
    # ...and refuses a changed one.
    node3_key = next(l for l in lines if l.startswith("198.18.0.13 ")).split(maxsplit=1)[1]
    known.write_text("\n".join(l if not l.startswith("198.18.0.12 ") else f"198.18.0.12 {node3_key}"
                               for l in lines) + "\n")
    refused = cli("gpufab", "-H", hosts, "-i", str(LAB_KEY), "--", "hostname", bin_dir=installed,
                  cwd=empty, env=env)
    assert refused.returncode == 255, refused.stdout + refused.stderr
    assert "198.18.0.12 (unreachable): host key mismatch for 198.18.0.12" in refused.stdout
    assert "198.18.0.13: node3" in refused.stdout
