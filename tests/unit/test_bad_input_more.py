"""Issue 32's bad input: what still ended in a traceback, a hang, a wrong acceptance or an unclear line.

As in test_bad_input: the parsers are called in-process (with hypothesis where the
input space is wide); a command is run only where the behaviour is the command's own,
always with a throwaway HOME and no address outside 198.18.0.0/15 and loopback.
"""

from __future__ import annotations

import math
import os
import threading
from unittest import mock

import pytest
import yaml
from fabric import Config
from hypothesis import given, settings, strategies as st
from invoke import Context
from invoke.exceptions import Exit
from paramiko import SSHConfig

from fabfile import logs as logs_tasks
from fabfile import ray as ray_tasks
from fabfile import run as run_tasks
from fabfile import storage as storage_tasks
from fabfile.bootstrap import report as report_task
from fabfile.cli import GpufabConfig
from fabfile.core.chain import select_steps
from fabfile.core.connection import check_ssh_config_paths, fab_ssh_config_paths
from fabfile.core.errors import InputError, number_option
from fabfile.core.fanout import OK, HostResult
from fabfile.core.inventory import parse_inventory
from fabfile.core.localfs import check_writable, write_if_changed
from fabfile.core.mapping import parse_mapping, render_inventory
from fabfile.core.settings import SETTINGS, fabric_timeout, gpufab_setting, read_config_file
from fabfile.inventory import check_replaceable, check_two_files
from fabfile.launch import launch as launch_task
from fabfile.ops.shared import share
from fabfile.ops import slurm as slurm_plan

from helpers import one_error_line
from inprocess import run_cli

NODE = "nodes:\n  - name: a\n    public: 198.18.0.11\n    private: 198.19.0.11\n"


# --------------------------------------------------------------------------- YAML nesting


@pytest.mark.parametrize("text", [
    NODE + "vars:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300)) + "  " * 301 + "x\n",
    NODE + "vars:\n  x: " + "[" * 3000 + "\n",
    "[" * 3000 + "]" * 3000 + "\n",
])
def test_deeply_nested_inventories_are_refused_not_a_recursion_error(text):
    with pytest.raises(InputError, match=r"hosts.yaml:\d+: nested more than 50 levels deep"):
        parse_inventory(text, "hosts.yaml")


# --------------------------------------------------------------------------- gpufab.yaml, invoke.yaml, GPUFAB_*


def project_config(tmp_path, text):
    """gpufab's config with `text` as the project's gpufab.yaml (the user's and the system's files left out)."""
    (tmp_path / "gpufab.yaml").write_text(text)
    config = GpufabConfig(project_location=str(tmp_path), lazy=True)
    config.load_project()
    return config


@pytest.mark.parametrize("key,value,message", [
    ("workers", "abc", "gpufab.workers: not a whole number: 'abc'"),
    ("workers", "1.5", "gpufab.workers: not a whole number: 1.5"),
    ("dead_after", "soon", "gpufab.dead_after: not a number: 'soon'"),
    ("connect_timeout", ".nan", "gpufab.connect_timeout: not a finite number: nan"),
    ("command_timeout", "-3", "gpufab.command_timeout: must be positive: -3"),
    ("known_hosts", "[a]", "gpufab.known_hosts: not a file path: ['a']"),
    ("inventory", "{a: 1}", "gpufab.inventory: not a file path: {'a': 1}"),
])
def test_settings_of_the_wrong_type_are_named_with_their_file(tmp_path, key, value, message):
    config = project_config(tmp_path, f"gpufab:\n  {key}: {value}\n")
    with pytest.raises(InputError) as raised:
        gpufab_setting(config, key)
    assert str(raised.value) == f"{tmp_path / 'gpufab.yaml'}: {message}"


def test_good_settings_read_as_before(tmp_path):
    config = project_config(tmp_path, "gpufab:\n  workers: 8\n  dead_after: 2.5\n  known_hosts: ~/kh\n  nofile: x\n")
    assert [gpufab_setting(config, k) for k in ("workers", "dead_after", "known_hosts", "nofile")] == [8, 2.5, "~/kh", "x"]
    assert gpufab_setting(config, "command_timeout", 7) == 7


