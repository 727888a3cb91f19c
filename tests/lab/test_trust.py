"""Issue 13 on real hosts: no node or user able to steer root, nothing opened to public ranges.

Files are planted the way another user of the node (or a worker writing the share) would,
then gpufab runs as the lab's `gpu` user with password sudo, and as root.
"""

from __future__ import annotations

import pytest

from fabfile.core.connection import Session
from fabfile.core.files import ManagedFile, plan_files, sha256
from fabfile.core.inventory import load_inventory
from fabfile.core.remote import INSTALL_SCRIPT
from fabfile.core.steps import remote_for

from helpers import cli, one_error_line

from .conftest import LAB_INVENTORY, LAB_KEY, on_host

PASSWORD = "gpufab-lab"


@pytest.fixture
def as_gpu(lab, tmp_path):
    inventory = tmp_path / "gpu.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n"))
    return inventory


def gpu_remote(inventory):
    inv = load_inventory(str(inventory))
    session = Session(inv)
    session._sudo_password = PASSWORD
    return session, remote_for(session, inv.by_name("node2"))


def test_planted_links_in_a_user_directory_are_not_followed_by_root(as_gpu):
    """The old install used `$dir/.gpufab-new.<name>` as root: a link planted there got the content and owner."""
    on_host("node2", "echo victim > /etc/gpufab-victim && chmod 600 /etc/gpufab-victim && "
                     "echo shadow-like > /etc/gpufab-secret && chmod 600 /etc/gpufab-secret && "
                     "runuser -u gpu -- sh -c 'mkdir -p -m 700 ~/.ssh/t && "
                     "ln -sfn /etc/gpufab-victim ~/.ssh/t/.gpufab-new.managed && "
                     "ln -sfn /etc/gpufab-secret ~/.ssh/t/managed'")
    session, remote = gpu_remote(as_gpu)
    with session:
        wanted = ManagedFile("/home/gpu/.ssh/t/managed", "from gpufab\n", mode=0o600, owner="gpu", group="gpu")
        state = remote.read_state([wanted])
        assert state[wanted.path].exists and state[wanted.path].content is None  # the link was not read through
        remote.write_files(plan_files([wanted], state))
    assert on_host("node2", "cat /etc/gpufab-victim; stat -c '%U %a' /etc/gpufab-victim").stdout == "victim\nroot 600\n"
    assert on_host("node2", "cat /etc/gpufab-secret").stdout == "shadow-like\n"
    assert on_host("node2", "stat -c '%F %U %a' /home/gpu/.ssh/t/managed; cat /home/gpu/.ssh/t/managed").stdout == \
        "regular file gpu 600\nfrom gpufab\n"
    assert on_host("node2", "ls /var/backups/gpufab/home/gpu/.ssh/t 2>&1 || true").stdout.count("managed") == 0
    on_host("node2", "rm -rf /home/gpu/.ssh/t /etc/gpufab-victim /etc/gpufab-secret")


def test_an_upload_changed_before_root_installs_it_is_refused(lab):
    """The digest gpufab sent is checked on the copy root made: a rewritten upload is not installed."""
    on_host("node2", "printf forged > /tmp/gpufab-forged")
    session, remote = gpu_remote(LAB_INVENTORY)
    with session:
        result = remote.script(INSTALL_SCRIPT, "/tmp/gpufab-forged", "/etc/gpufab-forged.conf", "644", "root", "root",
                               sha256("what gpufab sent\n"), "1", sudo=True, warn=True)
    assert result.exited == 3 and "the uploaded copy changed before it was installed" in result.stderr
    assert on_host("node2", "ls -a /etc | grep -c gpufab-forged || true").stdout.strip() == "0"


