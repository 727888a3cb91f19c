import pytest

from fabfile.core.errors import InputError
from fabfile.core.inventory import load_inventory, nodes_from_hosts, parse_inventory

GOOD = """\
ssh:
  user: ubuntu
  key: ~/.ssh/id_ed25519
nodes:
  - name: gpu0
    public: 203.0.113.10
    private: 10.0.0.10
  - name: gpu1
    public: 203.0.113.11
    private: 10.0.0.11
    port: 2222
    vars:
      gpus: 8
      nic: ens14np0
  - name: gpu2
    public: 203.0.113.12
    private: 10.0.0.12
"""


def test_first_node_is_head_with_nid_0_and_defaults_apply():
    inv = parse_inventory(GOOD, "hosts.yaml")
    assert [(n.name, n.role, n.nid) for n in inv.nodes] == [
        ("gpu0", "head", 0), ("gpu1", "worker", 1), ("gpu2", "worker", 2)]
    assert inv.nodes[1].port == 2222 and inv.nodes[0].port == 22
    assert all(n.user == "ubuntu" and n.key == "~/.ssh/id_ed25519" for n in inv.nodes)
    assert inv.nodes[1].vars == {"gpus": 8, "nic": "ens14np0"}


def test_explicit_head_gets_nid_0_others_keep_order():
    text = GOOD.replace("    private: 10.0.0.12\n", "    private: 10.0.0.12\n    role: head\n")
    inv = parse_inventory(text, "hosts.yaml")
    assert inv.head.name == "gpu2"
    assert [(n.name, n.nid) for n in inv.nodes] == [("gpu0", 1), ("gpu1", 2), ("gpu2", 0)]


@pytest.mark.parametrize(
    "old,new,message,line",
    [
        ("public: 203.0.113.11", "public: 203.0.113.300", "invalid IP address '203.0.113.300'", 9),
        ("private: 10.0.0.11", "private: not-an-ip", "invalid IP address 'not-an-ip'", 10),
        ("private: 10.0.0.12", "private: 10.0.0.10", "duplicate address 10.0.0.10", 17),
        ("public: 203.0.113.12", "public: 203.0.113.10", "duplicate address 203.0.113.10", 16),
        ("name: gpu2", "name: gpu0", "duplicate node name 'gpu0'", 15),
        ("name: gpu2", "name: 'gpu2;reboot'", "invalid node name", 15),
        ("nic: ens14np0", "nic: 'ens14np0$(reboot)'", "shell metacharacter", 14),
        ("    private: 10.0.0.11\n", "    private: 10.0.0.11\n    role: boss\n", "unknown role 'boss'", 11),
        ("    private: 10.0.0.10\n", "    private: 10.0.0.10\n    role: head\n", None, None),
        ("port: 2222", "port: 70000", "invalid SSH port 70000", 11),
        ("user: ubuntu", "user: 'ub untu'", "invalid SSH user", 2),
        ("    vars:", "    bogus: 1\n    vars:", "unknown key 'bogus'", 12),
    ],
)
def test_bad_inventory_names_line_and_problem(old, new, message, line):
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    if message is None:  # a single explicit head is fine
        parse_inventory(text, "hosts.yaml")
        return
    with pytest.raises(InputError) as err:
        parse_inventory(text, "hosts.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith(f"hosts.yaml:{line}: ")


def test_two_heads_named_on_second_head_line():
    text = GOOD.replace("    private: 10.0.0.10\n", "    private: 10.0.0.10\n    role: head\n")
    text = text.replace("    private: 10.0.0.12\n", "    private: 10.0.0.12\n    role: head\n")
    with pytest.raises(InputError, match=r"^hosts.yaml:19: two heads: 'gpu0' and 'gpu2'"):
        parse_inventory(text, "hosts.yaml")


@pytest.mark.parametrize("text,message", [
    ("", "inventory is empty"),
    ("# only a comment\n", "inventory is empty"),
    ("nodes: []\n", "lists no nodes"),
    ("nodes:\n  - name: a\n    public: [1\n", "not valid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ("nodes:\n  - name: a\n    public: 203.0.113.5\n1: x\n", r"hosts.yaml:4: key '1' is not a name \(quote it\)"),
    ("vars:\n  1: x\nnodes:\n  - name: a\n    public: 203.0.113.5\n", r"hosts.yaml:2: key '1' is not a name"),
    ("nodes:\n  - name: a\n    public: 203.0.113.5\n    yes: 1\n", r"hosts.yaml:4: key 'yes' is not a name"),
])
def test_empty_or_malformed_inventory(text, message):
    with pytest.raises(InputError, match=message):
        parse_inventory(text, "hosts.yaml")


def test_a_binary_inventory_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_bytes(b"\x00\x01\xff\xfe")
    with pytest.raises(InputError, match="hosts.yaml: inventory is not UTF-8 text"):
        load_inventory(str(path))


def test_cli_hosts_first_is_head_and_user_port_parsed():
    inv = nodes_from_hosts(["admin@1.2.3.4:2200", "1.2.3.5", "rental2"])
    assert [(n.name, n.role, n.nid, n.user, n.port) for n in inv.nodes] == [
        ("1.2.3.4", "head", 0, "admin", 2200),
        ("1.2.3.5", "worker", 1, None, None),
        ("rental2", "worker", 2, None, None),
    ]


@pytest.mark.parametrize("hosts,message", [
    (["1.2.3.4", "1.2.3.4"], "duplicate"),
    (["1.2.3.999"], "invalid IP address"),
    (["a;b"], "invalid"),
])
def test_cli_hosts_bad_input(hosts, message):
    with pytest.raises(InputError, match=message):
        nodes_from_hosts(hosts)


def test_address_reuse_rules():
    base = "nodes:\n  - {name: a, public: 1.1.1.1, private: 10.0.0.1}\n"
    # One address for both roles on one machine is fine.
    parse_inventory("nodes:\n  - {name: a, public: 10.0.0.1, private: 10.0.0.1}\n", "x")
    # Behind one NAT address on different ports is fine.
    parse_inventory(base + "  - {name: b, public: 1.1.1.1, port: 2222, private: 10.0.0.2}\n", "x")
    for extra in ("  - {name: b, public: 1.1.1.1, private: 10.0.0.2}\n",
                  "  - {name: b, public: 10.0.0.1, private: 10.0.0.2}\n",
                  "  - {name: b, public: 1.1.1.2, private: 1.1.1.1}\n"):
        with pytest.raises(InputError, match="duplicate address"):
            parse_inventory(base + extra, "x")


def test_workload_roles_beside_head_and_worker():
    inv = parse_inventory("nodes:\n  - {name: a, public: 203.0.113.1, roles: [prefill]}\n"
                          "  - {name: b, public: 203.0.113.2, roles: 'decode,prefill'}\n")
    assert [n.roles for n in inv.nodes] == [("prefill",), ("decode", "prefill")]
    assert inv.nodes[0].has_role("head") and inv.nodes[1].has_role("decode") and not inv.nodes[0].has_role("decode")
    with pytest.raises(InputError, match="invalid role of node 'a'"):
        parse_inventory("nodes:\n  - {name: a, public: 203.0.113.1, roles: ['de code']}\n")
