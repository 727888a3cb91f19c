"""Issue 32 on real hosts: what a hostile worker's root and a Ray task of the SSH user can and cannot do.

The cluster is bootstrapped as the rented login does it (`gpu`, password
sudo) with a `sudo: true` step of its own and secrets; then a worker's root
works through the share, and a Ray task (which runs as `gpu` on every node)
plants what item 4 of the issue names before gpufab runs again as root. Each
"cannot" of the README's Security summary (docs/security.md in full) is one
assertion here.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import cli

from .conftest import LAB_INVENTORY, NODES, on_host

PASSWORD = "gpufab-lab"
SECRET = "hf_hostile-test-4c1d"
STEP = "rootstep"
#: What the planted programs would leave behind if root ever ran them.
PWNED = "/root/gpufab-pwned"


@pytest.fixture(scope="module")
def cluster(lab, tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    text = LAB_INVENTORY.read_text().replace("  user: root\n", "  user: gpu\n")
    text += f"steps:\n  - name: {STEP}\n    command: id -u\n    sudo: true\n"
    (d / "gpu.yaml").write_text(text)
    (d / ".env").write_text(f"HF_TOKEN={SECRET}\n")
    env = {**lab, "GPUFAB_INVENTORY": str(d / "gpu.yaml"), "INVOKE_SUDO_PASSWORD": PASSWORD}
    proc = cli("inv", "bootstrap", "--secrets", "--env-file", str(d / ".env"), env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Step {STEP} (command, on all): 3 ran" in proc.stdout
    yield {"env": env, "dir": d}
    for node in NODES:
        on_host(node, f"rm -f {PWNED} /home/gpu/train.log /mnt/shared/idsuid /mnt/shared/by-worker-root", check=False)


def digest(node: str, path: str) -> str:
    return on_host(node, f"sha256sum {path}; stat -c '%U %G %a' {path}").stdout


def test_a_worker_s_root_cannot_become_root_anywhere_through_the_share(cluster):
    # node2's root writes the share, and plants a setuid copy of `id`.
    on_host("node2", "echo from-node2-root > /mnt/shared/by-worker-root && cp /usr/bin/id /mnt/shared/idsuid && "
                     "chmod 4755 /mnt/shared/idsuid")
    # On the head, what it wrote is the share owner's (gpu), never root's: a setuid bit there gives nothing more.
    owners = on_host("node1", "stat -c '%U' /mnt/shared/by-worker-root /mnt/shared/idsuid").stdout.split()
    assert owners == ["gpu", "gpu"]
    # On another worker the share is nosuid: the planted program runs as whoever starts it.
    ran = on_host("node3", "runuser -u nobody -- /mnt/shared/idsuid -u").stdout.strip()
    assert ran == on_host("node3", "id -u nobody").stdout.strip()
    # And a local user of a worker who is not the SSH user cannot write the share at all.
    denied = on_host("node3", "runuser -u nobody -- sh -c 'echo x > /mnt/shared/by-nobody'", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    mount = on_host("node3", "findmnt -rn -o OPTIONS /mnt/shared").stdout
    assert "nosuid" in mount and "nodev" in mount


#: Run as a Ray task on every node (so as `gpu`): it plants what root used to follow or run.
PLANT = """
import json, os, socket, ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def plant(_):
    import time
    time.sleep(2)  # hold the CPU so that SPREAD puts one on each node
    home, tried = os.path.expanduser("~"), {}
    bad = "#!/bin/sh\\ntouch %s\\n"
    if os.path.lexists(home + "/train.log"):
        os.unlink(home + "/train.log")
    os.symlink("/etc/shadow", home + "/train.log")
    for path in ("/etc/gpufab/secrets.env", "/var/lib/gpufab/steps/%s/run", "/var/lib/gpufab/steps/%s/script"):
        try:
            with open(path, "w") as f:
                f.write(bad)
            tried[path] = "written"
        except OSError as e:
            tried[path] = e.strerror
    old = home + "/.local/state/gpufab/steps/%s"
    os.makedirs(old, exist_ok=True)
    for name in ("run", "script"):
        with open(old + "/" + name, "w") as f:
            f.write(bad)
        os.chmod(old + "/" + name, 0o755)
    return socket.gethostname(), tried

