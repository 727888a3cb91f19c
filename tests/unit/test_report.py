import pytest

from fabfile.core.cluster import choose_private, parse_addresses
from fabfile.core.errors import InputError
from fabfile.core.fanout import FAILED, OK, UNREACHABLE, HostResult, PrefixedStream, worst_exit_code
from fabfile.core.inventory import Node
from fabfile.core.report import fold_names, format_gathered, summary_line


@pytest.mark.parametrize("names,folded", [
    (["node1", "node2", "node3"], "node[1-3]"),
    (["node1", "node3", "node4", "node7"], "node[1,3-4,7]"),
    (["rental0"], "rental0"),
    (["gpu01", "gpu02", "head"], "gpu[01-02],head"),
    (["a1", "b1", "a2"], "a[1-2],b1"),
    (["198.18.0.11", "198.18.0.12"], "198.18.0.[11-12]"),
])
def test_fold_names(names, folded):
    assert fold_names(names) == folded


def _r(name, status=OK, code=0, out="", reason=""):
    return HostResult(Node(name, "1.1.1.1", None), status, code, out, "", reason)


def test_gather_identical_outputs_once_and_failures_apart():
    results = [_r("node1", out="same\n"), _r("node2", out="same\n"), _r("node3", UNREACHABLE, 255, reason="connection refused"),
               _r("node4", out="same\n"), _r("node5", FAILED, 2, out="oops\n", reason="exit code 2")]
    text = format_gathered(results)
    assert text.splitlines() == [
        "node[1-2,4]: same", "node3 (unreachable): connection refused", "node5 (exit 2): oops"]
    assert summary_line("exec", results) == (
        "exec: 5 hosts: 3 ok, 1 failed, 1 unreachable (node5: exit code 2; node3: connection refused)")
    assert worst_exit_code(results) == 255
    assert worst_exit_code(results[:2]) == 0


def test_a_failure_without_exit_code_is_never_success():
    # -1: the channel closed without an exit status (e.g. a killed session)
    assert worst_exit_code([_r("node1"), _r("node2", FAILED, -1, reason="exit code -1")]) == 1


def test_a_command_killed_by_its_timer_counts_as_timed_out_at_once():
    """Invoke's timer thread is still in kill() when the command returns."""
    import threading

    from fabfile.core.connection import TimedRemote

    class Channel:
        def close(self):
            assert runner.timed_out  # the timer thread is still alive here
    runner = TimedRemote.__new__(TimedRemote)
    runner.channel = Channel()
    runner._timer = threading.current_thread()  # alive, like the real timer inside kill()
    assert not runner.timed_out
    runner.kill()
    assert runner.timed_out


def test_prefixed_stream_writes_whole_lines_only():
    import io
    buf = io.StringIO()
    s = PrefixedStream("n1", buf, width=4, drop="[sudo] password: ")
    s.write("hel")
    assert buf.getvalue() == ""
    s.write("lo\n[sudo] password: wor")
    s.write("ld\r\npartial")
    s.flush()
    assert buf.getvalue() == "n1   | hello\nn1   | world\nn1   | partial\n"


ADDRS = {
    "a": "1: lo    inet 127.0.0.1/8 scope host lo\n2: eth0    inet 198.18.0.11/24 brd x\n"
         "3: enp27s0f0np0    inet 198.19.0.11/24 brd x\n4: docker0    inet 172.17.0.1/16 brd x\n",
    "b": "1: lo    inet 127.0.0.1/8 scope host lo\n2: eth0    inet 198.18.0.12/24 brd x\n"
         "3: ens14np0    inet 198.19.0.12/24 brd x\n4: docker0    inet 172.17.0.1/16 brd x\n",
}


def test_private_is_the_shared_subnet_other_than_ssh_and_docker():
    facts = {h: parse_addresses(t) for h, t in ADDRS.items()}
    ssh = {"a": "198.18.0.11", "b": "198.18.0.12"}
    assert choose_private(facts, ssh) == {"a": "198.19.0.11", "b": "198.19.0.12"}
    assert choose_private(facts, ssh, "198.18.0.0/24") == {"a": "198.18.0.11", "b": "198.18.0.12"}
    with pytest.raises(InputError, match="has no address in 10.9.0.0/16"):
        choose_private(facts, ssh, "10.9.0.0/16")


def test_no_shared_private_subnet_is_a_clear_error():
    facts = {h: parse_addresses(t.replace("198.19.0.12/24", "10.0.0.2/24")) for h, t in ADDRS.items()}
    with pytest.raises(InputError, match="give --private-subnet"):
        choose_private(facts, {"a": "198.18.0.11", "b": "198.18.0.12"})


def test_every_session_connection_uses_the_timed_runner():
    from fabfile.core.connection import Session, TimedRemote
    from fabfile.core.inventory import Inventory

    node = Node("node1", "198.18.0.11", None)
    session = Session(Inventory(nodes=(node,)))
    assert session.connection(node)._remote_runner().__class__ is TimedRemote


def test_connections_of_a_session_keep_their_own_attributes_out_of_the_shared_config():
    """Connection is a DataProxy: unknown attributes would land in the config all connections share."""
    from fabfile.core.connection import Session
    from fabfile.core.inventory import Inventory

    a, b = Node("node1", "198.18.0.11", None), Node("node2", "198.18.0.12", None)
    session = Session(Inventory(nodes=(a, b)))
    ca, cb = session.connection(a), session.connection(b)
    assert (ca.node, cb.node) == (a, b)
    assert "node" not in session.config and "dead_after" not in session.config


def test_making_connections_never_rewrites_the_shared_config(monkeypatch):
    """A config write re-merges the whole config: threads reading it meanwhile saw it empty."""
    from invoke.config import Config as InvokeConfig

    from fabfile.core.connection import Session
    from fabfile.core.inventory import Inventory

    nodes = tuple(Node(f"node{i}", f"198.18.0.{10 + i}", None) for i in range(3))
    session = Session(Inventory(nodes=nodes))
    merges = []
    monkeypatch.setattr(InvokeConfig, "merge", lambda self: merges.append(self))
    for node in nodes:
        session.connection(node)._remote_runner()
    assert merges == []


def test_a_released_host_gets_a_new_connection_and_close_skips_it():
    from fabfile.core.connection import Session
    from fabfile.core.inventory import Inventory

    node = Node("node1", "198.18.0.11", None)
    session = Session(Inventory(nodes=(node,)))
    first = session.connection(node)
    session.release(node)
    assert session.connection(node) is not first
    session.release(node)
    session.close()
