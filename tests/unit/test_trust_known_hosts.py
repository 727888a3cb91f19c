"""Issue 32, item 2: known_hosts is read whole or not at all, and pins every host listed in it.

Paramiko's `HostKeys.load` raises on the first `@cert-authority` / `@revoked`
line or bad base64, after taking the keys above it; gpufab cached that
half-filled object, so the hosts listed below the line were accepted with
whatever key they showed. These tests use real keys and paramiko's own
client-side check (`lookup` + the missing-key policy), as a connection does.
"""

from __future__ import annotations

import pytest
from paramiko import Ed25519Key, SSHException

from fabfile.core.connection import AcceptNewPolicy, KnownHosts, Session
from fabfile.core.errors import InputError
from fabfile.core.inventory import parse_inventory

# Three distinct ed25519 public keys (type and base64 only; no private half is needed to pin).
KEY_A = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
KEY_B = "AAAAC3NzaC1lZDI1NTE5AAAAIB4ZTqaUgHVLNcQmPYMhSe0ebbUt3y/K8vyI4PP1Ptwq"
KEY_C = "AAAAC3NzaC1lZDI1NTE5AAAAILsQ5uQ1mMlIZYgzWDH4Gpl5zRSX0pHAEJKnL3SrtwJg"


def key(blob: str) -> Ed25519Key:
    import base64

    return Ed25519Key(data=base64.b64decode(blob))


class Client:
    """What paramiko's SSHClient gives the policy: its host keys."""

    def __init__(self, keys):
        self.keys = keys

    def get_host_keys(self):
        return self.keys


def connect(known: KnownHosts, path: str, host: str, shown: Ed25519Key) -> str:
    """What SSHClient.connect decides for `host` showing `shown`: accept, mismatch, or ask the policy."""
    found = known.lookup(host)
    if found is not None and shown.get_name() in found:
        return "accepted" if found[shown.get_name()] == shown else "mismatch"
    AcceptNewPolicy(path).missing_host_key(Client(known), host, shown)
    return "recorded"


def write(tmp_path, text: str) -> str:
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return str(path)


def test_hosts_listed_after_a_cert_authority_line_stay_pinned(tmp_path):
    path = write(tmp_path, f"@cert-authority *.corp.example ssh-ed25519 {KEY_C}\n"
                           f"198.18.0.11 ssh-ed25519 {KEY_A}\n[198.18.0.12]:2222 ssh-ed25519 {KEY_B}\n")
    known = KnownHosts.read(path)
    assert connect(known, path, "198.18.0.11", key(KEY_A)) == "accepted"
    assert connect(known, path, "198.18.0.11", key(KEY_B)) == "mismatch"
    assert connect(known, path, "[198.18.0.12]:2222", key(KEY_C)) == "mismatch"


def test_a_host_only_a_ca_vouches_for_is_refused_not_trusted_on_first_use(tmp_path):
    path = write(tmp_path, f"@cert-authority *.corp.example,!bastion.corp.example ssh-ed25519 {KEY_C}\n")
    known = KnownHosts.read(path)
    with pytest.raises(SSHException, match=r"known_hosts:1 trusts n1.corp.example through a @cert-authority"):
        connect(known, path, "n1.corp.example", key(KEY_A))
    assert "n1.corp.example" not in open(path).read()
    assert connect(known, path, "bastion.corp.example", key(KEY_A)) == "recorded"  # excluded by its `!` pattern


def test_a_revoked_key_is_refused_even_where_it_is_also_listed(tmp_path):
    path = write(tmp_path, f"198.18.0.11 ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n")
    known = KnownHosts.read(path)
    with pytest.raises(SSHException, match="@revoked"):
        connect(known, path, "198.18.0.11", key(KEY_A))
    with pytest.raises(SSHException, match="@revoked"):
        connect(known, path, "198.18.0.99", key(KEY_A))
    assert open(path).read().count(KEY_A) == 2  # nothing recorded


@pytest.mark.parametrize("text,line", [
    (f"198.18.0.11 ssh-ed25519 {KEY_A}\n198.18.0.12 ssh-ed25519 @@notbase64@@\n", 2),
    (f"# a comment\n@trusted * ssh-ed25519 {KEY_A}\n", 2),
])
def test_a_line_that_cannot_be_read_stops_the_run_naming_it(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=rf"known_hosts:{line}: "):
        KnownHosts.read(path)


def test_a_binary_known_hosts_is_named(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match="known_hosts: known_hosts is not text"):
        KnownHosts.read(str(path))


def test_a_session_refuses_the_file_before_any_host_is_tried(tmp_path):
    path = write(tmp_path, f"198.18.0.11 ssh-ed25519 {KEY_A}\n198.18.0.12 ssh-ed25519 !!\n")
    inv = parse_inventory("nodes:\n  - name: a\n    public: 198.18.0.11\n", "h")
    with pytest.raises(InputError, match=r"known_hosts:2: "):
        Session(inv, known_hosts=path)


def test_unknown_key_types_and_short_lines_are_skipped_as_openssh_does(tmp_path):
    path = write(tmp_path, f"198.18.0.10 ssh-unknown-type {KEY_A}\nshort line\n198.18.0.11 ssh-ed25519 {KEY_A}\n")
    known = KnownHosts.read(path)
    assert connect(known, path, "198.18.0.11", key(KEY_A)) == "accepted"