print(json.dumps(ray.get([plant.remote(i) for i in range(3)])))
""" % (PWNED, STEP, STEP, STEP)


def test_a_ray_task_of_the_ssh_user_cannot_steer_root(cluster):
    shadow = {n: digest(n, "/etc/shadow") for n in NODES}
    secrets = {n: digest(n, "/etc/gpufab/secrets.env") for n in NODES}
    task = subprocess.run(["ssh", "-i", "/var/lib/gpufab/lab/id_ed25519", "-o",
                           "UserKnownHostsFile=/var/lib/gpufab/lab/known_hosts", "-o", "BatchMode=yes",
                           "gpu@198.18.0.11", "bash -lc 'cd /tmp && /opt/gpufab/venv/bin/python -'"],
                          input=PLANT, capture_output=True, text=True, timeout=300)
    assert task.returncode == 0, task.stdout + task.stderr
    hosts = {host: tried for host, tried in json.loads(task.stdout.strip().splitlines()[-1])}
    assert sorted(hosts) == list(NODES)
    for tried in hosts.values():  # root's files are not the user's to write
        assert set(tried.values()) == {"Permission denied"}, tried
    # gpufab runs as root again: the detached job's log, the sudo step.
    detached = cli("inv", "run.detached", "echo detached-output", "--log", "train.log", env=cluster["env"],
                   timeout=300)
    again = cli("inv", "bootstrap", "--only", STEP, env=cluster["env"], timeout=900)
    assert again.returncode == 0 and f"Step {STEP} (command, on all): 3 ran" in again.stdout, again.stdout + again.stderr
    for node in NODES:
        assert digest(node, "/etc/shadow") == shadow[node]  # neither chowned nor appended to
        assert digest(node, "/etc/gpufab/secrets.env") == secrets[node]
        assert on_host(node, f"test -e {PWNED}", check=False).returncode != 0  # nothing planted ran as root
        # The sudo step ran root's own script, from root's directory.
        assert on_host(node, f"cat /var/lib/gpufab/steps/{STEP}/log").stdout == "0\n"
    assert "cannot open" in detached.stdout, detached.stdout  # the planted link: refused, named


def test_ray_s_ports_answer_the_cluster_only_and_ask_for_the_token(cluster):
    # From this machine, on the head's public address: dropped (the GCS and the dashboard).
    for port in (6379, 8265):
        outside = subprocess.run(["timeout", "4", "bash", "-c", f"exec 3<>/dev/tcp/198.18.0.11/{port}"],
                                 capture_output=True, text=True)
        assert outside.returncode != 0, port
    # From a worker, on the private network: open, but the GCS refuses a client without the token.
    assert on_host("node2", "timeout 4 bash -c 'exec 3<>/dev/tcp/198.19.0.11/6379'", check=False).returncode == 0
    anonymous = on_host("node2", "cd /tmp && RAY_AUTH_MODE=token RAY_AUTH_TOKEN=not-the-token "
                                 "/opt/gpufab/venv/bin/ray status --address 198.19.0.11:6379", check=False)
    assert anonymous.returncode != 0 and "Authentication token is missing or incorrect" in \
        anonymous.stdout + anonymous.stderr
    status = cli("inv", "ray.status", env=cluster["env"], timeout=120)
    assert status.returncode == 0 and "ray: 3/3 inventory nodes alive" in status.stdout, status.stdout
    token = on_host("node1", "cat /home/gpu/.ray/auth_token").stdout
    assert token not in status.stdout + status.stderr
    assert on_host("node2", "stat -c '%a %U' /home/gpu/.ray/auth_token").stdout.strip() == "600 gpu"
