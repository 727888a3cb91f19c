"""Issue 32, item 9: the run's one sudo password goes to every host that asks; a node can have its own.

Node (or inventory) var `sudo_password_file` names a local file, held to what
ssh asks of a private key, read once before any host is tried.
"""

from __future__ import annotations

import os

import pytest

from fabfile.core.connection import Session, read_node_passwords
from fabfile.core.errors import InputError
from fabfile.core.inventory import parse_inventory


def inventory(tmp_path, node3_file: str) -> object:
    return parse_inventory(f"""
nodes:
  - {{name: node1, public: 198.18.0.11, private: 198.19.0.11}}
  - {{name: node2, public: 198.18.0.12, private: 198.19.0.12}}
  - name: node3
    public: 198.18.0.13
    private: 198.19.0.13
    vars: {{sudo_password_file: {node3_file}}}
""", str(tmp_path / "hosts.yaml"))


def secret(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "node3.pass"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_a_node_with_its_own_password_file_gets_that_one_and_no_other(tmp_path):
    inv = inventory(tmp_path, secret(tmp_path, "n0de3-only\nignored\n"))
    session = Session(inv, known_hosts=str(tmp_path / "kh"))
    session._sudo_password = "the-run-s-one"
    assert session.sudo_password(inv.by_name("node3")) == "n0de3-only"
    assert session.sudo_password(inv.by_name("node1")) == "the-run-s-one"
    assert session.known_password(inv.by_name("node3")) == "n0de3-only"


@pytest.mark.parametrize("mode,text,message", [
    (0o644, "pw\n", "can be read by others"),
    (0o600, "\n", "is empty"),
])
def test_a_password_file_others_can_read_or_an_empty_one_is_refused_before_any_host(tmp_path, mode, text, message):
    inv = inventory(tmp_path, secret(tmp_path, text, mode))
    with pytest.raises(InputError, match=message):
        read_node_passwords(inv)


def test_a_missing_file_or_a_link_is_named(tmp_path):
    with pytest.raises(InputError, match="node3.pass: sudo password file not found"):
        read_node_passwords(inventory(tmp_path, str(tmp_path / "node3.pass")))
    target = secret(tmp_path, "pw\n")
    os.symlink(target, tmp_path / "link.pass")
    with pytest.raises(InputError, match="link.pass: cannot read"):
        read_node_passwords(inventory(tmp_path, str(tmp_path / "link.pass")))
