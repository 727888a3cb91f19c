"""The local lab, planned: names, addresses and files of each practice host.

Pure: nothing here runs a command. `fabfile/lab.py` executes the plan. The
recipe follows ../shared/lab-notes.md: systemd-nspawn hosts booted from an
overlay of one debootstrapped base, each in its own network namespace with a
public NIC on one bridge (SSH from this machine) and a private NIC, named
differently on each host, on a second bridge that only the hosts share.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..core.errors import InputError
from ..core.files import render

SUITE = "bookworm"
PACKAGES = (
    "openssh-server", "python3", "python3-venv", "iproute2", "sudo", "procps", "systemd",
    "systemd-sysv", "dbus", "ca-certificates", "iputils-ping", "kmod", "curl", "gnupg", "less",
    # Rented images have a firewall tool; tests drop traffic between hosts with it.
    "iptables",
)
#: Installed with apt after debootstrap (it resolves their many dependencies
#: properly): Debian's CPU build of PyTorch, with Gloo, stands in for the
#: training environment that rented GPU images ship (`inv allreduce`).
TRAINING_PACKAGES = ("python3-torch",)
#: Bump when the base customisation below changes: the cached base is rebuilt.
RECIPE_VERSION = "4"

PUBLIC_NET = ipaddress.IPv4Network("198.18.0.0/24")
PRIVATE_NET = ipaddress.IPv4Network("198.19.0.0/24")
BRIDGE_IP = PUBLIC_NET.network_address + 1  # 198.18.0.1: this machine, and the proxy
PROXY_PORT = 3128
#: The stand-in NVIDIA container toolkit repository (lab/toolkit.py), on the public bridge.
TOOLKIT_PORT = 8770
PUBLIC_BRIDGE = "gfpub0"
PRIVATE_BRIDGE = "gfprv0"
NETNS_PREFIX = "gpufab-"
PUBLIC_NIC = "eth0"
#: Private NIC names of real rented nodes: each host gets a different one.
PRIVATE_NICS = ("enp27s0f0np0", "ens14np0", "enp157s0f0np0", "ens2f1np1", "enp65s0f0", "eno8303")
#: A sudo-with-password user on every host, for tests of sudo prompts.
SUDO_USER = "gpu"
SUDO_PASSWORD = "gpufab-lab"
MAX_NODES = 200

DEFAULT_CACHE = "/var/cache/gpufab/lab"
DEFAULT_STATE = "/var/lib/gpufab/lab"


@dataclass(frozen=True)
class LabHost:
    index: int
    name: str
    netns: str
    public_ip: str
    private_ip: str
    private_nic: str
    host_pub_veth: str
    host_prv_veth: str

    @property
    def state_dir_name(self) -> str:
        return self.name


def private_nic_name(index: int) -> str:
    if index <= len(PRIVATE_NICS):
        return PRIVATE_NICS[index - 1]
    return f"enp{index}s0"


def plan_hosts(count: int) -> List[LabHost]:
    if not 1 <= count <= MAX_NODES:
        raise InputError(f"lab size must be between 1 and {MAX_NODES}, got {count}", path="--nodes")
    hosts = []
    for i in range(1, count + 1):
        hosts.append(
            LabHost(
                index=i,
                name=f"node{i}",
                netns=f"{NETNS_PREFIX}node{i}",
                public_ip=str(PUBLIC_NET.network_address + 10 + i),
                private_ip=str(PRIVATE_NET.network_address + 10 + i),
                private_nic=private_nic_name(i),
                host_pub_veth=f"gfpub{i}",
                host_prv_veth=f"gfprv{i}",
            )
        )
    return hosts


def recipe_id(mirror: str) -> str:
    """Identity of the base image: a change of recipe means a new cached base."""
    text = "\n".join([SUITE, mirror, RECIPE_VERSION, *PACKAGES, *TRAINING_PACKAGES, base_files_digest()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_files_digest() -> str:
    return hashlib.sha256(repr(sorted(base_files().items())).encode()).hexdigest()


def base_files() -> Dict[str, str]:
    """Files written into the base image once (path inside the image -> content)."""
    proxy = f"http://{BRIDGE_IP}:{PROXY_PORT}"
    return {
        # No resolver is reachable from the hosts: an empty resolv.conf makes
        # lookups fail at once instead of after 10-20 s (lab-notes, DNS trap).
        "/etc/resolv.conf": "",
        "/etc/apt/apt.conf.d/01gpufab-lab-proxy": (
            f'Acquire::http::Proxy "{proxy}";\nAcquire::https::Proxy "{proxy}";\n'
        ),
        "/etc/pip.conf": f"[global]\nproxy = {proxy}\ncert = /etc/ssl/certs/ca-certificates.crt\n",
        "/etc/ssh/sshd_config.d/gpufab-lab.conf": (
            "UseDNS no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "MaxStartups 256:30:512\nMaxSessions 64\n"
        ),
        "/etc/sudoers.d/gpufab-lab": f"{SUDO_USER} ALL=(ALL:ALL) ALL\n",
    }


def base_setup_script(root: str = "") -> str:
    """Run inside the base with chroot, once, after debootstrap (`root` is the image's own '/' there)."""
    return render("lab/base-setup.sh.j2", root=root, sudo_user=SUDO_USER, sudo_password=SUDO_PASSWORD)


def hosts_file(host: LabHost, hosts: Sequence[LabHost]) -> str:
    """As Debian and Ubuntu write it: the host's own name only. The other nodes'
    names are mesh.setup's to add (there is no DNS here, and lookups of unknown
    names fail at once: resolv.conf is empty)."""
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}", "::1\tlocalhost ip6-localhost ip6-loopback"]
    return "\n".join(lines) + "\n"


