"""One bootstrap over fake nodes: each fact several steps need is read once per node, and again only after
a step changed it.

The GPU count, the InfiniBand ports and the versions in Ray's venv were read 4 (and one more per inventory
step), 7 and 5 times per node here (preflight, mesh, docker's toolkit and its verify; the doctor twice, limits,
netenv, all-reduce, the fleet, docker's verify; fetch, ray.install, ray.start, the fleet and ray's verify).
Here the whole chain runs (core.chain.Run, every step of ops.chain.CHAIN an inventory without settings runs)
on two FakeRemotes and every program sent is counted by what it reads.
"""

from __future__ import annotations

import io
import json
import threading
from types import SimpleNamespace
from typing import Dict, List, Sequence

from invoke import Config

from fabfile.core.chain import Run, select_steps
from fabfile.core.inventory import Inventory, Node, parse_inventory
from fabfile.core.progress import Progress
from fabfile.ops import docker
from fabfile.ops.chain import CHAIN
from fabfile.ops.scripts import with_user_steps
from fabfile.ops.shared import versions
from fabfile.ops.shared.python import DEFAULT_VENV
from fakes import FakeRemote

NODES = (Node("node1", "198.18.0.11", private="10.0.0.11", role="head", nid=0),
         Node("node2", "198.18.0.12", private="10.0.0.12", nid=1))

IB = "ibport=mlx5_0 1|4: ACTIVE|InfiniBand|400 Gb/sec (4X NDR)|ib0|5: LinkUp|\nverbs=yes\n"
VERSIONS = {"python": "3.11.9", "ray": "2.60.0", "torch": "2.5.1", "vllm": None, "transformers": None}
POOLS = [{"Base": b, "Size": z} for b, z in docker.pools(docker.managed_settings({}))]
TORCH = {"torch": "2.5.1", "gloo": True, "nccl": True, "gpus": 8, "python": "3.11.9", "nccl_version": "2.21.5"}


def rules(node: Node) -> List[tuple]:
    """What a healthy GPU node with one InfiniBand rail answers, Docker, its toolkit and Ray in place."""
    alive = [{"ip": n.private, "state": "ALIVE", "head": n.is_head, "resources": {"CPU": 8, "GPU": 8}} for n in NODES]
    return [
        # The GPU doctor's root pass (it reads the ports first, in preflight's round).
        (r'echo "@@lspci"', "@@lspci\n@@smi\n@@smi-missing\n@@fm\n@@xid\n@@docker\n@@ib\n" + IB, 0),
        (r"disk_free_kb", "os=Ubuntu 22.04\nuid=0\ngpus=8\nnic=eth1\ndisk_free_kb=100000000\nsudo=root\n", 0),
        (r"meshkey=", "user=root\ngroup=root\nhome=/root\ngpus=8\n", 0),
        (r"==gpufab-public", "==gpufab-public ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n", 0),
        (r"defroute=", f"route=10.0.0.11 dev eth1 src {node.private}\nowner=eth1\ngroup=root\ndefroute=eth0\n"
                       f"addr=eth1 {node.private}/24\nlink=eth1 1500\nlink=eth0 1500\n" + IB, 0),
        (r'ib_ports "\$ib_sysfs"', IB, 0),
        (r"^ulimit -n$", "1048576\n", 0),
        (r"dpkg-query -W -f='\$\{Package\} \$\{db:Status-Status\}\\n'", "nftables installed\n", 0),
        (r'echo "GROUPS=', "ID=ubuntu\nVERSION_CODENAME=jammy\nARCH=amd64\nDOCKERD=/usr/bin/dockerd\n"
                           "VERSION=docker-ce 27.3.1\nGROUPS=root\n", 0),
        (r"echo docker=yes", "docker=yes\nnvidia=yes\n", 0),
        (r"docker info --format", json.dumps({"ServerVersion": "27.3.1", "DefaultAddressPools": POOLS,
                                              "Runtimes": {"runc": {}, "nvidia": {}}}) + "\n", 0),
        (r"nvidia-smi -L 2>/dev/null \| grep -c", "GPUS=8\nPCI=8\nTOOLKIT=installed 1.17.0-1\n"
                                                  "CTK=/usr/bin/nvidia-ctk\nRUNTIME=/usr/bin/nvidia-container-runtime\n", 0),
        (r"nvidia-ctk runtime configure", json.dumps({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}) + "\n", 0),
        (r"md\.version\(name\)", json.dumps(VERSIONS) + "\n", 0),
        (r"list_nodes", json.dumps(alive) + "\n", 0),
        (r"GPUFAB-PYTHON", "python=/opt/gpufab/venv/bin/python\nGPUFAB-PYTHON " + json.dumps(TORCH) + "\n", 0),
        (r'echo "home=\$home"', "home=/root\ngpus=8\n", 0),  # a user step's facts, then its status
        (r"==log", "exit=0\n==log\nhi\n", 0),
        (r"ssh -n -o BatchMode=yes", "".join(f"{n.name} 0 \n" for n in NODES), 0),
    ]


