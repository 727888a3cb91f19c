"""Numeric command-line options: a bad one is one clear line, never a traceback, on every task."""

import pytest
from hypothesis import given, strategies as st

from fabfile.core.errors import InputError, number_option

from helpers import one_error_line
from inprocess import run_cli


def test_numbers_parse_and_absent_is_none():
    assert number_option("8", "--workers") == 8 and number_option(8, "--workers") == 8
    assert number_option("2.5", "--timeout", float) == 2.5
    assert number_option(None, "--workers") is None and number_option("", "--workers") is None


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "nan", "inf"])
def test_bad_counts_name_the_option(value):
    with pytest.raises(InputError, match=f"--workers: invalid value '{value}'"):
        number_option(value, "--workers")


@given(st.text(max_size=12))
def test_no_string_ends_in_anything_but_a_number_or_an_input_error(text):
    try:
        got = number_option(text, "--timeout", float)
    except InputError:
        return
    assert got is None or got > 0


@pytest.mark.parametrize("args,option", [
    (("exec", "true", "--workers", "abc"), "--workers"),
    (("bootstrap", "--workers", "0", "--dry-run"), "--workers"),
    (("limits.setup", "--workers", "-1"), "--workers"),
    (("exec", "true", "--timeout", "abc"), "--timeout"),
    (("logs.tail", "/var/log/syslog", "-n", "abc"), "-n"),
])
def test_every_task_refuses_a_bad_number_in_one_line(tmp_path, args, option):
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("nodes:\n  - {name: n1, public: 198.18.0.250, private: 198.19.0.250}\n")
    line = one_error_line(run_cli("inv", *args, env={"GPUFAB_INVENTORY": str(inventory)}, timeout=60))
    assert f"{option}: invalid value" in line


def test_import_refuses_a_bad_port_and_writes_nothing(tmp_path):
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("198.18.0.11 198.19.0.11\n")
    out = tmp_path / "hosts.yaml"
    line = one_error_line(run_cli("inv", "inventory.import", str(mapping), "--port", "abc", "--output", str(out),
                                  "--ssh-config", str(tmp_path / "ssh_config")))
    assert "--port: invalid value 'abc'" in line
    assert not out.exists() and not (tmp_path / "ssh_config").exists()