def host_files(host: LabHost, hosts: Sequence[LabHost], authorized_key: str, machine_id: str) -> Dict[str, str]:
    """Files written into a host's own layer at first boot."""
    return {
        # nspawn mounts the cgroup v1 controllers read-only (this VM has no cgroup2-only layout to give): runc
        # could not make a container's cgroup. Made writable (a bind remount) before dockerd starts, as on a
        # real machine; each host's containers sit under its own cgroup namespace root.
        "/etc/systemd/system/docker.service.d/10-lab-cgroups.conf": render("lab/docker-cgroups.conf.j2"),
        "/etc/hostname": f"{host.name}\n",
        "/etc/hosts": hosts_file(host, hosts),
        "/etc/machine-id": f"{machine_id}\n",
        "/root/.ssh/authorized_keys": authorized_key,
        f"/home/{SUDO_USER}/.ssh/authorized_keys": authorized_key,
    }


def netns_commands(host: LabHost) -> List[List[str]]:
    """Create a host's netns and NICs; configured from outside, before boot."""
    ns = ["ip", "netns", "exec", host.netns]
    return [
        ["ip", "netns", "add", host.netns],
        ["ip", "link", "add", host.host_pub_veth, "type", "veth", "peer", "name", PUBLIC_NIC, "netns", host.netns],
        ["ip", "link", "add", host.host_prv_veth, "type", "veth", "peer", "name", host.private_nic, "netns", host.netns],
        ["ip", "link", "set", host.host_pub_veth, "master", PUBLIC_BRIDGE, "up"],
        ["ip", "link", "set", host.host_prv_veth, "master", PRIVATE_BRIDGE, "up"],
        ns + ["ip", "link", "set", "lo", "up"],
        ns + ["ip", "addr", "add", f"{host.public_ip}/{PUBLIC_NET.prefixlen}", "dev", PUBLIC_NIC],
        ns + ["ip", "link", "set", PUBLIC_NIC, "up"],
        ns + ["ip", "addr", "add", f"{host.private_ip}/{PRIVATE_NET.prefixlen}", "dev", host.private_nic],
        ns + ["ip", "link", "set", host.private_nic, "up"],
        # dockerd refuses to start without forwarding (lab-notes). No default
        # route is set: nothing from a host can leave this machine.
        ns + ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
    ]


def bridge_commands() -> List[List[str]]:
    return [
        ["ip", "link", "add", PUBLIC_BRIDGE, "type", "bridge"],
        ["ip", "addr", "add", f"{BRIDGE_IP}/{PUBLIC_NET.prefixlen}", "dev", PUBLIC_BRIDGE],
        ["ip", "link", "set", PUBLIC_BRIDGE, "up"],
        ["ip", "link", "add", PRIVATE_BRIDGE, "type", "bridge"],
        ["ip", "link", "set", PRIVATE_BRIDGE, "up"],
    ]


