"""One lab for the whole test session: `inv lab.up` before, `inv lab.down` after."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, cli

LAB_INVENTORY = REPO / "inventory" / "lab.yaml"
LAB_STATE = Path(os.environ.get("GPUFAB_LAB_STATE", "/var/lib/gpufab/lab"))
LAB_KEY = LAB_STATE / "id_ed25519"
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="session")
def lab():
    assert os.geteuid() == 0, "the lab tests need root (network namespaces, mounts, nspawn)"
    # A lab left by an interrupted run keeps its hosts' state (firewalls, units, mounts): the session starts clean.
    stale = cli("inv", "lab.down", timeout=300)
    assert stale.returncode == 0, stale.stdout + stale.stderr
    up = cli("inv", "lab.up", "--nodes", "3", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    assert LAB_INVENTORY.exists()
    yield {"GPUFAB_INVENTORY": str(LAB_INVENTORY)}
    down = cli("inv", "lab.down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "gpufab-node" not in netns
    assert not LAB_STATE.exists() and not LAB_INVENTORY.exists()
    again = cli("inv", "lab.down")
    assert again.returncode == 0 and "removed nothing" in again.stdout


@pytest.fixture
def home(tmp_path):
    """A HOME of its own: ~/.ssh/config and known_hosts writes stay in the test."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    return path


@pytest.fixture
def node3_off(lab):
    off = cli("inv", "lab.poweroff", "node3")
    assert off.returncode == 0, off.stderr
    yield
    on = cli("inv", "lab.poweron", "node3")
    assert on.returncode == 0, on.stderr


ADDRESSES = {"node1": "198.18.0.11", "node2": "198.18.0.12", "node3": "198.18.0.13"}


def on_host(name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command on a lab host with plain ssh, behind gpufab's back."""
    proc = subprocess.run(
        ["ssh", "-i", str(LAB_KEY), "-o", f"UserKnownHostsFile={LAB_STATE / 'known_hosts'}", "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=10", f"root@{ADDRESSES[name]}", command],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, (name, command, proc.stdout, proc.stderr)
    return proc


def snapshot(paths, nodes=NODES) -> dict:
    """sha256 of each path on each node ('missing' when absent): proof of byte-identity."""
    out = {}
    for name in nodes:
        for path in paths:
            text = on_host(name, f"sha256sum {path} 2>/dev/null || echo missing").stdout.split()
            out[(name, path)] = text[0]
    return out
