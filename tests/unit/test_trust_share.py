"""Issue 32, item 5: the share does not spread root from one node to the others.

A worker never acts as root in the share (NFS root_squash, or every user
squashed to gpufab's own account for a root login; sshfs logs in as the
share's owner, never root), mounts are nosuid,nodev (a setuid file planted
there runs as nobody special), and sshfs checks each local user's permissions.
"""

from __future__ import annotations

from fabfile.ops.storage import nfs, sshfs
from fabfile.ops.shared import share
from fabfile.core.files import render


def fields(line: str) -> list:
    return [x for x in line.split() if x]


def test_the_nfs_export_squashes_root_and_a_root_login_squashes_everyone_to_the_share_account():
    own = nfs.exports_file("/mnt/shared", "198.19.0.0/24", nfs.export_options("ubuntu", 1000, 1000))
    assert "(rw,sync,no_subtree_check,root_squash)" in own.content and "no_root_squash" not in own.content
    root = nfs.exports_file("/mnt/shared", "198.19.0.0/24", nfs.export_options(share.SHARE_ACCOUNT, 997, 996))
    assert "all_squash,anonuid=997,anongid=996" in root.content


def test_nfs_and_sshfs_mounts_are_nosuid_and_nodev():
    line = next(l for l in nfs.fstab_block("198.19.0.11", "/mnt/shared", "/mnt/shared").splitlines()
                if not l.startswith("#"))
    assert {"nosuid", "nodev"} <= set(fields(line)[3].split(","))
    line = next(l for l in sshfs.fstab_block("gpufab-share", "198.19.0.11", "/mnt/shared", 2222, (1000, 1001))
                .splitlines() if not l.startswith("#"))
    options = fields(line)[3].split(",")
    assert {"nosuid", "nodev", "default_permissions", "allow_other", "uid=1000", "gid=1001"} <= set(options)
    assert fields(line)[0] == "gpufab-share@198.19.0.11:/share"


def test_the_sftp_service_never_logs_a_worker_in_as_root():
    assert share.share_owner("root") == share.SHARE_ACCOUNT and share.share_owner("ubuntu") == "ubuntu"
    plan = nfs.NfsPlan("198.19.0.11", "head", "/mnt/shared", "/mnt/shared", None)
    config = sshfs.sftp_files(plan, share.share_owner("root"), ["/etc/ssh/ssh_host_ed25519_key"], "")[0].content
    assert "AllowUsers gpufab-share\n" in config and "PermitRootLogin no\n" in config


def test_the_share_account_is_made_without_a_shell_home_or_password():
    assert "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin" in share.ACCOUNT_SCRIPT
    assert render("storage/sftp-sshd_config.j2", listen="198.19.0.11:2222", host_keys=[], user="gpufab-share",
                  keys_file="/etc/gpufab/sftp/authorized_keys", chroot="/var/lib/gpufab/sftp").count("ForceCommand internal-sftp") == 1


def test_with_a_root_login_the_share_account_may_write_what_the_heads_root_makes_and_only_then():
    from fakes import FakeRemote
    node = FakeRemote()
    done = share.grant_owner(node, "/mnt/shared", share.SHARE_ACCOUNT)
    setfacl = [c for c in node.changes if c.startswith("setfacl")]
    assert setfacl == ["setfacl -m u:gpufab-share:rwx,d:u:gpufab-share:rwx,d:u::rwx,d:g::rx,d:o::rx,d:m::rwx "
                       "-- /mnt/shared"]
    assert done[-1].startswith("/mnt/shared: gpufab-share may write")
    node.answer(r"getfacl", "user:gpufab-share:rwx\ndefault:user:gpufab-share:rwx\n")
    node.changes.clear()
    assert share.grant_owner(node, "/mnt/shared", share.SHARE_ACCOUNT) == [] and node.changes == []
    other = FakeRemote(user="ubuntu")
    assert share.grant_owner(other, "/mnt/shared", "ubuntu") == [] and other.changes == []


def test_a_login_that_owns_the_share_takes_the_share_accounts_acl_off():
    """Root login first, then `ubuntu`: gpufab-share, which nothing logs in as any more, writes nothing."""
    from fakes import FakeRemote
    node = FakeRemote(user="ubuntu").answer(r"getfacl", "user:gpufab-share:rwx\ndefault:user:gpufab-share:rwx\n")
    done = share.grant_owner(node, "/mnt/shared", "ubuntu")
    assert len(node.changes) == 1 and node.changes[0].startswith(
        "setfacl -x u:gpufab-share,d:u:gpufab-share -- /mnt/shared && ")
    assert "setfacl -k -- /mnt/shared" in node.changes[0]
    assert done == ["/mnt/shared: gpufab-share no longer writes it (its ACL removed; the login owns the share)"]


def test_a_dry_run_makes_no_share_account(tmp_path):
    """The account script itself, run here with a useradd that only records: a plan never calls it."""
    import os
    import subprocess
    (tmp_path / "useradd").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/called\n")
    (tmp_path / "useradd").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = lambda mode: subprocess.run(["sh", "-c", share.ACCOUNT_SCRIPT, "sh", "gpufab-no-such-user", mode],
                                      capture_output=True, text=True, env=env)
    planned = run("plan")
    assert planned.returncode == 0 and planned.stdout == "" and not (tmp_path / "called").exists()
    made = run("make")
    assert "created" in made.stdout and (tmp_path / "called").read_text().startswith("--system")