@pytest.mark.parametrize("text,message", [
    ("gpufab: [unclosed\n", r"gpufab.yaml:2: not valid YAML: expected ',' or '\]'"),
    ("- a\n- b\n", "gpufab.yaml: a config file must be a mapping"),
    ("gpufab: 5\n", "gpufab.yaml: 'gpufab' must be a mapping of settings"),
    ("run: 5\n", "gpufab.yaml: 'run' must be a mapping, as Invoke and Fabric have it"),
    ("run:\n  echo: {a: 1}\n", "gpufab.yaml: 'run.echo' must be a single value"),
    ("gpufab:\n  x: " + "[" * 3000 + "\n", "gpufab.yaml:2: nested more than 50 levels deep"),
])
def test_config_files_that_invoke_cannot_merge_are_named(tmp_path, text, message):
    (tmp_path / "gpufab.yaml").write_bytes(text.encode())
    with pytest.raises(InputError, match=message):
        read_config_file(str(tmp_path / "gpufab.yaml"), Config.global_defaults())


def test_a_config_file_with_its_settings_commented_out_sets_none(tmp_path):
    (tmp_path / "gpufab.yaml").write_text("gpufab:\n  # workers: 8\n")
    assert read_config_file(str(tmp_path / "gpufab.yaml"), Config.global_defaults()) == {"gpufab": {}}


@pytest.mark.parametrize("name,value,message", [
    ("GPUFAB_CONNECT_TIMEOUT", "nan", "not a finite number: 'nan'"),
    ("GPUFAB_DEAD_AFTER", "nan", "not a finite number: 'nan'"),
    ("GPUFAB_COMMAND_TIMEOUT", "inf", "not a finite number: 'inf'"),
    ("GPUFAB_KNOWN_HOSTS", "", "not a file path: ''"),
])
def test_gpufab_variables_that_no_timer_or_file_takes_are_refused(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError) as raised:
        GpufabConfig(lazy=True).load_shell_env()
    assert str(raised.value) == f"{name}: {message}"


def test_a_timeout_option_of_inf_is_refused():
    with pytest.raises(InputError, match="--timeout: invalid value 'inf'"):
        number_option("inf", "--timeout", float)


def test_inv_names_a_broken_project_invoke_yaml(tmp_path):
    """The project's invoke.yaml is read by Invoke after it imports the tasks: one line, not Invoke's traceback."""
    (tmp_path / "tasks.py").write_text("from gpufab import ns  # noqa: F401\n")
    (tmp_path / "invoke.yaml").write_text("gpufab:\n  workers: [8\n")
    line = one_error_line(run_cli("inv", "exec", "true", cwd=tmp_path, timeout=60,
                                  env={"HOME": str(tmp_path), "GPUFAB_INVENTORY": str(tmp_path / "none.yaml")}))
    assert line.startswith(f"gpufab: error: {tmp_path / 'invoke.yaml'}:3: not valid YAML")


def test_gpufab_names_a_setting_of_the_wrong_type_in_its_gpufab_yaml(tmp_path):
    (tmp_path / "gpufab.yaml").write_text("gpufab:\n  dead_after: soon\n")
    line = one_error_line(run_cli("gpufab", "-H", "127.0.0.1:1", "exec", "true", cwd=tmp_path, timeout=60,
                                  env={"HOME": str(tmp_path)}))
    assert line == f"gpufab: error: {tmp_path / 'gpufab.yaml'}: gpufab.dead_after: not a number: 'soon'"


# --------------------------------------------------------------------------- ssh config


@pytest.mark.parametrize("content,message", [
    (b"Host mine\n  User me\n\x00\xff\xfe\n", "ssh config is not UTF-8 text (binary file?)"),
    (b"Host mine\n  User me\nHost\n", ":3: not a valid ssh config line: Unparsable line Host"),
    (b"Host mine\r  HostName 198.18.0.11\rUser\r", ":3: not a valid ssh config line: Unparsable line User"),
    (b'Match exec "unclosed\n', ":1: not a valid ssh config line: No closing quotation"),
    (b"Match all host x\n", ":1: not a valid ssh config line: Match does not allow 'all' mixed"),
])
def test_an_ssh_config_paramiko_cannot_parse_is_named_with_its_line(tmp_path, content, message):
    config = tmp_path / "config"
    config.write_bytes(content)
    with pytest.raises(InputError) as raised:
        check_ssh_config_paths([str(config)])
    assert str(raised.value).startswith(str(config)) and message in str(raised.value)