class FakeNode(FakeRemote):
    """A FakeRemote that also stands in for the node's SSH connection (preflight opens it)."""

    stopping = None
    is_connected = True

    def open(self) -> None:
        pass

    def run_in_new_login(self, command: str):
        self.new_login = "unlimited" if "ulimit -Sl" in command else "1048576 1048576"
        return super().run_in_new_login(command)


def told_known(command: str) -> bool:
    """A program that can read a fact on its way is told `known` (its last argument) to leave it out
    (test_remote_programs runs each one so)."""
    return command.rstrip("\n").endswith(" known")


#: What each fact's programs look like, as sent.
READS = {
    "GPU count": lambda c: ('gpu_count "$smi_timeout"' in c or "nvidia-smi -L 2>/dev/null | grep -c" in c)
    and not told_known(c),
    "InfiniBand ports": lambda c: 'ib_ports "$ib_sysfs"' in c and not told_known(c),
    # ray-versions.py, or the fleet's own `version("ray")` when it is given the venv's python.
    "Ray's versions": lambda c: "md.version(name)" in c or ('version("ray")' in c and "/bin/python 20" in c),
}


def bootstrap(nodes: Dict[str, FakeNode], inv: Inventory = Inventory(NODES)) -> Run:
    session = SimpleNamespace(connection=lambda n: nodes[n.name], sudo_password=lambda n=None: None,
                              step_timeout=30, fact_timeout=30, workers=8, connect_timeout=5, known_hosts=None,
                              stopping=threading.Event(), interrupt=lambda: None)
    session.inventory = inv
    cli = {"nofile": None, "secrets": False, "env_file": ".env", "storage": None, "timeout": None}
    chain = with_user_steps(CHAIN, inv)
    settings = {s.name: s.settings(Config(), inv, cli) for s in chain}
    steps = [s for s in select_steps(chain, None, None, inv.vars.get("bootstrap_skip")) if s.wanted(settings[s.name])]
    run = Run(session, inv, NODES, steps, settings, Progress(out=io.StringIO()), False, None)
    run.remotes = dict(nodes)  # the nodes the steps are handed: the fakes
    run.go()
    return run


def reads(node: FakeNode) -> Dict[str, int]:
    return {fact: sum(1 for c in node.commands if sent(c)) for fact, sent in READS.items()}


def fake_nodes(*extra: Sequence) -> Dict[str, FakeNode]:
    return {n.name: FakeNode([*extra, *rules(n)], the_node=n) for n in NODES}


def test_every_step_shares_one_read_of_each_fact_per_node():
    nodes = fake_nodes()
    run = bootstrap(nodes)
    steps = [s.name for s in run.steps]
    assert steps == ["preflight", "fetch", "wheels", "limits", "docker", "netenv", "mesh", "storage", "ray",
                     "allreduce", "verify"]
    # Every step ran and used the facts, and the verify phase's checks read them (the all-reduce's own job,
    # across the cluster, has no fake to run with).
    assert [(s, n.name, run.result(s, n).reason) for s in steps[:-1] for n in NODES if run.result(s, n).failed] == []
    assert all(run.checked(s.name, n) is not None for s in run.steps if s.check for n in NODES)
    # Each step got the one read: the rail in the doctor's verdict, limits' memlock, all-reduce's fabric and
    # netenv's NCCL settings; the GPUs in the mesh's slots.
    for n in NODES:
        assert [p.name for p in run.checked("preflight", n)["doctor"].ib.rails()] == ["mlx5_0:1"]
        assert run.value("limits", n).memlock == "unlimited"
        assert [p.name for p in run.value("allreduce", n).ib.rails()] == ["mlx5_0:1"]
        assert run.value("mesh", n).gpus == 8
        assert "NCCL_IB_HCA==mlx5_0:1" in nodes[n.name].files["/etc/gpufab/netenv.env"].content
    assert all(run.checked("ray", n)["ray"] == "2.60.0" for n in NODES)
    for node in nodes.values():
        assert reads(node) == {"GPU count": 1, "InfiniBand ports": 1, "Ray's versions": 1}, node.node.name


def test_rays_versions_are_read_again_once_ray_install_changed_them():
    """No venv yet: the first read finds none, ray.install makes it; from then on the steps (ray.start, the
    verify phase's ray check and the fleet) see what is in the venv now, read once more."""
    no_venv = (r"md\.version\(name\)", "", 1)
    nodes = fake_nodes(no_venv)
    for node in nodes.values():
        node.after(r"pip install", r"md\.version\(name\)", json.dumps(VERSIONS) + "\n")
    run = bootstrap(nodes)
    for n, node in zip(NODES, nodes.values()):
        assert any("installed" in c for c in run.result("ray", n).changes), run.result("ray", n)
        assert run.checked("ray", n)["ray"] == "2.60.0"
        assert reads(node) == {"GPU count": 1, "InfiniBand ports": 1, "Ray's versions": 2}, n.name


