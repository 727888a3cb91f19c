"""`inventory.import|show|check` from the command line, on lab hosts."""

from __future__ import annotations

import subprocess
import time

import pytest

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, LAB_KEY, LAB_STATE

MAPPING = "Public IP      Private IP\n198.18.0.11\t198.19.0.11\n\n198.18.0.12    198.19.0.12\n198.18.0.13    198.19.0.13\n"
USER_CONFIG = "Host *\n    ServerAliveInterval 30\n\nHost mybox\n    HostName 192.0.2.7\n    User me\n"


def test_import_writes_inventory_and_one_ssh_block(lab, tmp_path, home):
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(MAPPING)
    cfg = home / ".ssh" / "config"
    cfg.write_text(USER_CONFIG)
    out = tmp_path / "hosts.yaml"
    args = ("inv", "inventory.import", str(mapping), "--output", str(out), "--key", str(LAB_KEY))
    first = cli(*args, env={"HOME": str(home)})
    assert first.returncode == 0, first.stderr
    after_first = (out.read_text(), cfg.read_text())
    second = cli(*args, env={"HOME": str(home)})
    assert second.returncode == 0
    assert (out.read_text(), cfg.read_text()) == after_first  # run twice -> identical files
    assert "unchanged" in second.stdout
    text = cfg.read_text()
    assert text.startswith(USER_CONFIG)
    assert text.count("# BEGIN gpufab managed block") == 1 and text.count("Host rental0\n") == 1
    assert (home / ".ssh" / "config.gpufab.bak").read_text() == USER_CONFIG
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"

    # The entries work for plain ssh, and the inventory for gpufab.
    ssh = subprocess.run(
        ["ssh", "-F", str(cfg), "-o", f"UserKnownHostsFile={LAB_STATE / 'known_hosts'}", "-o", "BatchMode=yes",
         "rental2", "hostname"], capture_output=True, text=True, timeout=30)
    assert ssh.stdout.strip() == "node3", ssh.stderr
    show = cli("inv", "inventory.show", env={"GPUFAB_INVENTORY": str(out)})
    rows = [l.split() for l in show.stdout.splitlines()[2:]]
    assert rows == [["rental0", "198.18.0.11", "198.19.0.11", "0", "head"],
                    ["rental1", "198.18.0.12", "198.19.0.12", "1", "worker"],
                    ["rental2", "198.18.0.13", "198.19.0.13", "2", "worker"]]
    run = cli("inv", "exec", "-q", "hostname",
              env={"GPUFAB_INVENTORY": str(out), "HOME": str(home)})
    assert "rental0: node1" in run.stdout and "rental2: node3" in run.stdout, run.stdout

    # A shorter table replaces the block; nothing is duplicated.
    mapping.write_text("198.18.0.12 198.19.0.12\n")
    assert cli(*args, env={"HOME": str(home)}).returncode == 0
    text = cfg.read_text()
    assert text.startswith(USER_CONFIG) and "rental1" not in text and text.count("Host rental0\n") == 1


BAD_MAPPINGS = [
    ("1.2.3.4 10.0.0.1\n1.2.3.300 10.0.0.2\n", ":2: invalid public IP address '1.2.3.300'"),
    ("1.2.3.4 10.0.0.1\n1.2.3.5 10.0.0.1\n", ":2: duplicate address 10.0.0.1"),
    ("", ": no 'Public IP  Private IP' rows found"),
    ("1.2.3.4 10.0.0.1 ; rm -rf /\n", ":1: expected two columns"),
]


@pytest.mark.parametrize("text,message", BAD_MAPPINGS)
def test_bad_mapping_is_one_line_and_writes_nothing(tmp_path, home, text, message):
    mapping = tmp_path / "m.txt"
    mapping.write_text(text)
    cfg = home / ".ssh" / "config"
    cfg.write_text(USER_CONFIG)
    out = tmp_path / "hosts.yaml"
    proc = cli("inv", "inventory.import", str(mapping), "--output", str(out), env={"HOME": str(home)})
    line = one_error_line(proc)
    assert f"{mapping}{message}" in line
    assert not out.exists() and cfg.read_text() == USER_CONFIG
    assert sorted(p.name for p in (home / ".ssh").iterdir()) == ["config"]