def nspawn_command(host: LabHost, root: str, docker_dir: str) -> List[str]:
    return [
        "systemd-nspawn", "-q", "-D", root, "-M", host.name, "--boot",
        "--register=no", "--keep-unit", "--capability=all",
        f"--network-namespace-path=/run/netns/{host.netns}",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no",
        f"--bind={docker_dir}:/var/lib/docker", "--bind=/dev/fuse",
        # runc gives each container a session keyring: nspawn's default filter refuses keyctl.
        "--system-call-filter=@keyring",
    ]


NSPAWN_ENV = {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}


def tinyproxy_config(pid_file: str, log_file: str) -> str:
    return "\n".join(
        [
            "# HTTP(S) proxy for the lab hosts: their only way to apt and pip.",
            f"Port {PROXY_PORT}",
            f"Listen {BRIDGE_IP}",
            "Timeout 600",
            "MaxClients 100",
            "Allow 198.18.0.0/15",
            f"PidFile \"{pid_file}\"",
            f"LogFile \"{log_file}\"",
            "LogLevel Warning",
            "ConnectPort 443",
            "ConnectPort 80",
            "",
        ]
    )


def lab_inventory(hosts: Sequence[LabHost], key: str, known_hosts: str,
                  gpus: Optional[Dict[str, str]] = None, toolkit_fingerprint: str = "") -> str:
    """The lab's inventory; `gpus`: host -> GPU profile (lab/gpu.py), whose nodes train with the stand-in python."""
    gpus = gpus or {}
    lines = [
        "# The local lab, written by `inv lab.up`; removed by `inv lab.down`.",
        "ssh:",
        "  user: root",
        "  port: 22",
        f"  key: {key}",
        f"  known_hosts: {known_hosts}",
        "vars:",
        "  # What this VM allows: no hard nofile above 20000 (no CAP_SYS_RESOURCE),",
        "  # and Docker's own apt repository is out of reach (Debian's docker.io is not).",
        "  nofile: 16384",
        "  docker_source: distro",
        "  # The lab's addresses are in 198.18.0.0/15 (benchmarking, RFC 2544): private here.",
        "  private_ranges: [198.18.0.0/15]",
    ]
    if gpus:
        lines += [
            "  # GPU-shaped hosts (inv lab.up --gpus): NVIDIA's container toolkit from the lab's stand-in",
            "  # repository, and the all-reduce on Gloo (no GPU, CUDA or NCCL behind the stand-ins).",
            f"  nvidia_container_repo: http://{BRIDGE_IP}:{TOOLKIT_PORT}",
            f"  nvidia_container_key_url: http://{BRIDGE_IP}:{TOOLKIT_PORT}/gpgkey",
            f"  nvidia_container_key_fingerprint: {toolkit_fingerprint}",
            "  allreduce_backend: gloo",
        ]
    lines.append("nodes:")
    for i, h in enumerate(hosts):
        lines += [
            f"  - name: {h.name}",
            f"    public: {h.public_ip}",
            f"    private: {h.private_ip}",
            f"    role: {'head' if i == 0 else 'worker'}",
        ]
        if h.name in gpus:
            lines += [f"    # GPU profile {gpus[h.name]}: the training python whose torch.cuda answers as its GPUs do.",
                      "    vars: {train_python: /usr/local/bin/python-gpu}"]
    return "\n".join(lines) + "\n"


def apt_mirror(sources_text: str) -> str:
    """The Debian mirror this machine already uses (lab-notes: that one works)."""
    for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", sources_text, re.M):
        uri = match.group(1)
        if "security" not in uri and uri.startswith("http"):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


@dataclass(frozen=True)
class LabPaths:
    cache: str
    state: str

    @classmethod
    def from_env(cls) -> "LabPaths":
        return cls(
            cache=os.environ.get("GPUFAB_LAB_CACHE", DEFAULT_CACHE),
            state=os.environ.get("GPUFAB_LAB_STATE", DEFAULT_STATE),
        )

    def base(self, rid: str) -> str:
        return os.path.join(self.cache, f"base-{rid}")

    def host(self, host: LabHost, *parts: str) -> str:
        return os.path.join(self.state, host.state_dir_name, *parts)

    @property
    def key(self) -> str:
        return os.path.join(self.state, "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.state, "known_hosts")
