"""Lab hosts are separate machines: booted to the end, each in its own cgroup tree."""

from __future__ import annotations

from .conftest import NODES, on_host


def test_every_host_finished_booting_and_lets_the_sudo_user_in(lab):
    for node in NODES:
        state = on_host(node, "systemctl is-system-running", check=False).stdout.strip()
        assert state == "running", (node, state, on_host(node, "systemctl --failed --no-legend").stdout)
        assert on_host(node, "test ! -e /run/nologin", check=False).returncode == 0, node  # PAM would refuse `gpu`


def test_each_host_has_a_cgroup_tree_of_its_own(lab):
    """Hosts started from one cgroup share unit cgroups: node2's systemd removes node1's (ENOENT)."""
    from fabfile.lab.tasks import _container_init
    from fabfile.lab.plan import LabPaths, plan_hosts

    paths = LabPaths.from_env()
    trees = set()
    for host in plan_hosts(len(NODES)):
        nspawn = int(open(paths.host(host, "pid")).read())
        init = _container_init(nspawn)
        line = next(l for l in open(f"/proc/{init}/cgroup") if l.startswith("0::"))
        assert f"/{host.name}/" in line, line
        trees.add(line)
    assert len(trees) == len(NODES)