GOOD = """ssh:
  user: root
nodes:
  - name: a
    public: 198.18.0.11
    private: 198.19.0.11
  - name: b
    public: 198.18.0.12
    private: 198.19.0.12
"""

BAD_INVENTORIES = [
    (GOOD.replace("198.18.0.12", "198.18.0.312"), ":8: invalid IP address '198.18.0.312'"),
    (GOOD.replace("198.19.0.12", "198.19.0.11"), ":9: duplicate address 198.19.0.11"),
    (GOOD.replace("name: b", "name: a"), ":7: duplicate node name 'a'"),
    ("", ": inventory is empty"),
    (GOOD.replace("198.19.0.11\n", "198.19.0.11\n    role: head\n").replace("198.19.0.12\n", "198.19.0.12\n    role: head\n"),
     ":11: two heads: 'a' and 'b'"),
    (GOOD.replace("198.19.0.12\n", "198.19.0.12\n    role: master\n"), ":10: unknown role 'master'"),
    (GOOD.replace("name: b", "name: b;reboot"), ":7: invalid node name 'b;reboot'"),
    (GOOD + "    vars:\n      nic: eth0`reboot`\n", ":11: variable 'nic' holds shell metacharacter(s)"),
]


@pytest.mark.parametrize("text,message", BAD_INVENTORIES)
def test_bad_inventory_is_one_line_exit_2(tmp_path, text, message):
    inv = tmp_path / "bad.yaml"
    inv.write_text(text)
    for task in ("inventory.show", "inventory.check", "exec"):
        args = ("inv", task) + (("hostname",) if task == "exec" else ())
        line = one_error_line(cli(*args, env={"GPUFAB_INVENTORY": str(inv)}))
        assert f"{inv}{message}" in line, line


def test_missing_inventory_is_one_line(tmp_path):
    line = one_error_line(cli("inv", "exec", "true", env={"GPUFAB_INVENTORY": str(tmp_path / "nope.yaml")}))
    assert "inventory file not found" in line


def test_check_table_on_the_lab(lab):
    proc = cli("inv", "inventory.check", env=lab)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {l.split()[0]: l for l in proc.stdout.splitlines()[2:5]}
    for name, nic in (("node1", "enp27s0f0np0"), ("node2", "ens14np0"), ("node3", "enp157s0f0np0")):
        row = rows[name].split()
        assert row[1:4] == ["yes", "ok", "root"]
        assert "Debian GNU/Linux 12 (bookworm)" in rows[name]
        assert row[-4:-2] == ["0", nic]  # GPUs, private NIC: routes to the head's private address
        assert row[-1] == "GiB"
    assert "inventory.check: 3 hosts: 3 ok, 0 failed, 0 unreachable" in proc.stdout


def test_check_with_dead_host_and_fab_discovery(lab, node3_off, home):
    start = time.monotonic()
    proc = cli("inv", "inventory.check", env=lab)
    assert time.monotonic() - start < 10 + 5
    assert proc.returncode == 255
    assert "node3   no: connection refused" in proc.stdout
    assert "(node3: connection refused)" in proc.stdout
    # fab -H: private addresses discovered (the shared 198.19.0.0/24), NICs found.
    proc = cli("fab", "-i", str(LAB_KEY), "-H", "198.18.0.11,198.18.0.12", "inventory.check", env={"HOME": str(home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "enp27s0f0np0" in proc.stdout and "ens14np0" in proc.stdout


def test_wrong_sudo_password_is_reported_per_host(lab, tmp_path):
    inv = tmp_path / "gpu.yaml"
    inv.write_text(LAB_INVENTORY.read_text().replace("user: root", "user: gpu"))
    proc = cli("inv", "inventory.check", env={"GPUFAB_INVENTORY": str(inv), "INVOKE_SUDO_PASSWORD": "wrong"})
    assert proc.returncode == 1
    assert proc.stdout.count("wrong password") == 3
    assert "node1: wrong sudo password" in proc.stdout
    proc = cli("inv", "inventory.check", env={"GPUFAB_INVENTORY": str(inv), "INVOKE_SUDO_PASSWORD": "gpufab-lab"})
    assert proc.returncode == 0 and proc.stdout.count("ok (password)") == 3
