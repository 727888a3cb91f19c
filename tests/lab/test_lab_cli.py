"""The lab's own guard rails, without needing it up."""

from __future__ import annotations

from helpers import BIN, cli, one_error_line


def test_lab_refuses_clearly_when_not_root():
    proc = cli("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BIN / "inv"), "lab.up",
               env={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}, bin_dir="/usr/bin")
    assert "lab: must run as root" in one_error_line(proc)


def test_lab_names_the_apt_packages_it_misses(tmp_path):
    # A PATH with Python but none of the lab's tools, and not in CI: no install attempt.
    proc = cli("inv", "lab.up", env={"PATH": str(BIN), "CI": ""})
    line = one_error_line(proc)
    assert "apt-get install -y" in line
    for pkg in ("debootstrap", "iproute2", "openssh-client", "systemd-container", "tinyproxy"):
        assert pkg in line
