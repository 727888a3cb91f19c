"""The mesh as data: facts and files in, the files it writes (and gives back) out."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from fabfile.core.errors import HostError, InputError
from fabfile.core.files import ABSENT_SUFFIX, BEFORE_DIR, replace_block
from fabfile.core.inventory import Inventory
from fabfile.ops import mesh, netenv

from fakes import FakeRemote, node

HOME = "/home/gpu"
AUTH, KNOWN, CONFIG = f"{HOME}/.ssh/authorized_keys", f"{HOME}/.ssh/known_hosts", f"{HOME}/.ssh/config"
KEY = mesh.NodeKey("ssh-ed25519 AAAAmesh1")
FACTS_TEXT = ("some banner from .bashrc\nuser=gpu\ngroup=gpu\nhome=/home/gpu\ngpus=8\n"
              "hostkey=ssh-ed25519 AAAAhost1\nhostkey=ecdsa-sha2-nistp256 AAAAhost1e\n")
ETC_HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n"
USERS_KEY = "ssh-ed25519 AAAAusers-own laptop\n"


def inventory(*names, port=22):
    nodes = tuple(node(name, f"10.0.0.{i + 1}", "head" if i == 0 else "worker", ) for i, name in enumerate(names))
    nodes = tuple(type(n)(**{**n.__dict__, "nid": i, "port": port, "user": "gpu"}) for i, n in enumerate(nodes))
    return Inventory(nodes=nodes)


def peers(port=22, keys=True):
    facts = {f"node{i}": mesh.NodeFacts("gpu", "gpu", HOME, gpus, (f"ssh-ed25519 AAAAhost{i}",) if keys else (),
                                        f"ssh-ed25519 AAAAmesh{i}" if keys else None)
             for i, gpus in ((1, 8), (2, 0), (3, 4))}
    return mesh.peers_of(inventory("node1", "node2", "node3", port=port), facts, {"node3": 2})


def files(found=None, the_peers=None):
    me = mesh.NodeFacts("gpu", "gpu", HOME, 8)
    return {f.path: f for f in mesh.mesh_files(the_peers or peers(), me, found or {})}


def test_facts_are_read_past_a_chatty_rc():
    found = mesh.parse_node_facts(FACTS_TEXT)
    assert found == mesh.NodeFacts("gpu", "gpu", "/home/gpu", 8, ("ssh-ed25519 AAAAhost1", "ecdsa-sha2-nistp256 AAAAhost1e"))
    odd = mesh.parse_node_facts("user=gpu\nhome=/home/gpu\nhostkey=ssh-ed25519 AAAA,x @cert-authority *\n"
                                "hostkey=ssh-rsa AAAAB3Nz+/a==\nhostkey=\n")
    assert odd.host_keys == ("ssh-rsa AAAAB3Nz+/a==",)
    with pytest.raises(ValueError, match="home"):
        mesh.parse_node_facts("user=gpu\nhome=\n")


@pytest.mark.parametrize("name,alias", [
    ("node1", "node1"), ("rental0", "rental0"), ("gpu-a.example", "gpu-a.example"),
    ("1.2.3.4", None), ("2001:db8::1", None), ("a_b", None), ("10.0", None),
])
def test_only_host_names_become_names_on_the_nodes(name, alias):
    assert mesh.alias_of(name) == alias


def test_hostfile_has_a_slot_per_gpu_at_least_one_and_the_inventory_override():
    out = files()
    assert out[mesh.HOSTFILE].content == "node1 slots=8\nnode2 slots=1\nnode3 slots=2\n"
    assert out[mesh.HOSTS_LIST].content == "node1\nnode2\nnode3\n"
    assert (out[mesh.HOSTFILE].owner, out[mesh.HOSTFILE].mode) == ("root", 0o644)


def test_nodes_named_by_address_are_listed_by_address_and_left_out_of_etc_hosts():
    inv = Inventory(nodes=(node("203.0.113.1", "10.0.0.1"), node("203.0.113.2", "10.0.0.2", "worker")))
    ps = mesh.peers_of(inv, {}, {})
    out = files(the_peers=ps)
    assert out[mesh.HOSTFILE].content == "10.0.0.1 slots=1\n10.0.0.2 slots=1\n"
    assert "10.0.0.1" not in out[mesh.ETC_HOSTS].content
    assert "Host 10.0.0.2\n    HostName 10.0.0.2\n" in out[CONFIG].content


def test_etc_hosts_gets_a_block_after_what_is_there():
    out = files({mesh.ETC_HOSTS: state(mesh.ETC_HOSTS, ETC_HOSTS)})[mesh.ETC_HOSTS]
    assert out.content.startswith(ETC_HOSTS + "\n" + mesh.BEGIN + "\n")
    assert "10.0.0.1\tnode1\n10.0.0.2\tnode2\n10.0.0.3\tnode3\n" + mesh.END + "\n" in out.content


def test_each_node_s_own_key_is_accepted_only_from_that_node_s_private_address():
    """Issue 32, item 6: no private key travels, and a key copied off one node works from nowhere else."""
    out = files({AUTH: state(AUTH, USERS_KEY, 0o600, "gpu")})
    assert not [p for p in out if mesh.KEY_NAME in p or "PRIVATE" in out[p].content]
    auth = out[AUTH].content
    assert auth.startswith(USERS_KEY)  # the user's own keys stay as they were
    assert [line for line in auth.split(mesh.BEGIN)[1].splitlines() if line.startswith("from=")] == [
        f'from="10.0.0.{i}",no-agent-forwarding,no-X11-forwarding ssh-ed25519 AAAAmesh{i} gpufab-mesh@node{i}'
        for i in (1, 2, 3)]
    assert out[AUTH].mode == 0o600 and out[AUTH].owner == "gpu"


def test_a_node_whose_mesh_key_is_not_known_now_keeps_its_line_and_a_removed_node_loses_it():
    before = files()[AUTH].content
    unread = [p if p.node != "node2" else mesh.Peer(p.node, p.address, p.alias, p.port, p.user, p.slots)
              for p in peers()]
    assert files({AUTH: state(AUTH, before, 0o600, "gpu")}, unread)[AUTH].content == before
    fewer = [p for p in peers() if p.node != "node3"]
    assert "gpufab-mesh@node3" not in files({AUTH: state(AUTH, before, 0o600, "gpu")}, fewer)[AUTH].content


def test_known_hosts_names_every_node_by_name_and_address_with_its_read_keys():
    lines = [line for line in files()[KNOWN].content.splitlines() if not line.startswith("#")]
    assert lines == ["node1,10.0.0.1 ssh-ed25519 AAAAhost1", "node2,10.0.0.2 ssh-ed25519 AAAAhost2",
                     "node3,10.0.0.3 ssh-ed25519 AAAAhost3"]
    other = [line for line in files(the_peers=peers(port=2222))[KNOWN].content.splitlines() if "AAAA" in line]
    assert other[0] == "[node1]:2222,[10.0.0.1]:2222 ssh-ed25519 AAAAhost1"


def test_a_node_whose_keys_were_not_read_keeps_its_lines():
    before = files()[KNOWN].content
    unread = [p if p.node != "node2" else mesh.Peer(p.node, p.address, p.alias, p.port, p.user, p.slots) for p in peers()]
    assert files({KNOWN: state(KNOWN, before, 0o644, "gpu")}, unread)[KNOWN].content == before
    assert "node2" not in files(the_peers=unread)[KNOWN].content.split(mesh.BEGIN)[1].split("\n", 2)[2]


def test_ssh_config_block_comes_first_and_ends_with_host_star():
    own = "ServerAliveInterval 60\nHost *\n    StrictHostKeyChecking no\n"
    out = files({CONFIG: state(CONFIG, own, 0o644, "gpu")})[CONFIG]
    assert out.content.startswith(mesh.BEGIN + "\n") and out.content.endswith(mesh.END + "\n\n" + own)
    block = out.content.split(mesh.END)[0]
    assert "Host node3 10.0.0.3\n    HostName 10.0.0.3\n    Port 22\n    User gpu\n" in block
    assert "IdentityFile ~/.ssh/gpufab_mesh_ed25519\n    IdentitiesOnly yes\n    StrictHostKeyChecking yes\n" in block
    # Options after the block apply to every host again, as before it was put first.
    assert block.rstrip().endswith("Host *")
    assert out.mode == 0o644  # the user's own mode is kept


def state(path, content, mode=0o644, owner="root"):
    from fabfile.core.files import FileState, sha256
    return FileState(path, True, content, sha256(content), mode, owner, owner)


def lab_node(remote_files=None, name="node1"):
    inv = inventory("node1", "node2", "node3")
    remote = FakeRemote(files=remote_files or {}, user="gpu", the_node=inv.by_name(name))
    remote.answer(r"id -un", FACTS_TEXT)
    return remote


def test_apply_twice_writes_once_and_remove_gives_every_file_back_byte_for_byte():
    remote = lab_node({mesh.ETC_HOSTS: ETC_HOSTS})
    remote.put(AUTH, USERS_KEY, 0o600, "gpu", "gpu")
    before = {p: s.content for p, s in remote.files.items()}
    me = mesh.read_facts(remote)
    first = mesh.apply_node(remote, peers(), KEY, me)
    assert first.changes and mesh.HOSTFILE in remote.files
    written = len(remote.written)
    again = mesh.apply_node(remote, peers(), KEY, me)
    assert again.changes == [] and len(remote.written) == written
    # known_hosts and config did not exist: gpufab's install kept that fact (an .gpufab-absent marker).
    for path in (KNOWN, CONFIG):
        remote.put(BEFORE_DIR + path + ABSENT_SUFFIX, "")
    done = mesh.remove_node(remote)
    assert {p: s.content for p, s in remote.files.items() if p in before} == before
    assert any(c.endswith(f"rm -f -- {KNOWN}") for c in remote.changes)
    assert any(c.endswith(f"rm -f -- {CONFIG}") for c in remote.changes)
    assert f"took gpufab's block out of {AUTH}" in done.changes


def test_each_node_reports_generating_its_own_key_and_drops_the_old_shared_one():
    remote = lab_node().answer(r"id -un", FACTS_TEXT + "oldkey=yes\n")
    out = mesh.apply_node(remote, peers(), mesh.NodeKey(KEY.public, generated=True), mesh.read_facts(remote))
    assert out.changes[0] == "generated this node's mesh key ~/.ssh/gpufab_mesh_ed25519"
    assert f"rm -f -- {HOME}/.ssh/gpufab_cluster_ed25519 {HOME}/.ssh/gpufab_cluster_ed25519.pub" in remote.changes
    assert "removed the old shared cluster key ~/.ssh/gpufab_cluster_ed25519" in out.changes


def test_a_node_s_key_is_read_as_its_public_half_only_and_an_odd_answer_fails_the_node():
    key = mesh.parse_key("==gpufab-generated\n==gpufab-public ssh-ed25519 AAAAx\n")
    assert key == mesh.NodeKey("ssh-ed25519 AAAAx", True)
    assert "cat" not in mesh.KEY_SCRIPT and "PRIVATE" not in mesh.KEY_SCRIPT  # the private half is never printed
    remote = FakeRemote(user="gpu").answer(r"ssh-keygen", "==gpufab-public ssh-rsa AAAA\n")
    with pytest.raises(HostError, match="mesh key cannot be read"):
        mesh.own_key(remote)


def test_a_mesh_key_from_the_facts_is_taken_only_as_a_public_key():
    assert mesh.parse_node_facts("user=gpu\nhome=/home/gpu\nmeshkey=ssh-ed25519 AAAAz\n").mesh_key == "ssh-ed25519 AAAAz"
    assert mesh.parse_node_facts("user=gpu\nhome=/home/gpu\nmeshkey=ssh-ed25519 AAAA z,x\n").mesh_key is None


def test_pairs_that_fail_are_named_with_ssh_s_reason():
    targets = [p for p in peers() if p.node != "node1"]
    found = mesh.parse_pairs("node2 0 \nnode3 255 gpu@10.0.0.3: Permission denied (publickey).\n")
    assert mesh.pair_problems(targets, found) == ["ssh node3: gpu@10.0.0.3: Permission denied (publickey)."]
    assert mesh.pair_problems(targets, mesh.parse_pairs("node2 124 \n")) == [
        f"ssh node2: no answer in {mesh.PAIR_TIMEOUT}s", "ssh node3: no answer"]


def test_verify_fails_a_node_naming_the_unreachable_peer():
    remote = lab_node({mesh.HOSTS_LIST: "node1\nnode2\nnode3\n"})
    remote.answer(r"BatchMode", "node2 0 \nnode3 255 Host key verification failed.\n", 0)
    with pytest.raises(HostError, match=r"^ssh node3: Host key verification failed\.$") as err:
        mesh.reach_peers(remote, peers())
    assert err.value.value == mesh.Reach(1, 2, ("ssh node3: Host key verification failed.",))


@pytest.mark.parametrize("value", ["0", "x", "5000", -1])
def test_bad_slots_are_one_input_error(value):
    with pytest.raises(InputError, match="slots"):
        mesh.check_slots(value, "node2")


@pytest.mark.parametrize("variables,wanted", [
    ({}, True), ({"mesh": False}, False), ({"mesh": "off"}, False),
    ({"bootstrap_skip": ["mesh"]}, False), ({"bootstrap_skip": "docker,mesh"}, False), ({"bootstrap_skip": "docker"}, True),
])
def test_netenv_names_the_hostfiles_only_where_the_mesh_is_kept(variables, wanted):
    inv = Inventory(nodes=inventory("node1").nodes, vars=variables)
    assert netenv.mesh_wanted(None, inv) is wanted
    env = netenv.netenv_files("n", "eth1", "10.0.0.1", 29500, "ethernet", mesh=wanted)[0].content
    assert ("GPUFAB_HOSTFILE=/etc/gpufab/hostfile\n" in env) is wanted


_text = st.text(alphabet=st.sampled_from("ab #\n\t"), max_size=40)


@given(existing=_text.filter(lambda t: t == "" or t.endswith("\n")), first=st.booleans())
def test_a_block_taken_out_gives_back_the_file_it_was_added_to(existing, first):
    block = f"{mesh.BEGIN}\nline\n{mesh.END}\n"
    added = replace_block(existing, block, "f", mesh.BEGIN, mesh.END, first=first)
    assert added.count(mesh.BEGIN) == 1
    assert replace_block(added, block, "f", mesh.BEGIN, mesh.END, first=first) == added
    assert replace_block(added, "", "f", mesh.BEGIN, mesh.END) == existing


def test_reset_also_takes_out_a_mesh_an_earlier_run_as_root_left_in_roots_home():
    remote = lab_node({mesh.ETC_HOSTS: ETC_HOSTS})
    root_config = "/root/.ssh/config"
    remote.put(root_config, f"{mesh.BEGIN}\nHost node2\n{mesh.END}\n\nHost *\n", 0o600)
    remote.put(BEFORE_DIR + root_config + ABSENT_SUFFIX, "")
    plain = mesh.remove_node(remote)
    assert root_config in remote.files and not any("/root/" in c for c in remote.changes)
    done = mesh.remove_node(remote, also_root=True)
    assert remote.files[root_config].content == "Host *\n"  # the operator's own line stays
    assert "took gpufab's block out of /root/.ssh/config" in done.changes and not any("/root/" in c for c in plain.changes)
    assert any(c == "rm -f -- /root/.ssh/gpufab_cluster_ed25519 /root/.ssh/gpufab_cluster_ed25519.pub"
               for c in remote.changes)