def test_secrets_leave_no_backup_and_no_digest_readable_by_others(lab, tmp_path):
    env_file = tmp_path / ".env"
    env = {**lab, "GPUFAB_INVENTORY": str(LAB_INVENTORY)}
    for token in ("first-token-value", "second-token-value"):
        env_file.write_text(f"HF_TOKEN={token}\n")
        proc = cli("inv", "netenv.setup", "--secrets", "--env-file", str(env_file), "--nodes", "node2", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_host("node2", "cat /etc/gpufab/secrets.env").stdout.count("HF_TOKEN='second-token-value'") == 1
    assert on_host("node2", "find /var/backups/gpufab -name 'secrets.env*' | wc -l").stdout.strip() == "0"


def test_run_kill_names_a_pattern_pgrep_rejects(lab):
    proc = cli("inv", "run.kill", "(?i)sleep", "--yes", env=lab)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nothing matches" not in proc.stdout
    assert proc.stdout.count("pgrep rejected the pattern '(?i)sleep' (a POSIX extended regex)") == 3, proc.stdout


@pytest.mark.parametrize("args,extra_vars,message", [
    (("nfs.server",), "  private_subnet: 0.0.0.0/1\n", "private_subnet: refusing to open the NFS export"),
    (("storage.setup",), "  private_subnet: 203.0.113.0/24\n", "private_subnet: refusing to open the NFS export"),
    (("ray.start", "--head", "--dashboard-host", "0.0.0.0"), "", "ray_dashboard_host: refusing to bind Ray's dashboard"),
    (("ray.start", "--head", "--dashboard-host", "10.0.0.1\nExecStartPre=/bin/id"), "", "invalid address"),
    (("ray.start", "--head", "--no-systemd", "--dashboard-host", "10.0.0.1; id"), "", "invalid address"),
])
def test_public_exports_and_dashboards_are_refused_before_any_change(lab, tmp_path, args, extra_vars, message):
    inventory = tmp_path / "public.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("vars:\n", "vars:\n" + extra_vars))
    before = on_host("node1", "ls /etc/exports.d /etc/systemd/system | sort").stdout
    line = one_error_line(cli("inv", *args, env={"GPUFAB_INVENTORY": str(inventory)}, timeout=120))
    assert message in line
    assert on_host("node1", "ls /etc/exports.d /etc/systemd/system | sort").stdout == before


def test_a_head_whose_private_address_is_not_private_gets_no_dashboard(lab, tmp_path):
    """Without the lab's `private_ranges`, 198.19.0.11 is a public address: the head refuses, named."""
    inventory = tmp_path / "public.yaml"
    inventory.write_text(LAB_INVENTORY.read_text().replace("  private_ranges: [198.18.0.0/15]\n", ""))
    unit = "sha256sum /etc/systemd/system/gpufab-ray-head.service 2>&1; true"
    before = on_host("node1", unit).stdout
    proc = cli("inv", "ray.start", "--head", env={"GPUFAB_INVENTORY": str(inventory)}, timeout=300)
    assert proc.returncode == 1
    assert "node1: refusing to open Ray's dashboard to 198.19.0.11: not a private range" in proc.stdout + proc.stderr
    assert on_host("node1", unit).stdout == before


@pytest.fixture
def chatty_rc(lab):
    """A login rc that prints, as conda init and banners do: it breaks SFTP and pollutes every output."""
    for node in ("node1", "node2", "node3"):
        on_host(node, "cp -p /home/gpu/.bashrc /home/gpu/.bashrc.before && "
                      "sed -i '1i echo \"conda: (base) activated\"' /home/gpu/.bashrc")
    yield
    for node in ("node1", "node2", "node3"):
        on_host(node, "mv /home/gpu/.bashrc.before /home/gpu/.bashrc")


def test_a_chatty_login_rc_breaks_neither_parsing_nor_uploads(as_gpu, chatty_rc, tmp_path, home):
    env = {"GPUFAB_INVENTORY": str(as_gpu), "INVOKE_SUDO_PASSWORD": PASSWORD}
    shell = cli("inv", "exec", "true", env=env, timeout=60)  # what a user's command sees: the banner
    assert "node[1-3]: conda: (base) activated" in shell.stdout, shell.stdout
    check = cli("inv", "inventory.check", env=env, timeout=120)
    assert check.returncode == 0 and "inventory.check: 3 hosts: 3 ok" in check.stdout, check.stdout + check.stderr
    (tmp_path / ".env").write_text("HF_TOKEN=chatty-rc-token\n")
    secrets = cli("inv", "netenv.setup", "--secrets", "--env-file", str(tmp_path / ".env"), env=env, timeout=300)
    assert secrets.returncode == 0, secrets.stdout + secrets.stderr  # was: SFTPError: Garbage packet received
    assert on_host("node3", "cat /etc/gpufab/secrets.env").stdout.count("HF_TOKEN='chatty-rc-token'") == 1
    limits = cli("inv", "limits.setup", env=env, timeout=300)  # parses `ulimit` from a new login
    assert limits.returncode == 0, limits.stdout + limits.stderr
    fab = cli("fab", "-i", str(LAB_KEY), "-H", "gpu@198.18.0.11,gpu@198.18.0.12", "inventory.check",
              env={"HOME": str(home), "FABRIC_SUDO_PASSWORD": PASSWORD}, timeout=120)
    assert fab.returncode == 0 and "198.18.0.12" in fab.stdout and "ens14np0" in fab.stdout, fab.stdout + fab.stderr
