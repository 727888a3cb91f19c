"""core.facts' per-run store: a fact is read on first need, once however many steps ask at the same time,
kept from a program that read it on its way, and read again after a change it depends on."""

from __future__ import annotations

import threading
import time

from fabfile.core.facts import Fact, NodeFacts


class Node:
    """Counts the reads; each takes a moment, so that steps asking at once overlap."""

    def __init__(self) -> None:
        self.reads = 0
        self.lock = threading.Lock()

    def read(self, remote: "Node", *args: str) -> str:
        with self.lock:
            self.reads += 1
            n = self.reads
        time.sleep(0.05)
        return f"read {n}" + "".join(f" {a}" for a in args)


def test_steps_asking_at_once_share_one_read():
    node = Node()
    ports = Fact("ports", node.read)
    facts = NodeFacts()
    got = []
    threads = [threading.Thread(target=lambda: got.append(facts.get(ports, node))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["read 1"] * 8 and node.reads == 1


def test_arguments_tell_facts_of_one_kind_apart_and_forget_reads_again():
    node = Node()
    versions = Fact("versions", node.read)
    facts = NodeFacts()
    assert facts.get(versions, node, "/opt/a") == "read 1 /opt/a"
    assert facts.get(versions, node, "/opt/b") == "read 2 /opt/b"
    assert facts.get(versions, node, "/opt/a") == "read 1 /opt/a"
    facts.forget(versions, "/opt/a")  # a step installed into /opt/a
    assert facts.get(versions, node, "/opt/a") == "read 3 /opt/a"
    assert facts.get(versions, node, "/opt/b") == "read 2 /opt/b"


def test_a_change_forgets_only_the_facts_it_can_alter():
    node = Node()
    gpus = Fact("gpus", node.read, stale_after=("packages",))
    venv = Fact("venv", node.read)
    facts = NodeFacts()
    facts.get(gpus, node), facts.get(venv, node)
    facts.changed("packages")
    assert facts.get(gpus, node) == "read 3" and facts.get(venv, node) == "read 2"


def test_a_program_that_reads_the_fact_on_its_way_keeps_it_and_is_told_when_it_is_known():
    node = Node()
    ports = Fact("ports", node.read)
    facts = NodeFacts()
    flag = facts.flag(ports)
    assert flag == ""  # not known: the program reads it
    assert facts.kept(ports, flag, lambda: "from the program", node) == "from the program"
    assert facts.flag(ports) == "known"
    assert facts.kept(ports, "known", lambda: "never parsed", node) == "from the program"
    assert node.reads == 0
    facts.forget(ports)
    assert facts.kept(ports, "known", lambda: "never parsed", node) == "read 1"  # forgotten meanwhile: read


def test_clear_forgets_every_fact():
    node = Node()
    a, b = Fact("a", node.read), Fact("b", node.read, stale_after=("packages",))
    facts = NodeFacts()
    facts.get(a, node), facts.get(b, node, "x")
    facts.clear()  # an operator's own command ran
    assert not facts.known(a) and not facts.known(b, "x") and facts.get(a, node) == "read 3"
