import pytest

from fabfile.core.errors import InputError
from fabfile.core.inventory import parse_inventory
from fabfile.core.mapping import BLOCK_BEGIN, BLOCK_END, parse_mapping, render_inventory, render_ssh_block, replace_block

CONSOLE = "Public IP\tPrivate IP\n\n203.0.113.10   10.1.0.10\n203.0.113.11\t10.1.0.11\n\n  203.0.113.12 10.1.0.12  \n"


def test_console_table_with_header_tabs_and_blank_lines():
    assert parse_mapping(CONSOLE, "m.txt") == [
        ("203.0.113.10", "10.1.0.10"), ("203.0.113.11", "10.1.0.11"), ("203.0.113.12", "10.1.0.12")]
    assert parse_mapping("1.2.3.4 10.0.0.1\n", "m.txt") == [("1.2.3.4", "10.0.0.1")]


@pytest.mark.parametrize("text,line,message", [
    ("1.2.3.4 10.0.0.1\n1.2.3.999 10.0.0.2\n", 2, "invalid public IP address '1.2.3.999'"),
    ("1.2.3.4 10.0.0.1\n1.2.3.5 10.0.0.1\n", 2, "duplicate address 10.0.0.1 (first on line 1)"),
    ("1.2.3.4 10.0.0.1\n1.2.3.5\n", 2, "expected two columns"),
    ("Public Private\nfoo bar\n", 2, "invalid public IP address 'foo'"),
    ("1.2.3.4 10.0.0.1 extra\n", 1, "expected two columns"),
])
def test_bad_rows_name_line(text, line, message):
    with pytest.raises(InputError) as err:
        parse_mapping(text, "m.txt")
    assert str(err.value).startswith(f"m.txt:{line}: ") and message in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n", "Public IP  Private IP\n"])
def test_empty_mapping(text):
    with pytest.raises(InputError, match="no 'Public IP  Private IP' rows"):
        parse_mapping(text, "m.txt")


def test_rendered_inventory_loads_back_with_rental_names():
    pairs = parse_mapping(CONSOLE, "m.txt")
    inv = parse_inventory(render_inventory(pairs, "rental", "ubuntu", 22, "~/.ssh/k"), "x")
    assert [(n.name, n.public, n.private, n.role, n.user) for n in inv.nodes] == [
        ("rental0", "203.0.113.10", "10.1.0.10", "head", "ubuntu"),
        ("rental1", "203.0.113.11", "10.1.0.11", "worker", "ubuntu"),
        ("rental2", "203.0.113.12", "10.1.0.12", "worker", "ubuntu"),
    ]


def test_ssh_block_replaced_in_place_and_user_entries_kept():
    user = "Host *\n    ServerAliveInterval 30\n\nHost mybox\n    HostName 192.0.2.1\n"
    block1 = render_ssh_block([("1.1.1.1", "10.0.0.1")], "rental", "root", 22, None, "inv.yaml")
    once = replace_block(user, block1, "cfg")
    assert once.startswith(user) and once.count(BLOCK_BEGIN) == 1
    assert replace_block(once, block1, "cfg") == once  # idempotent
    block2 = render_ssh_block([("2.2.2.2", "10.0.0.2"), ("3.3.3.3", "10.0.0.3")], "rental", "root", 22, None, "inv.yaml")
    twice = replace_block(once + "Host after\n    User me\n", block2, "cfg")
    assert twice.count(BLOCK_BEGIN) == 1 and twice.count(BLOCK_END) == 1
    assert "1.1.1.1" not in twice and "Host rental1\n    HostName 3.3.3.3" in twice
    assert twice.startswith(user) and twice.endswith("Host after\n    User me\n")


def test_broken_block_is_refused():
    with pytest.raises(InputError, match="no END marker"):
        replace_block(f"Host a\n{BLOCK_BEGIN}\nHost rental0\n", "x", "cfg")
