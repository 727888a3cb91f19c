"""Issue 13's bad input: each example one `gpufab: error:` line naming the file or option, nothing written.

Pure parsers are tested directly (with hypothesis where the input space is wide);
the commands users type are run as they would run them, with no host involved.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from fabfile.core.cluster import select_nodes
from fabfile.core.connection import check_local_files
from fabfile.core.errors import InputError
from fabfile.core.inventory import nodes_from_hosts, parse_inventory
from fabfile.core.localfs import check_writable, read_text, write_if_changed
from fabfile.core.mapping import parse_mapping

from helpers import one_error_line
from inprocess import Unprivileged, run_cli
from fabfile.ops.shared import secrets

NODE = "nodes:\n  - name: a\n    public: 198.18.0.11\n    private: 198.19.0.11\n"


# --------------------------------------------------------------------------- inventory


@pytest.mark.parametrize("text,message", [
    ("nodes:\n  - name: a\n    public: yes\n", ":3: invalid address True for node 'a' public"),
    ("nodes:\n  - name: a\n    public: 198.18.0.11\n    public: 198.18.0.12\n",
     ":4: duplicate key 'public' (first on line 3)"),
    (NODE + "vars:\n  nofile: 1\n  nofile: 2\n", ":7: duplicate key 'nofile' (first on line 6)"),
    ("nodes:\n  - name: yes\n    public: 198.18.0.11\n", ":2: invalid node name True"),
    ("1: x\n", ":1: key '1' is not a name"),
    (NODE + "vars:\n  1: x\n", ":6: key '1' is not a name"),
])
def test_inventory_values_yaml_would_misread_are_named(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_inventory(text, "hosts.yaml")


def test_an_alias_bomb_is_refused_before_it_is_built():
    levels = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for prev, cur in zip("abcdefghij", "bcdefghijk"):
        levels += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    text = NODE + "docker:\n  daemon:\n" + "".join("    " + line + "\n" for line in levels.splitlines())
    with pytest.raises(InputError, match="expands to more than 100000 values through aliases"):
        parse_inventory(text, "hosts.yaml")


def test_merge_keys_still_work_and_may_be_overridden():
    inv = parse_inventory("vars: &v\n  train_python: /usr/bin/python3\n  sudo_password_file: /p\n" + NODE +
                          "    vars:\n      <<: *v\n      train_python: /opt/py\n", "h")
    assert inv.nodes[0].vars == {"train_python": "/opt/py", "sudo_password_file": "/p"}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_no_inventory_text_ends_in_a_traceback(text):
    try:
        parse_inventory(text, "hosts.yaml")
    except InputError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=12))
def test_no_yaml_value_anywhere_in_a_node_ends_in_a_traceback(value):
    import yaml
    for key in ("public", "private", "name", "vars", "port", "roles", "user", "key"):
        text = yaml.safe_dump({"nodes": [{"name": "a", "public": "198.18.0.11", key: value}]})
        try:
            parse_inventory(text, "hosts.yaml")
        except InputError:
            pass


# --------------------------------------------------------------------------- mapping table


def test_a_first_row_with_prefix_lengths_is_data_not_a_header():
    pairs = parse_mapping("198.18.0.11/32 198.19.0.11/24\n198.18.0.12/32 198.19.0.12/24\n", "m.txt")
    assert pairs == [("198.18.0.11", "198.19.0.11"), ("198.18.0.12", "198.19.0.12")]


def test_a_header_with_digits_in_words_is_still_a_header():
    assert parse_mapping("Public IPv4   Private IPv4\n203.0.113.5 10.0.0.5\n", "m.txt") == [("203.0.113.5", "10.0.0.5")]


def test_a_bad_address_in_the_first_row_is_named_not_dropped():
    with pytest.raises(InputError, match=r"m.txt:1: invalid public IP address '198.18.0.300'"):
        parse_mapping("198.18.0.300 198.19.0.11\n198.18.0.12 198.19.0.12\n", "m.txt")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789./: \t\nabPI#"), max_size=120))
def test_no_mapping_text_ends_in_a_traceback_or_drops_a_data_row(text):
    try:
        pairs = parse_mapping(text, "m.txt")
    except InputError:
        return
    rows = [line.split("#", 1)[0].split() for line in text.splitlines() if line.split("#", 1)[0].strip()]
    assert len(pairs) in (len(rows), len(rows) - 1)


# --------------------------------------------------------------------------- -H host strings and --nodes


@pytest.mark.parametrize("hosts,message", [
    (["[::1]:abc"], "invalid port in host '[::1]:abc'"),
    (["[::1"], "invalid host '[::1'"),
    (["[::1]x"], "invalid host '[::1]x'"),
    (["a:\u0663"], "invalid port in host"),
    (["a:70000"], "invalid SSH port 70000"),
    ([" "], "empty host"),
])
def test_bad_host_strings_are_named(hosts, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        nodes_from_hosts(hosts)


def test_a_v6_host_with_a_port_parses():
    inv = nodes_from_hosts(["root@[2001:db8::1]:2222", "10.0.0.2"])
    assert (inv.nodes[0].public, inv.nodes[0].port, inv.nodes[0].user) == ("2001:db8::1", 2222, "root")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab1.:[]@-_ 9"), max_size=14), min_size=1, max_size=3))
def test_no_host_list_ends_in_a_traceback(hosts):
    try:
        nodes_from_hosts(hosts)
    except InputError:
        pass


@pytest.mark.parametrize("names", [",", " , ", ",,"])
def test_a_node_list_naming_nobody_is_bad_input(names):
    inv = parse_inventory(NODE, "h")
    with pytest.raises(InputError, match="--nodes: no node named"):
        select_nodes(inv, names)


# --------------------------------------------------------------------------- local files


def test_local_files_that_cannot_be_read_are_named(tmp_path):
    (tmp_path / "bin").write_bytes(b"\x00\xff\xfe")
    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_text(str(tmp_path / "bin"))
    with pytest.raises(InputError, match="is a directory"):
        read_text(str(tmp_path))
    assert read_text(str(tmp_path / "absent")) is None


def test_a_symlinked_file_is_written_through_and_kept_a_link(tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text("Host mine\n")
    link = tmp_path / "config"
    link.symlink_to(dotfiles / "ssh_config")
    assert write_if_changed(str(link), "Host mine\nHost new\n", 0o600, backup=str(link) + ".bak")
    assert link.is_symlink() and (dotfiles / "ssh_config").read_text() == "Host mine\nHost new\n"
    assert (tmp_path / "config.bak").read_text() == "Host mine\n"


def test_an_unwritable_destination_is_found_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        check_writable([str(tmp_path / "ok.yaml"), str(tmp_path)])
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a writable directory"):
        check_writable([str(tmp_path / "ok.yaml"), str(tmp_path / "file" / "below")])


def test_ssh_keys_and_known_hosts_that_cannot_be_used_are_named(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("KEY")
    key.chmod(0o644)
    with pytest.raises(InputError, match=r"mode 0644\); ssh refuses such keys: chmod 600"):
        check_local_files([str(key)], str(tmp_path / "kh"))
    key.chmod(0o600)
    check_local_files([str(key)], str(tmp_path / "kh"))  # a known_hosts not there yet is fine
    with pytest.raises(InputError, match="SSH private key not found"):
        check_local_files([str(tmp_path / "absent")], str(tmp_path / "kh"))
    with pytest.raises(InputError, match="SSH private key is not a file"):
        check_local_files([str(tmp_path)], str(tmp_path / "kh"))
    with pytest.raises(InputError, match="known_hosts is a directory"):
        check_local_files([str(key)], str(tmp_path))


# --------------------------------------------------------------------------- .env


def test_env_values_are_taken_literally(tmp_path):
    env = tmp_path / ".env"
    env.write_text("HF_TOKEN=hf_${HOME}$x\nPLAIN=abc\n")
    assert secrets.load_secrets(str(env)) == {"HF_TOKEN": "hf_${HOME}$x", "PLAIN": "abc"}


def test_a_binary_env_is_named(tmp_path):
    env = tmp_path / ".env"
    env.write_bytes(b"A=\x00\xff\xfe\n")
    with pytest.raises(InputError, match=r"\.env: is not UTF-8 text"):
        secrets.load_secrets(str(env))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_no_env_text_ends_in_a_traceback_or_an_unsafe_value(tmp_path_factory, text):
    env = tmp_path_factory.mktemp("env") / ".env"
    env.write_text(text, encoding="utf-8")
    try:
        values = secrets.load_secrets(str(env))
    except InputError:
        return
    assert all("'" not in v and "\n" not in v for v in values.values())


# --------------------------------------------------------------------------- the commands


def test_import_of_a_binary_file_or_a_directory_writes_nothing(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01binary\xff\n")
    for source, message in ((tmp_path / "bin.txt", "is not UTF-8 text"), (tmp_path, "is a directory")):
        line = one_error_line(run_cli("inv", "inventory.import", str(source), "--output", str(tmp_path / "out.yaml"),
                                      "--ssh-config", str(tmp_path / "ssh_config")))
        assert f"{source}: {message}" in line
    assert not (tmp_path / "out.yaml").exists() and not (tmp_path / "ssh_config").exists()


def test_import_into_an_ssh_config_that_is_a_directory_writes_nothing(tmp_path):
    (tmp_path / "m.txt").write_text("198.18.0.11 198.19.0.11\n")
    (tmp_path / "cfg").mkdir()
    line = one_error_line(run_cli("inv", "inventory.import", str(tmp_path / "m.txt"), "--output",
                                  str(tmp_path / "out.yaml"), "--ssh-config", str(tmp_path / "cfg")))
    assert f"{tmp_path / 'cfg'}: is a directory" in line and not (tmp_path / "out.yaml").exists()


def test_import_with_a_read_only_ssh_directory_is_no_half_change(tmp_path):
    """`~/.ssh` read-only: the inventory is not written either (root ignores modes, so a read-only mount)."""
    (tmp_path / "m.txt").write_text("198.18.0.11 198.19.0.11\n")
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    (ssh / "config").write_text("Host mine\n")
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", "-o", "ro", str(ssh), str(ssh)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ssh)], check=True)
    else:
        ssh.chmod(0o500)
    try:
        line = one_error_line(run_cli("inv", "inventory.import", str(tmp_path / "m.txt"), "--output",
                                      str(tmp_path / "out.yaml"), "--ssh-config", str(ssh / "config")))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ssh)], check=True)
        ssh.chmod(0o700)
    assert "cannot write here" in line and str(ssh / "config") in line
    assert not (tmp_path / "out.yaml").exists() and (ssh / "config").read_text() == "Host mine\n"


def test_import_writes_through_a_symlinked_ssh_config(tmp_path):
    (tmp_path / "m.txt").write_text("198.18.0.11 198.19.0.11\n")
    (tmp_path / "dotfiles").mkdir()
    real = tmp_path / "dotfiles" / "ssh_config"
    real.write_text("Host mine\n")
    (tmp_path / "config").symlink_to(real)
    proc = run_cli("inv", "inventory.import", str(tmp_path / "m.txt"), "--output", str(tmp_path / "out.yaml"),
                   "--ssh-config", str(tmp_path / "config"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "config").is_symlink() and "Host rental0" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


@pytest.mark.parametrize("args,message", [
    (("exec", "true", "--nodes", ","), "--nodes: no node named in ','"),
    (("netenv.setup", "--secrets", "--env-file", "BIN"), "is not UTF-8 text"),
])
def test_commands_refuse_bad_input_in_one_line(tmp_path, args, message):
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(NODE.replace("198.18.0.11", "198.18.0.250"))  # no such host: nothing may be tried
    (tmp_path / "bin.env").write_bytes(b"A=\x00\xff\n")
    args = tuple(str(tmp_path / "bin.env") if a == "BIN" else a for a in args)
    line = one_error_line(run_cli("inv", *args, env={"GPUFAB_INVENTORY": str(inventory)}, timeout=60))
    assert message in line


@pytest.mark.parametrize("hosts", ["[::1]:abc", "a:b:c]"])
def test_fab_refuses_a_bad_host_string_in_one_line(hosts):
    line = one_error_line(run_cli("fab", "-H", hosts, "exec", "true", timeout=60))
    assert "--hosts: invalid" in line


def test_fab_names_a_key_file_that_ssh_would_refuse(tmp_path):
    key = tmp_path / "id"
    key.write_text("KEY")
    key.chmod(0o644)
    line = one_error_line(run_cli("fab", "-i", str(key), "-H", "198.18.0.250", "exec", "true", timeout=60))
    assert f"{key}: SSH private key is readable by others (mode 0644)" in line


# --------------------------------------------------------------------------- the controller's ~/.ssh


@pytest.fixture(scope="module")
def unprivileged():
    """One process without root's power over file modes (a user's), for the commands below."""
    process = Unprivileged()
    yield process
    process.close()


@pytest.fixture
def own_home(tmp_path):
    """A HOME with an inventory of one host nothing answers for; nothing may be tried anyway."""
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / "hosts.yaml").write_text(NODE.replace("198.18.0.11", "198.18.0.250"))
    return tmp_path


@pytest.mark.parametrize("tool,args", [("inv", ("exec", "true")), ("fab", ("-H", "198.18.0.250", "exec", "true"))])
def test_an_ssh_config_that_is_a_directory_is_named_on_both_paths(own_home, tool, args):
    (own_home / ".ssh" / "config").mkdir()
    env = {"HOME": str(own_home), "GPUFAB_INVENTORY": str(own_home / "hosts.yaml")}
    line = one_error_line(run_cli(tool, *args, env=env, timeout=60))
    assert f"{own_home}/.ssh/config: ssh config is a directory, not a file" in line


@pytest.mark.parametrize("unreadable,message", [(".ssh/config", "cannot read ssh config: Permission denied"),
                                                (".ssh/known_hosts", "cannot read known_hosts: Permission denied")])
def test_unreadable_ssh_files_are_named_for_a_user_who_cannot_read_them(own_home, unprivileged, unreadable, message):
    path = own_home / unreadable
    path.write_text("# mine\n")
    path.chmod(0o000)
    env = {"HOME": str(own_home), "GPUFAB_INVENTORY": str(own_home / "hosts.yaml")}
    line = one_error_line(unprivileged.cli("inv", "exec", "true", env=env, timeout=60))
    assert f"{path}: {message}" in line


@pytest.mark.parametrize("where", ["default", "-S"])
def test_fab_names_an_unreadable_ssh_config_instead_of_fabrics_traceback(own_home, unprivileged, where):
    path = own_home / ".ssh" / "config" if where == "default" else own_home / "other_config"
    path.write_text("Host mine\n")
    path.chmod(0o000)
    flags = ("-S", str(path)) if where == "-S" else ()
    line = one_error_line(unprivileged.cli("fab", *flags, "-H", "198.18.0.250", "exec", "true",
                                           env={"HOME": str(own_home)}, timeout=60))
    assert f"{path}: cannot read ssh config: Permission denied" in line


def test_import_with_an_unreadable_ssh_config_writes_nothing(own_home, unprivileged):
    (own_home / "m.txt").write_text("198.18.0.11 198.19.0.11\n")
    config = own_home / ".ssh" / "config"
    config.write_text("Host mine\n")
    config.chmod(0o000)
    line = one_error_line(unprivileged.cli("inv", "inventory.import", str(own_home / "m.txt"), "--output",
                                           str(own_home / "out.yaml"), env={"HOME": str(own_home)}))
    assert f"{config}: cannot read: Permission denied" in line
    assert not (own_home / "out.yaml").exists()
    config.chmod(0o600)
    assert config.read_text() == "Host mine\n"