def test_a_package_installed_during_the_run_has_the_gpu_count_and_ib_ports_read_again():
    """libibverbs or nvidia-smi can come with a package: after an apt install the next reader reads them
    again (ray.install's nftables here), once."""
    missing = (r"dpkg-query -W -f='\$\{Package\} \$\{db:Status-Status\}\\n'", "", 0)
    nodes = fake_nodes(missing)
    run = bootstrap(nodes)
    for n, node in zip(NODES, nodes.values()):
        assert "installed nftables" in run.result("ray", n).changes
        assert reads(node) == {"GPU count": 2, "InfiniBand ports": 2, "Ray's versions": 1}, n.name


#: Two of the inventory's own steps: the first after docker, the other (no `after:`) just before verify.
WITH_STEPS = parse_inventory("""
nodes:
  - {name: node1, public: 198.18.0.11, private: 10.0.0.11}
  - {name: node2, public: 198.18.0.12, private: 10.0.0.12}
steps:
  - {name: prime, command: "echo hi", after: docker}
  - {name: warm, command: "echo hi"}
""")


def test_the_inventorys_own_steps_take_the_gpu_count_and_after_one_ran_every_fact_is_read_again():
    """Their env's ranks need the GPU count: the run's read. What an operator's command changes no one can
    tell, so after each the facts are read again, once, by the next step that needs them: the verify phase
    reads what is on the node after the last one."""
    nodes = fake_nodes()
    run = bootstrap(nodes, WITH_STEPS)
    assert [s.name for s in run.steps] == ["preflight", "fetch", "wheels", "limits", "docker", "prime", "netenv",
                                           "mesh", "storage", "ray", "allreduce", "warm", "verify"]
    for n, node in zip(NODES, nodes.values()):
        assert run.status("prime", n) == run.status("warm", n) == "changed"
        prime_facts = next(c for c in node.commands if 'echo "home=$home"' in c and "/steps/prime " in c)
        assert told_known(prime_facts)  # preflight's count, not a read of its own
        assert "NPROC_PER_NODE=8" in node.files["~/.local/state/gpufab/steps/prime/env"].content
        # warm is the last step before verify (nothing runs beside it): what is read after it is verify's.
        ran_warm = max(i for i, c in enumerate(node.commands) if "steps/warm/run" in c)
        after_warm = {fact: sum(1 for c in node.commands[ran_warm:] if sent(c)) for fact, sent in READS.items()}
        assert after_warm == {"GPU count": 1, "InfiniBand ports": 1, "Ray's versions": 1}, n.name


def test_a_pin_beyond_the_usual_packages_widens_the_one_read_of_the_venv():
    """ray.install asks for its pins, ray.versions and the verify phase for VERSION_PACKAGES: one read answers
    both; a pin outside them (numpy) reads the venv once more, for all of them, and each asker gets what it
    asked for, as before."""
    from fabfile.ops.shared import versions
    found = dict(VERSIONS, numpy="2.1.0")
    remote = FakeRemote([(r"(?s)md\.version\(name\).* numpy$", json.dumps(found) + "\n", 0),
                         (r"md\.version\(name\)", json.dumps(VERSIONS) + "\n", 0)])
    assert versions.installed_versions(remote, "/opt/v", ["ray"]) == {"python": "3.11.9", "ray": "2.60.0"}
    assert versions.installed_versions(remote, "/opt/v", ["ray", "numpy"]) == {"python": "3.11.9", "ray": "2.60.0",
                                                                                 "numpy": "2.1.0"}
    assert versions.installed_versions(remote, "/opt/v", versions.VERSION_PACKAGES) == {k: found[k] for k in VERSIONS}
    sent = remote.sent(r"md\.version\(name\)")
    assert len(sent) == 2 and sent[0].endswith("' ray torch vllm transformers")
    assert sent[1].endswith("' ray torch vllm transformers numpy")
    assert versions.installed_versions(FakeRemote([(r"md\.version", "", 1)]), "/opt/v", ["ray"]) is None  # no venv


def test_a_ray_install_that_fails_half_way_leaves_no_versions_read_before_it():
    """pip changed the venv and then failed: whatever reads Ray's versions afterwards reads the venv again,
    never the versions from before the install (the run keeps none of them)."""
    old = dict(VERSIONS, ray="2.50.0")
    nodes = fake_nodes((r"md\.version\(name\)", json.dumps(old) + "\n", 0), (r"pip install", "", 1))
    for node in nodes.values():
        node.after(r"pip install", r"md\.version\(name\)", json.dumps(VERSIONS) + "\n")
    run = bootstrap(nodes)
    for n, node in zip(NODES, nodes.values()):
        assert run.result("ray", n).failed, run.result("ray", n)
        assert not run.facts(n).known(versions.VERSIONS, DEFAULT_VENV), n.name
        assert versions.installed_versions(node, DEFAULT_VENV, ["ray"])["ray"] == "2.60.0"
