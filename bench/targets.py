"""N SSH targets on this machine, for benchmarks that need no real cluster.

One extra sshd on its own port answers on N local addresses in
198.18.64.0/22 (RFC 2544's benchmarking range), put on one end of a veth
pair (this kernel has no `dummy` driver). Every tool under test connects to
those addresses as a throw-away user whose shell is /bin/sh, so no login
script (root's .bashrc runs `pyenv init` here, ~80 ms a command) is timed.
`Targets` builds all of it and removes all of it, even when a run fails.

The planning functions (addresses, config and inventory texts) are pure so
the unit tests can check them without root.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

NETWORK = ipaddress.ip_network("198.18.64.0/22")
PORT = 2222
USER = "gpufab-bench"
VETH = "gfbench0"
VETH_PEER = "gfbench1"
STATE = Path(os.environ.get("GPUFAB_BENCH_STATE", "/run/gpufab-bench"))


def addresses(count: int) -> List[str]:
    """The first `count` host addresses of the bench network."""
    hosts = NETWORK.hosts()
    out = [str(next(hosts)) for _ in range(min(count, NETWORK.num_addresses - 2))]
    if len(out) < count:
        raise ValueError(f"at most {NETWORK.num_addresses - 2} targets fit in {NETWORK}")
    return out


def sshd_config(state: Path, port: int = PORT, user: str = USER) -> str:
    """An sshd for benchmarks: key-only, one user, only from the bench network.

    It listens on every address (sshd takes at most 16 ListenAddress lines),
    so AllowUsers limits logins to the bench user coming from the bench
    network; MaxStartups is raised so that 512 simultaneous handshakes are
    not dropped by sshd's default 10:30:100 early-drop.
    """
    return "\n".join([
        f"Port {port}",
        "ListenAddress 0.0.0.0",
        f"HostKey {state / 'host_ed25519'}",
        f"PidFile {state / 'sshd.pid'}",
        f"AuthorizedKeysFile {state / 'authorized_keys'}",
        f"AllowUsers {user}@{NETWORK}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        "PermitRootLogin no",
        "MaxStartups 4096",
        "MaxSessions 64",
        "LoginGraceTime 60",
        "LogLevel ERROR",
        "Subsystem sftp internal-sftp",
        "",
    ])


def known_hosts(hosts: Sequence[str], host_key: str, port: int = PORT) -> str:
    """One line per target: every tool checks the one host key."""
    return "".join(f"[{h}]:{port} {host_key}\n" for h in hosts)


def gpufab_inventory(hosts: Sequence[str], key: str, known: str, port: int = PORT, user: str = USER) -> str:
    lines = ["# bench targets (bench/targets.py); removed after the run", "ssh:",
             f"  user: {user}", f"  port: {port}", f"  key: {key}", f"  known_hosts: {known}", "nodes:"]
    for i, h in enumerate(hosts):
        lines += [f"  - name: t{i}", f"    public: {h}", f"    role: {'head' if i == 0 else 'worker'}"]
    return "\n".join(lines) + "\n"


def ansible_inventory(hosts: Sequence[str], key: str, port: int = PORT, user: str = USER) -> str:
    return "\n".join(
        ["[targets]", *hosts, "", "[targets:vars]", f"ansible_port={port}", f"ansible_user={user}",
         f"ansible_ssh_private_key_file={key}", ""])


def pyinfra_inventory(hosts: Sequence[str], key: str, known: str, port: int = PORT, user: str = USER) -> str:
    data = {"ssh_port": port, "ssh_user": user, "ssh_key": key,
            "ssh_known_hosts_file": known, "ssh_strict_host_key_checking": "yes"}
    return f"targets = [(h, {data!r}) for h in {list(hosts)!r}]\n"


@dataclass
class Targets:
    """Up to `count` SSH targets; `with Targets(512) as t:` then `t.files(n)`."""

    count: int
    state: Path = STATE
    port: int = PORT
    hosts: List[str] = field(default_factory=list)
    _sshd: Optional[subprocess.Popen] = None

    @property
    def key(self) -> str:
        return str(self.state / "client_ed25519")

    @property
    def known_hosts(self) -> str:
        return str(self.state / "known_hosts")

    def __enter__(self) -> "Targets":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        self.down()  # leftovers of an interrupted run
        self.hosts = addresses(self.count)
        self.state.mkdir(mode=0o755, parents=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        os.chmod(self.state, 0o755)  # sshd reads authorized_keys as the bench user
        for name in ("host_ed25519", "client_ed25519"):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpufab-bench", "-f", str(self.state / name))
        (self.state / "authorized_keys").write_text((self.state / "client_ed25519.pub").read_text())
        host_key = " ".join((self.state / "host_ed25519.pub").read_text().split()[:2])
        (self.state / "known_hosts").write_text(known_hosts(self.hosts, host_key, self.port))
        (self.state / "sshd_config").write_text(sshd_config(self.state, self.port))
        _run("useradd", "--system", "--shell", "/bin/sh", "--home-dir", str(self.state / "home"),
             "--create-home", USER)
        _run("usermod", "-p", "*", USER)  # no password, but not locked (sshd refuses locked accounts)
        _run("ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER)
        batch = "".join(f"address add {h}/32 dev {VETH}\n" for h in self.hosts)
        batch += f"link set {VETH} up\nlink set {VETH_PEER} up\n"
        subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
        self._sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(self.state / "sshd_config")],
                                      start_new_session=True)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._sshd is not None and self._sshd.poll() is not None:
                raise RuntimeError(f"bench sshd exited with {self._sshd.returncode}")
            try:
                with socket.create_connection((self.hosts[0], self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bench sshd did not start listening")

    def down(self) -> None:
        """Remove everything `up` made; safe to call on a half-built or clean machine."""
        if self._sshd is not None:
            os.killpg(self._sshd.pid, signal.SIGTERM)
            self._sshd.wait(timeout=10)
            self._sshd = None
        pid_file = self.state / "sshd.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        # sessions still open belong to the bench user; end them before removing it
        subprocess.run(["pkill", "-u", USER], capture_output=True)
        subprocess.run(["ip", "link", "del", VETH], capture_output=True)
        subprocess.run(["userdel", USER], capture_output=True)
        shutil.rmtree(self.state, ignore_errors=True)

    def files(self, n: int) -> Dict[str, str]:
        """Inventory files for the first `n` targets, in each tool's format."""
        hosts = self.hosts[:n]
        out = {}
        for kind, name, text in (
            ("hosts", f"hosts-{n}.txt", "\n".join(hosts) + "\n"),
            ("gpufab", f"gpufab-{n}.yaml", gpufab_inventory(hosts, self.key, self.known_hosts, self.port)),
            ("ansible", f"ansible-{n}.ini", ansible_inventory(hosts, self.key, self.port)),
            ("pyinfra", f"pyinfra_{n}.py", pyinfra_inventory(hosts, self.key, self.known_hosts, self.port)),
        ):
            (self.state / name).write_text(text)
            out[kind] = str(self.state / name)
        return out


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)