def test_an_ssh_config_asked_for_must_be_there_and_a_regular_file(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'absent'}: ssh config not found"):
        check_ssh_config_paths([str(tmp_path / "absent")], given=True)
    check_ssh_config_paths([str(tmp_path / "absent")])  # ~/.ssh/config need not exist
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="fifo: ssh config is not a regular file"):
        check_ssh_config_paths([str(tmp_path / "fifo")])  # never opened: that would wait for a writer


def test_an_include_loop_is_named_where_it_closes(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ssh = tmp_path / ".ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "config").write_text("Include conf.d/*.conf\nHost mine\n")
    (ssh / "conf.d" / "a.conf").write_text("Host a\n")
    (ssh / "conf.d" / "b.conf").write_text("# back to the top\nInclude ~/.ssh/config\n")
    with pytest.raises(InputError) as raised:
        check_ssh_config_paths([str(ssh / "config")])
    assert str(raised.value) == (f"{ssh / 'conf.d' / 'b.conf'}:2: Include loop: {ssh / 'config'} includes "
                                 f"{ssh / 'conf.d' / 'b.conf'} includes {ssh / 'config'}")
    (ssh / "conf.d" / "b.conf").write_text("Include ../conf.d/a.conf\n")
    check_ssh_config_paths([str(ssh / "config")])  # included twice is no loop


def test_an_include_of_itself_is_a_loop(tmp_path):
    (tmp_path / "config").write_text(f"Include {tmp_path / 'config'}\n")
    with pytest.raises(InputError, match="config:1: Include loop"):
        check_ssh_config_paths([str(tmp_path / "config")])


@pytest.mark.parametrize("argv,message", [
    (["-F", "/nonexistent", "-H", "h", "exec", "true"], "-F: '/nonexistent' is not a list format (flat, nested, json)"),
    (["-F/x/cfg", "exec"], "-F: '/x/cfg' is not a list format"),
])
def test_fab_minus_f_is_no_ssh_config_and_is_named_instead_of_ignored(argv, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fab_ssh_config_paths(argv)


@pytest.mark.parametrize("tool,content,message", [
    ("inv", b"\x00\xff\xfeHost x\n", "/.ssh/config: ssh config is not UTF-8 text"),
    ("fab", b"Host\n", "/.ssh/config:1: not a valid ssh config line: Unparsable line Host"),
    ("gpufab", b"Host x\n\xff\n", "/.ssh/config: ssh config is not UTF-8 text"),
])
def test_each_command_names_a_bad_ssh_config_in_one_line(tmp_path, tool, content, message):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_bytes(content)
    (tmp_path / "hosts.yaml").write_text(NODE.replace("198.18.0.11", "127.0.0.1"))
    args = ("exec", "true") if tool == "inv" else ("-H", "127.0.0.1:1", "exec", "true")
    line = one_error_line(run_cli(tool, *args, timeout=60,
                                  env={"HOME": str(tmp_path), "GPUFAB_INVENTORY": str(tmp_path / "hosts.yaml")}))
    assert message in line


# --------------------------------------------------------------------------- files gpufab writes


def finishes(fn, *args):
    """`fn(*args)` returns or raises within 10 s (a FIFO opened for reading would block forever); its outcome."""
    outcome = {}

    def call():
        try:
            outcome["value"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"{fn.__name__} hung"
    return outcome


@pytest.mark.parametrize("writer", ["write_if_changed", "check_writable"])
def test_a_pipe_or_a_device_as_output_is_refused_without_opening_it(tmp_path, writer):
    """slurm.script writes with write_if_changed, inventory.import checks with check_writable first."""
    os.mkfifo(tmp_path / "fifo")
    for path in (str(tmp_path / "fifo"), "/dev/null"):
        if writer == "write_if_changed":
            outcome = finishes(write_if_changed, path, "text\n")
        else:
            outcome = finishes(check_writable, [str(tmp_path / "new.yaml"), path])
        assert isinstance(outcome.get("error"), InputError), outcome
        assert str(outcome["error"]) == f"{path}: is not a regular file (a device or a pipe): give the path of a file"


def test_import_refuses_its_ssh_config_or_any_other_file_as_the_inventory(tmp_path):
    config = tmp_path / ".ssh" / "config"
    config.parent.mkdir()
    config.write_text("Host mine\n  User me\n")
    (tmp_path / "link.yaml").symlink_to(config)
    with pytest.raises(InputError, match=r"--output: is the ssh config file too"):
        check_two_files(str(tmp_path / "link.yaml"), str(config))
    with pytest.raises(InputError, match=f"{config}: exists and is not an inventory"):
        check_replaceable(str(config))
    (tmp_path / "hosts.yaml").write_text(NODE)
    check_replaceable(str(tmp_path / "hosts.yaml"))  # a re-import replaces an inventory
    check_replaceable(str(tmp_path / "new.yaml"))


def test_import_onto_the_ssh_config_writes_nothing(tmp_path):
    (tmp_path / "m.txt").write_text("198.18.0.11 198.19.0.11\n")
    (tmp_path / ".ssh").mkdir()
    config = tmp_path / ".ssh" / "config"
    config.write_text("Host mine\n  User me\n")
    line = one_error_line(run_cli("inv", "inventory.import", str(tmp_path / "m.txt"), "-o", str(config),
                                  env={"HOME": str(tmp_path)}, timeout=60))
    assert line == f"gpufab: error: --output: is the ssh config file too ({config}): give the inventory a file of its own"
    assert config.read_text() == "Host mine\n  User me\n" and sorted(p.name for p in config.parent.iterdir()) == ["config"]


@pytest.mark.parametrize("option,kw,message", [
    ("--user", {"user": "root;id"}, "--user: invalid SSH user 'root;id'"),
    ("--port", {"port": 70000}, "--port: invalid SSH port 70000"),
    ("--key", {"key": "~/my key"}, "--key: invalid SSH key path '~/my key'"),
])
def test_import_options_are_named_not_the_generated_yaml(option, kw, message):
    with pytest.raises(InputError) as raised:
        render_inventory([("198.18.0.11", "198.19.0.11")], **kw)
    assert str(raised.value) == message


# --------------------------------------------------------------------------- the shared directory


@pytest.mark.parametrize("variables,cli_paths,message", [
    ("    nfs_export: /etc\n", {}, "nfs_export: refusing NFS path /etc: a system directory"),
    ("    nfs_export: /mnt/../etc\n", {}, "nfs_export: invalid NFS path '/mnt/../etc': write it without '.', '..' or '//'"),
    ("", {"mount": "/dev"}, "--mount: refusing NFS path /dev: a system directory"),
    ("", {"path": "/var/lib/x"}, "--path: refusing NFS path /var/lib/x: inside the system directory /var"),
    ("", {"path": "/lib64"}, "--path: refusing NFS path /lib64: a system directory"),
    ("", {"path": "/root/share"}, "--path: refusing NFS path /root/share: inside the system directory /root"),
    ("", {"path": "/home/gpu"}, "--path: refusing NFS path /home/gpu: a home directory"),
    ("", {"path": "/mnt"}, "--path: refusing NFS path /mnt: /mnt holds other directories"),
    ("", {"path": "/"}, "--path: refusing NFS path /: the whole file system"),
    ("    nfs_mount: shared\n", {}, "nfs_mount: invalid NFS path 'shared': an absolute path"),
    ("", {"path": "/mnt//shared"}, "--path: invalid NFS path '/mnt//shared'"),
])
def test_a_share_on_a_system_directory_or_an_unnormalised_path_is_refused(variables, cli_paths, message):
    inv = parse_inventory(NODE + ("vars:\n" + variables if variables else ""), "hosts.yaml")
    with pytest.raises(InputError) as raised:
        share.share_paths(None, inv, cli_paths)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("path", ["/mnt/shared", "/data/x", "/srv/x", "/home/gpu/shared", "/data", "/mnt/shared/"])
def test_a_share_of_its_own_is_accepted(path):
    assert share.share_paths(None, parse_inventory(NODE, "h"), {"path": path}) == (path.rstrip("/"), path.rstrip("/"))


# --------------------------------------------------------------------------- counted variables


@pytest.mark.parametrize("value", ["-2", "1.5", "abc", "yes"])
def test_a_gpus_count_that_is_no_whole_number_is_refused_with_its_line(value):
    with pytest.raises(InputError, match=r"hosts.yaml:6: variable 'gpus' must be a whole number of 0 or more"):
        parse_inventory(NODE + f"    vars:\n      gpus: {value}\n", "hosts.yaml")


def test_a_gpus_count_reads_as_a_number():
    inv = parse_inventory(NODE + "    vars:\n      gpus: '8'\n", "hosts.yaml")
    assert inv.nodes[0].vars["gpus"] == 8
    assert slurm_plan.gpus_per_node(inv) == 8


def test_a_gpus_count_for_the_whole_cluster_is_refused_where_nothing_would_read_it():
    """Every reader takes a node's own count: `vars: {gpus: 8}` was accepted and then used nowhere."""
    with pytest.raises(InputError, match=r"hosts.yaml:6: setting 'gpus' is not read from the inventory's vars: "
                                         r"give it in a node's vars"):
        parse_inventory(NODE + "vars:\n  gpus: 8\n", "hosts.yaml")


# --------------------------------------------------------------------------- empty arguments


@pytest.mark.parametrize("task,where", [(run_tasks.detached, "COMMAND"), (launch_task, "COMMAND"), (logs_tasks.tail, "PATH")])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_command_or_log_path_is_refused_before_any_host(tmp_path, monkeypatch, task, where, value):
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(NODE.replace("198.18.0.11", "127.0.0.1") + "    port: 1\n")  # nothing answers there
    monkeypatch.setenv("GPUFAB_INVENTORY", str(inventory))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(Exit) as raised:
        task.body(Context(Config()), value)
    assert raised.value.code == 2 and raised.value.message.startswith(f"gpufab: error: {where}: an empty ")


# --------------------------------------------------------------------------- a head that does not answer


@pytest.mark.parametrize("task,title", [(storage_tasks.setup, "storage.setup"), (ray_tasks.smoke, "ray.smoke")])
def test_a_head_that_does_not_answer_ends_the_task_in_one_line(tmp_path, monkeypatch, task, title):
    """Its facts (storage) or its job (ray) were read outside fan_out: paramiko's exception was a traceback."""
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("nodes:\n  - {name: head0, public: 127.0.0.1, port: 1, private: 198.19.0.11}\n"
                         "  - {name: w1, public: 127.0.0.2, port: 1, private: 198.19.0.12}\n")  # nothing listens
    monkeypatch.setenv("GPUFAB_INVENTORY", str(inventory))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(Exit) as raised:
        task.body(Context(Config()))
    assert (raised.value.code, raised.value.message) == (255, f"{title}: cannot go on without head0: connection refused")


def test_a_worker_that_does_not_answer_is_its_own_failure_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    from fabfile.ops import storage as storage_plan

    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("nodes:\n" + "".join(f"  - {{name: {n}, public: 127.0.0.{i + 1}, port: 1, private: 198.19.0.{i + 11}}}\n"
                                              for i, n in enumerate(("head0", "w1", "w2"))))
    monkeypatch.setenv("GPUFAB_INVENTORY", str(inventory))
    monkeypatch.setenv("HOME", str(tmp_path))

    def facts(remote):
        if remote.node.name == "w1":
            raise ConnectionRefusedError()
        return "nodev\tnfsd\nnodev\tnfs\n"

    set_up = []
    monkeypatch.setattr(storage_plan, "storage_facts", facts)
    monkeypatch.setattr(storage_plan, "setup", lambda session, inv, nodes, *a, **kw: set_up.extend(nodes) or [
        HostResult(n, OK) for n in nodes])
    with pytest.raises(Exit) as raised:
        storage_tasks.setup.body(Context(Config()), backend="nfs")
    assert raised.value.code == 255 and [n.name for n in set_up] == ["head0", "w2"]
    assert "w1: connection refused" in capsys.readouterr().out


# --------------------------------------------------------------------------- messages that name the right thing


def test_a_bad_docker_image_is_named_in_docker_images_not_gpu_test_image():
    with pytest.raises(InputError) as raised:
        parse_inventory(NODE + "docker:\n  images: [ubuntu, 'a b']\n", "hosts.yaml")
    assert str(raised.value) == "hosts.yaml:6: invalid image name 'a b' in docker.images"


@pytest.mark.parametrize("text,message", [
    ("a,b\n", "m.txt:1: no 'Public IP  Private IP' rows: 'a,b' is not one (a row is two IP addresses, public then "
              "private, separated by spaces or tabs; commas do not separate columns)"),
    ("# from the console\n198.18.0.11,198.19.0.11\n", "m.txt:2: no 'Public IP  Private IP' rows: '198.18.0.11,"),
    ("Public IP   Private IP\n", "m.txt:1: no 'Public IP  Private IP' rows: 'Public IP   Private IP' is not one"),
])
def test_a_mapping_whose_one_line_is_no_row_says_what_is_wrong_with_it(text, message):
    with pytest.raises(InputError) as raised:
        parse_mapping(text, "m.txt")
    assert str(raised.value).startswith(message) and "empty file" not in str(raised.value)


def test_only_preflight_says_it_always_runs_not_that_it_cannot_be_skipped():
    from fabfile.ops.chain import CHAIN
    with pytest.raises(InputError) as raised:
        select_steps(CHAIN, None, "preflight", None)
    message = str(raised.value)
    assert message.startswith("--only: preflight always runs") and "skip" not in message and "ray" in message


def test_report_names_an_unknown_format_before_looking_for_a_report(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUFAB_INVENTORY", str(tmp_path / "hosts.yaml"))  # no report next to it
    with pytest.raises(Exit) as raised:
        report_task.body(Context(Config()), format="pdf")
    assert raised.value.message == "gpufab: error: --format: unknown format 'pdf' (one of: text, markdown, json)"


# --------------------------------------------------------------------------- Invoke's own GPUFAB_* keys


@pytest.mark.parametrize("name,value,message", [
    ("GPUFAB_PORT", "abc", "GPUFAB_PORT: not a value for port: 'abc' (invalid literal for int()"),
    ("GPUFAB_RUN_WATCHERS", "x", "GPUFAB_RUN_WATCHERS: not a value for run.watchers: 'x'"),
])
def test_invoke_keys_it_cannot_cast_name_their_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError) as raised:
        GpufabConfig(lazy=True).load_shell_env()
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("section,key,value,message", [
    ("timeouts", "connect", "abc", "timeouts.connect: not a number: 'abc'"),
    ("timeouts", "command", "nan", "timeouts.command: not a finite number: 'nan'"),
    ("connect_kwargs", "timeout", -1, "connect_kwargs.timeout: must be positive: -1"),
])
def test_fabrics_own_timeouts_are_checked_as_gpufabs_are(section, key, value, message):
    config = Config(overrides={section: {key: value}}, lazy=True)
    with pytest.raises(InputError) as raised:
        fabric_timeout(config, section, key)
    assert str(raised.value) == message
    assert fabric_timeout(Config(overrides={section: {key: "2.5"}}, lazy=True), section, key) == 2.5


# --------------------------------------------------------------------------- properties


#: Any value YAML can hold, for a setting.
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=8)
#: Keys that mean something to gpufab, Invoke or Fabric, and others.
KEYS = st.sampled_from(["gpufab", *SETTINGS, "run", "echo", "timeouts", "connect", "sudo", "port", "tasks"]) | st.text(max_size=6)
DOCUMENTS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                         max_leaves=12)


def valid_setting(key, value):
    if SETTINGS[key] is str:
        return isinstance(value, str) and bool(value.strip())
    return (isinstance(value, SETTINGS[key]) and not isinstance(value, bool) and math.isfinite(value) and value > 0)


def one_line_or_valid_settings(directory):
    """gpufab's config over `directory`/gpufab.yaml: a one-line bad-input error, or every known setting valid."""
    try:
        config = GpufabConfig(project_location=str(directory), lazy=True)
        config.load_project()
        found = {key: gpufab_setting(config, key) for key in SETTINGS}
    except InputError:
        return
    except Exit as exc:  # the reader Invoke calls ends as `reported` does
        assert exc.code == 2 and exc.message.startswith("gpufab: error: ") and "\n" not in exc.message
        return
    assert all(value is None or valid_setting(key, value) for key, value in found.items()), found


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200) | DOCUMENTS.map(yaml.safe_dump))
def test_no_gpufab_yaml_ends_in_a_traceback_or_an_invalid_setting(tmp_path_factory, text):
    directory = tmp_path_factory.mktemp("cfg")
    (directory / "gpufab.yaml").write_text(text, encoding="utf-8")
    one_line_or_valid_settings(directory)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(SETTINGS)), VALUES)
def test_no_value_of_a_known_setting_ends_in_a_traceback_or_is_taken_when_invalid(tmp_path_factory, key, value):
    directory = tmp_path_factory.mktemp("cfg")
    (directory / "gpufab.yaml").write_text(yaml.safe_dump({"gpufab": {key: value}}), encoding="utf-8")
    one_line_or_valid_settings(directory)


def _variables(defaults, prefix="GPUFAB_"):
    """Every variable Invoke reads for gpufab: one per leaf of the defaults (`run.echo` -> GPUFAB_RUN_ECHO)."""
    for key, value in defaults.items():
        if isinstance(value, dict):
            yield from _variables(value, f"{prefix}{key.upper()}_")
        else:
            yield f"{prefix}{key.upper()}"


#: gpufab's own variables and Invoke's and Fabric's (GPUFAB_PORT, GPUFAB_RUN_WATCHERS ...).
VARIABLES = sorted({f"GPUFAB_{k.upper()}" for k in SETTINGS if k != "inventory"} | set(_variables(Config.global_defaults())))
#: What a shell variable can hold: any text but NUL (and no lone surrogate, which no environment carries).
SHELL_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=16)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(VARIABLES), SHELL_TEXT | st.sampled_from(["nan", "inf", "0", "-1", "8", "2.5"]),
                       min_size=1, max_size=3))
def test_no_gpufab_variable_ends_in_a_traceback(variables):
    with mock.patch.dict(os.environ, variables):
        try:
            config = GpufabConfig(lazy=True)
            config.load_shell_env()
            found = {key: gpufab_setting(config, key) for key in SETTINGS if key != "inventory"}
            fabric_timeout(config, "timeouts", "connect")
            fabric_timeout(config, "timeouts", "command")
        except InputError:
            return
    assert all(value is None or valid_setting(key, value) for key, value in found.items()), found


#: Words of ssh config lines; a value never holds / or ~, so an Include stays in the test's ~/.ssh.
SSH_WORDS = st.sampled_from(["Host", "Match", "Include", "HostName", "User", "Port", "IdentityFile", "ProxyCommand",
                             "#", "all", "canonical", "final", "exec", "host", "!host", "=", '"', "'", "*", "config",
                             "none", "x", ""])
SSH_LINE = st.lists(SSH_WORDS | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/~\x00"),
                                        max_size=5), max_size=4).map(" ".join)
SSH_CONFIG = st.lists(SSH_LINE, max_size=8).map("\n".join).map(str.encode) | st.binary(max_size=120)


@settings(max_examples=60, deadline=None)
@given(SSH_CONFIG)
def test_no_ssh_config_ends_in_a_traceback_and_one_that_passes_is_one_paramiko_reads(tmp_path_factory, content):
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    config = home / ".ssh" / "config"
    config.write_bytes(content)
    with mock.patch.dict(os.environ, {"HOME": str(home)}):
        try:
            check_ssh_config_paths([str(config)], given=True)
        except InputError:
            return
    with open(config) as fh:  # what Fabric then does with it
        SSHConfig().parse(fh)
