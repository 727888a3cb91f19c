"""The one network seam: SSH connections to nodes, one per host per run.

Fabric's `Connection` is kept (so `-i`, `--prompt-for-sudo-password` and
~/.ssh/config reach every host through `config=c.config`), with three things
changed that matter for a cluster tool:

- host keys are checked against known_hosts and unknown ones accepted and
  recorded (OpenSSH's `accept-new`), instead of Fabric's silent AutoAddPolicy
  that checks nothing;
- TCP_NODELAY is set on the socket before the handshake: paramiko leaves Nagle
  on, which costs tens of milliseconds on every command of a warm connection;
- connect, banner and auth timeouts all follow one setting, so a dead or hung
  host fails within it instead of hanging the run;
- a host that dies while connected (powered off mid-step) is noticed within
  `dead_after` seconds: SSH keepalives keep data in flight and the kernel's
  TCP_USER_TIMEOUT drops the link when the peer stops acknowledging it,
  instead of TCP retrying for a quarter of an hour.
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import io
import logging
import os
import re
import socket
import stat
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from fabric import Config, Connection
from fabric.runners import Remote as FabricRemote
from paramiko import HostKeys, MissingHostKeyPolicy, SSHConfig
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.ssh_exception import ConfigParseError, SSHException

from .cancel import Tags, end_command, tagged
from .errors import InputError, Interrupted
from .inventory import Inventory, Node
from .localfs import read_text
from .settings import check_gpufab_section, fabric_timeout, gpufab_setting
from .declared import CLUSTER, CONFIG, NODE, POSITIVE, TEXT, Setting, declare, whole

DEFAULT_CONNECT_TIMEOUT = 10
#: Hosts worked on at once (ThreadingGroup has no bound; this does).
DEFAULT_WORKERS = 32
#: Bounds when the user set no command timeout: a setup step's command (an apt
#: install, a venv) and a read of facts (a hung `nvidia-smi` is a finding, not a hang).
#: What the user runs by hand (`exec`, `launch`) stays unbounded unless asked.
DEFAULT_STEP_TIMEOUT = 1800
FACT_TIMEOUT = 60
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
#: Seconds without an answer from a connected host before its link is dropped.
DEFAULT_DEAD_AFTER = 30
#: Seconds between SSH keepalives (they give TCP_USER_TIMEOUT data to time out on).
KEEPALIVE_INTERVAL = 5

_KNOWN_HOSTS_LOCK = threading.Lock()

# Paramiko logs transport errors (e.g. on closing a connection whose auth
# failed) through the root logger's last-resort handler, straight onto the
# user's terminal; every failure is already reported in the host's result.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class KnownHosts(HostKeys):
    """known_hosts as OpenSSH reads it: plain keys, `@revoked` keys, `@cert-authority` patterns.

    Paramiko's own `load` raises on the first line it cannot parse (a valid
    `@cert-authority` or `@revoked` line, bad base64) after the keys before it
    were taken: a caller that kept the half-filled object then accepted any
    key for every host listed after that line. Here the file is read whole
    or refused, naming the line.
    """

    def __init__(self) -> None:
        super().__init__()
        #: Key blobs OpenSSH would refuse whatever host shows them.
        self.revoked: set = set()
        #: (line, host patterns) of `@cert-authority` lines: hosts whose keys only a CA vouches for.
        self.authorities: List[Tuple[int, List[str]]] = []

    @classmethod
    def read(cls, path: str) -> "KnownHosts":
        found = cls()
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InputError(f"cannot read known_hosts: {exc.strerror}", path=path) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("known_hosts is not text (UTF-8)", path=path) from None
        for lineno, raw in enumerate(text.splitlines(), 1):
            found._take(raw.strip(), lineno, path)
        found._entries = [e for e in found._entries if e.key.asbytes() not in found.revoked]
        return found

    def _take(self, line: str, lineno: int, path: str) -> None:
        if not line or line.startswith("#"):
            return
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            if marker not in ("@revoked", "@cert-authority"):
                raise InputError(f"unknown marker {marker!r} (OpenSSH knows @revoked and @cert-authority)",
                                 path=path, line=lineno)
            line = line.strip()
        try:
            entry = HostKeyEntry.from_line(line, lineno)
        except (SSHException, InvalidHostKey, ValueError, TypeError):
            raise InputError("a host key line paramiko cannot read (bad base64 or key data); fix or remove it",
                             path=path, line=lineno) from None
        if marker == "@cert-authority":
            self.authorities.append((lineno, line.split()[0].split(",")))
        elif entry is None:  # a key type paramiko does not know, or too few fields: OpenSSH skips it too
            return
        elif marker == "@revoked":
            self.revoked.add(entry.key.asbytes())
        else:
            self._entries.append(entry)

    def vouched_by_authority(self, hostname: str) -> Optional[int]:
        """The line of an `@cert-authority` entry whose patterns take `hostname` (gpufab checks no certificates)."""
        for lineno, patterns in self.authorities:
            if any(p.startswith("!") and fnmatch.fnmatch(hostname, p[1:]) for p in patterns):
                continue
            if any(not p.startswith("!") and fnmatch.fnmatch(hostname, p) for p in patterns):
                return lineno
        return None


class AcceptNewPolicy(MissingHostKeyPolicy):
    """Record a host key seen for the first time; a changed key still fails.

    Paramiko itself raises BadHostKeyException when a known host offers a
    different key; this policy is only asked about hosts not in the file. A
    revoked key is never recorded, nor a first key for a host that
    known_hosts trusts through a certificate authority (its CA is the pin,
    and gpufab does not check certificates).
    """

    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        known = client.get_host_keys()
        if isinstance(known, KnownHosts):
            if key.asbytes() in known.revoked:
                raise SSHException(f"{hostname} shows a host key marked @revoked in {self.known_hosts}")
            line = known.vouched_by_authority(hostname)
            if line is not None:
                raise SSHException(f"{self.known_hosts}:{line} trusts {hostname} through a @cert-authority line, "
                                   "which gpufab cannot check: add the host's own key to known_hosts")
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _KNOWN_HOSTS_LOCK:
            client.get_host_keys().add(hostname, key.get_name(), key)
            directory = os.path.dirname(self.known_hosts)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(line)


class TimedRemote(FabricRemote):
    """Fabric's remote runner: timeouts always reported as such, no polling sleep.

    Invoke calls a command timed out only once its timer thread has ended,
    but that thread is still inside `kill()` (closing the channel) when the
    command returns; under load the run then looks like a plain failure with
    exit code -1 instead of raising CommandTimedOut.
    """

    killed_by_timer = False
    #: This command's tag on the node (see core.cancel).
    tag: Optional[str] = None

    def send_start_message(self, command: str) -> None:
        conn = self.context
        if conn.stopping is not None and conn.stopping.is_set():
            raise Interrupted()
        self.tag = conn.tags.next() if conn.tags is not None else None
        super().send_start_message(tagged(command, self.tag) if self.tag else command)

    def kill(self) -> None:
        """The timeout: give up on the command here, and end it on the node too."""
        self.killed_by_timer = True
        conn = self.context if self.tag else None
        if conn is not None and conn.is_connected:
            # First on the node: once its command ends, the caller may close the connection.
            end_command(conn.transport, self.tag, is_root=conn.user == "root", password=conn.known_password())
        try:
            super().kill()
        except (EOFError, OSError):  # the connection was closed meanwhile: nothing left to close
            pass

    @property
    def timed_out(self) -> bool:
        return self.killed_by_timer or super().timed_out

    def wait(self) -> None:
        """Return as soon as the exit status arrives.

        Invoke's loop sleeps `input_sleep` (10 ms) between polls, ~5 ms added
        to every command on a warm connection; paramiko sets `status_event`
        on exit status or close, so block on that instead (with the same
        period, to still notice a dead IO thread or a Ctrl-C).
        """
        while not (self.process_is_finished or self.has_dead_threads):
            self.channel.status_event.wait(self.input_sleep)


class NodeConnection(Connection):
    """A Fabric Connection with TCP_NODELAY and checked host keys."""

    # Declared on the class because Connection is an Invoke DataProxy: an
    # attribute it does not already have is stored in the config instead
    # (a full re-merge), which a Session shares between all its connections:
    # threads raced on it, and every connection saw the last host's values.
    node: Optional[Node] = None
    dead_after: float = DEFAULT_DEAD_AFTER
    known_hosts: str = ""
    #: The Session's Ctrl-C flag: once set, the connection is not opened again.
    stopping: Optional[threading.Event] = None
    #: The Session's command tags (core.cancel), so that its commands can be ended on the node.
    tags: Optional[Tags] = None
    #: The sudo password when the Session already has it (never asks).
    known_password: Callable[[], Optional[str]] = staticmethod(lambda: None)
    # Fabric's own __init__ sets this one without declaring it: each new
    # connection re-merged the shared config while other threads read it.
    inline_ssh_env: Any = None

    def __init__(self, *args: Any, known_hosts: str, node: Optional[Node] = None,
                 host_keys: HostKeys, dead_after: float = DEFAULT_DEAD_AFTER,
                 stopping: Optional[threading.Event] = None, tags: Optional[Tags] = None,
                 known_password: Optional[Callable[[], Optional[str]]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.node = node
        self.stopping = stopping
        self.tags = tags
        if known_password is not None:
            self.known_password = known_password
        self.dead_after = dead_after
        self.known_hosts = known_hosts
        # A Session's connections share one parsed known_hosts: parsing it
        # per connection costs O(hosts²) at hundreds of hosts. Paramiko has
        # no public setter for the client's host keys.
        self.client._host_keys = host_keys
        self.client.set_missing_host_key_policy(AcceptNewPolicy(known_hosts))

    def open(self) -> Any:
        if self.is_connected:
            return None
        if self.stopping is not None and self.stopping.is_set():
            raise Interrupted()
        timeout = self.connect_timeout
        if timeout:
            self.connect_kwargs.setdefault("banner_timeout", timeout)
            self.connect_kwargs.setdefault("auth_timeout", timeout)
        if self.gateway:
            _check_hops(self.gateway, self.client.get_host_keys(), self.known_hosts)
            result = super().open()
            _tune(self.transport.sock, self.dead_after)
        else:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            _tune(sock, self.dead_after)
            self.connect_kwargs["sock"] = sock
            try:
                result = super().open()
            except BaseException:
                sock.close()
                raise
            finally:
                self.connect_kwargs.pop("sock", None)
        self.transport.set_keepalive(KEEPALIVE_INTERVAL)
        return result


def _end_run(conn: NodeConnection, prefix: str, password: Optional[str], within: float) -> None:
    try:
        end_command(conn.transport, prefix, is_root=conn.user == "root", password=password, timeout=within)
    except Exception:  # noqa: BLE001 - best effort: the connection closes next anyway
        pass


def _check_hops(gateway: Any, host_keys: HostKeys, known_hosts: str) -> None:
    """ProxyJump hops (plain Fabric connections) check keys against the run's known_hosts too."""
    while isinstance(gateway, Connection):
        gateway.client._host_keys = host_keys
        gateway.client.set_missing_host_key_policy(AcceptNewPolicy(known_hosts))
        gateway = gateway.gateway


def _tune(sock: Any, dead_after: float) -> None:
    """TCP_NODELAY, and TCP_USER_TIMEOUT where the platform has it."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if user_timeout is not None and dead_after:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, int(dead_after * 1000))
    except (OSError, AttributeError):  # a ProxyCommand pipe has no TCP options
        pass


def check_ssh_configs(config: Config) -> None:
    """~/.ssh/config (and the system's), or the one asked for, checked before Fabric reads it.

    Fabric skips a path that is not a file, silently: the user's aliases and
    ProxyJump lines would then not apply, and hosts look unreachable.
    """
    runtime = config._runtime_ssh_path or config.get("ssh_config_path")
    if not config.load_ssh_configs and not runtime:
        return
    paths = [runtime] if runtime else [config._user_ssh_path, config._system_ssh_path]
    check_ssh_config_paths(paths, given=bool(runtime))


#: What Invoke's `-F`/`--list-format` takes; under `fab`, `-F` is that, not ssh's config flag.
LIST_FORMATS = ("flat", "nested", "json")


def fab_ssh_config_paths(argv: Sequence[str]) -> Tuple[List[str], bool]:
    """The ssh config files `fab` opens after loading this collection, and whether they were asked for.

    `-S`'s (which must then exist), or the user's and the system's. Fab reads
    them only after the collection is imported, and a bad one ends there in a
    traceback; naming it from the import is the one seam gpufab has. `-F FILE`,
    ssh's flag, is Invoke's list format under fab: the file would be ignored.
    """
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        given = _flag_value(argv, i, "-S", "--ssh-config")
        if given is not None:
            return [given], True
        listed = _flag_value(argv, i, "-F", "--list-format")
        if listed is not None and listed not in LIST_FORMATS:
            raise InputError(f"{listed!r} is not a list format ({', '.join(LIST_FORMATS)}): under fab, -F is "
                             "--list-format; give an ssh config with -S/--ssh-config", path="-F")
    defaults = Config(lazy=True)
    return [defaults._user_ssh_path, defaults._system_ssh_path], False


def _flag_value(argv: Sequence[str], i: int, short: str, long: str) -> Optional[str]:
    """The value of `short`/`long` if `argv[i]` gives it (`-S x`, `-Sx`, `--ssh-config=x`, `--ssh-config x`)."""
    arg = argv[i]
    if arg in (short, long):
        return argv[i + 1] if i + 1 < len(argv) else None
    if arg.startswith(long + "="):
        return arg.split("=", 1)[1]
    if arg.startswith(short) and len(arg) > 2:
        return arg[2:]
    return None


#: OpenSSH's own bound on nested Include files (READCONF_MAX_DEPTH).
MAX_INCLUDE_DEPTH = 16
#: An included "config" larger than this is not one (`Include /proc/kcore`): not read to look for more Includes.
MAX_INCLUDED_BYTES = 1 << 20
INCLUDE_RE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(.+?)\s*$", re.IGNORECASE)


def check_ssh_config_paths(paths: Sequence[str], given: bool = False) -> None:
    """Each ssh config Fabric will read, read as paramiko will: a bad one is one line naming it.

    `given`: named on the command line, so one that is not there is named too.
    """
    for path in (os.path.expanduser(p) for p in paths if p):
        text = _ssh_config_text(path, given)
        if text is not None:
            _check_parses(text, path)
            _check_includes(text, path, _include_base(path), (os.path.realpath(path),))


def _ssh_config_text(path: str, given: bool) -> Optional[str]:
    """The file's text; None when there is none (and none was asked for). Never opens a FIFO or a device."""
    if os.path.isdir(path):
        raise InputError("ssh config is a directory, not a file", path=path)
    if not os.path.exists(path):
        if given:
            raise InputError("ssh config not found", path=path)
        return None
    if not os.path.isfile(path):
        raise InputError("ssh config is not a regular file (Fabric reads only those)", path=path)
    return read_text(path, "ssh config")


def _check_parses(text: str, path: str) -> None:
    """paramiko's own parser over the text, line by line: its ConfigParseError (`Host` alone) is named with its line."""
    numbered = list(enumerate(io.StringIO(text, newline=None), start=1))
    at = [0]

    def lines() -> Iterator[str]:
        for lineno, line in numbered:
            at[0] = lineno
            yield line

    try:
        SSHConfig().parse(lines())
    except (ConfigParseError, ValueError) as exc:  # ValueError: shlex on an unclosed quote after Match
        raise InputError(f"not a valid ssh config line: {exc}", path=path, line=at[0]) from None


def _include_base(path: str) -> str:
    """Where OpenSSH resolves a relative Include: /etc/ssh for the system's config, ~/.ssh for the user's."""
    return "/etc/ssh" if os.path.abspath(path).startswith("/etc/ssh/") else os.path.expanduser("~/.ssh")


def _check_includes(text: str, path: str, base: str, chain: Tuple[str, ...]) -> None:
    """An Include loop (a file that includes itself, at any depth) is named: ssh refuses it, paramiko ignores it.

    Included files are only followed here: paramiko never reads them, so one that
    cannot be read is left to ssh to report.
    """
    for lineno, line in enumerate(io.StringIO(text, newline=None), start=1):
        found = INCLUDE_RE.match(line)
        if not found:
            continue
        for pattern in found.group(1).split():
            for included in sorted(glob.glob(os.path.join(base, os.path.expanduser(pattern.strip('"'))))):
                real = os.path.realpath(included)
                if real in chain:
                    raise InputError(f"Include loop: {' includes '.join(chain + (real,))}", path=path, line=lineno)
                if len(chain) >= MAX_INCLUDE_DEPTH:
                    raise InputError(f"Include nested more than {MAX_INCLUDE_DEPTH} files deep", path=path, line=lineno)
                try:
                    inner = read_text(real) if os.path.isfile(real) and os.path.getsize(real) <= MAX_INCLUDED_BYTES else None
                except (InputError, OSError):
                    inner = None
                if inner is not None:
                    _check_includes(inner, included, base, chain + (real,))


def check_local_files(keys: Sequence[str], known_hosts: str) -> None:
    """The controller's own SSH files, named when unusable, before any host is tried.

    Otherwise each of them shows up as every host being "unreachable" or refusing
    authentication, and the user looks for the fault on the wrong side.
    """
    for key in keys:
        try:
            st = os.stat(key)
        except FileNotFoundError:
            raise InputError("SSH private key not found", path=key) from None
        except OSError as exc:
            raise InputError(f"cannot read SSH private key: {exc.strerror}", path=key) from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError("SSH private key is not a file", path=key)
        if st.st_mode & 0o077:
            raise InputError(f"SSH private key is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                             f"ssh refuses such keys: chmod 600 {key}", path=key)
        if not os.access(key, os.R_OK):
            raise InputError("cannot read SSH private key: Permission denied", path=key)
    if os.path.lexists(known_hosts):
        if os.path.isdir(known_hosts):
            raise InputError("known_hosts is a directory, not a file", path=known_hosts)
        try:
            with open(known_hosts, "rb"):
                pass
        except OSError as exc:
            raise InputError(f"cannot read known_hosts: {exc.strerror}", path=known_hosts) from None


#: Node (or inventory) var naming a local file that holds that node's own sudo password.
PASSWORD_FILE_VAR = "sudo_password_file"


def read_node_passwords(inventory: Inventory) -> Dict[str, str]:
    """node -> its sudo password, from the local file its var `sudo_password_file` names (first line).

    Held to what ssh asks of a private key: a regular file that no one else
    can read. Read once, before any host is tried; never shown."""
    found: Dict[str, str] = {}
    cache: Dict[str, str] = {}
    for node in inventory.nodes:
        raw = node.vars.get(PASSWORD_FILE_VAR) or inventory.vars.get(PASSWORD_FILE_VAR)
        if not raw:
            continue
        path = os.path.expanduser(str(raw))
        if path not in cache:
            cache[path] = _read_password_file(path)
        found[node.name] = cache[path]
    return found


def _read_password_file(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError("sudo password file not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the sudo password file: {exc.strerror}", path=path) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InputError("the sudo password file is not a regular file", path=path)
        if st.st_mode & 0o077:
            raise InputError(f"the sudo password file can be read by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                             f"chmod 600 {path}", path=path)
        data = fh.read(4096)
    try:
        line = data.decode("utf-8").splitlines()[0] if data.strip() else ""
    except UnicodeDecodeError:
        raise InputError("the sudo password file is not text", path=path) from None
    if not line:
        raise InputError("the sudo password file is empty", path=path)
    return line


class Session:
    """The connections of one run: opened lazily, one per node, closed at the end.

    Every task of a run (and every step of `bootstrap`) goes through the same
    Session, so a host is connected to once however many commands it gets.
    """

    def __init__(
        self,
        inventory: Inventory,
        config: Any = None,
        *,
        connect_timeout: Optional[float] = None,
        command_timeout: Optional[float] = None,
        known_hosts: Optional[str] = None,
    ):
        self.inventory = inventory
        # Clone once: Fabric would otherwise turn an Invoke config into a
        # Fabric one for every host, and its key merging mutates shared dicts.
        if config is None:
            config = Config()
        elif not isinstance(config, Config):
            # An `inv` run: Invoke's config becomes Fabric's, which then reads
            # ~/.ssh/config as `fab` does (aliases, ProxyJump, IdentityFile).
            config = config.clone(into=Config)
            check_ssh_configs(config)
            config.load_ssh_config()
        config.runners.remote = TimedRemote
        self.config = config
        check_gpufab_section(config)
        # `fab -t N` lands in connect_kwargs.timeout, `timeouts.connect` in config.
        fabric_connect = fabric_timeout(config, "connect_kwargs", "timeout") or fabric_timeout(config, "timeouts", "connect")
        self.connect_timeout = connect_timeout or fabric_connect or gpufab_setting(
            config, "connect_timeout", DEFAULT_CONNECT_TIMEOUT
        )
        fabric_command = fabric_timeout(config, "timeouts", "command")
        self.command_timeout = command_timeout or fabric_command or gpufab_setting(config, "command_timeout")
        self.dead_after = float(gpufab_setting(config, "dead_after", DEFAULT_DEAD_AFTER))
        #: Hosts worked on at once by fan_out, unless a task says otherwise.
        self.workers = int(gpufab_setting(config, "workers", DEFAULT_WORKERS))
        self.known_hosts = os.path.expanduser(
            known_hosts or inventory.known_hosts or gpufab_setting(config, "known_hosts", DEFAULT_KNOWN_HOSTS)
        )
        check_ssh_configs(config)
        check_local_files(self._key_files(inventory), self.known_hosts)
        #: Per node, its own sudo password (var `sudo_password_file`), read before any host is tried.
        self._node_passwords: Dict[str, str] = read_node_passwords(inventory)
        self._host_keys: Optional[HostKeys] = None
        self.host_keys()  # a known_hosts that cannot be read whole stops the run here, before any host
        self._connections: Dict[str, NodeConnection] = {}
        self._lock = threading.Lock()
        self._sudo_lock = threading.Lock()
        self._sudo_asked = False
        self._sudo_password: Optional[str] = config.sudo.password
        #: Set by Ctrl-C (`interrupt`): no host starts another command.
        self.stopping = threading.Event()
        #: Every command of this run carries one of these on the node (core.cancel).
        self.tags = Tags()

    @property
    def step_timeout(self) -> float:
        return self.command_timeout or DEFAULT_STEP_TIMEOUT

    @property
    def fact_timeout(self) -> float:
        return min(self.command_timeout or FACT_TIMEOUT, FACT_TIMEOUT)

    def connection(self, node: Node) -> NodeConnection:
        with self._lock:
            conn = self._connections.get(node.name)
        if conn is None:
            # Built outside the lock: with hundreds of hosts starting at
            # once, building them one at a time under it was a queue.
            made = self._make(node)
            with self._lock:
                conn = self._connections.setdefault(node.name, made)
        return conn

    def fresh_connection(self, node: Node) -> NodeConnection:
        """A new connection, not shared: for what only a new login shows.

        Limits from pam_limits, group membership and the like are fixed when
        sshd opens the session; a check of "what the next login gets" must
        log in again. The caller closes it.
        """
        return self._make(node)

    def host_keys(self) -> HostKeys:
        """known_hosts, parsed once for the whole run (whole, or the run does not start)."""
        with _KNOWN_HOSTS_LOCK:
            if self._host_keys is None:
                self._host_keys = KnownHosts.read(self.known_hosts) if os.path.exists(self.known_hosts) \
                    else KnownHosts()
            return self._host_keys

    def _keys_for(self, node: Optional[Node] = None) -> List[str]:
        """`-i`/config key files, then the node's own (`key:` in the inventory)."""
        keys = (self.config.connect_kwargs or {}).get("key_filename") or []
        keys = [keys] if isinstance(keys, str) else list(keys)
        return keys + ([os.path.expanduser(node.key)] if node is not None and node.key else [])

    def _key_files(self, inventory: Inventory) -> List[str]:
        return self._keys_for() + sorted({os.path.expanduser(n.key) for n in inventory.nodes if n.key})

    def _make(self, node: Node) -> NodeConnection:
        connect_kwargs: Dict[str, Any] = dict(self.config.connect_kwargs or {})
        connect_kwargs.pop("timeout", None)  # given as connect_timeout instead
        keys = self._keys_for(node)
        if keys:
            connect_kwargs["key_filename"] = keys
        return NodeConnection(
            host=node.public,
            user=node.user,
            port=node.port,
            config=self.config,
            connect_timeout=self.connect_timeout,
            connect_kwargs=connect_kwargs,
            known_hosts=self.known_hosts,
            node=node,
            dead_after=self.dead_after,
            host_keys=self.host_keys(),
            stopping=self.stopping,
            tags=self.tags,
            known_password=lambda: self.known_password(node),
        )

    def release(self, node: Node) -> None:
        """Close a host's connection before the run ends, once nothing more will use it.

        For one-shot tasks (`exec`): the run's threads and sockets then stay
        bounded by the workers, not by the number of hosts.
        """
        with self._lock:
            conn = self._connections.pop(node.name, None)
        if conn is not None:
            conn.close()

    def known_password(self, node: Optional[Node] = None) -> Optional[str]:
        """The password already at hand for `node` (its own file's, or the one typed): never asks."""
        if node is not None and node.name in self._node_passwords:
            return self._node_passwords[node.name]
        return self._sudo_password

    def sudo_password(self, node: Optional[Node] = None) -> Optional[str]:
        """The sudo password for `node`: its own (var `sudo_password_file`), else the run's one, from
        `--prompt-for-sudo-password` or asked once.

        The run's one is sent to every host that asks for one (on sudo's stdin over that host's
        checked connection, never on a command line); a node with a password of its own gets only
        that. Asked only when a host turns out to need one, only on a terminal, and only once for
        the whole run whatever the number of hosts.
        """
        if node is not None and node.name in self._node_passwords:
            return self._node_passwords[node.name]
        with self._sudo_lock:
            if self._sudo_password is None and not self._sudo_asked and sys.stdin.isatty():
                self._sudo_asked = True
                # Kept here, not set into the shared config: setting a value there
                # re-merges the whole config while other hosts' threads read it.
                self._sudo_password = getpass.getpass("Sudo password (asked once for all hosts): ")
            return self._sudo_password

    def interrupt(self, within: float = 5.0) -> None:
        """Ctrl-C: no command started again; the run's commands ended on every node, then every connection closed.

        All hosts at once, each bounded: a host that does not answer is
        left after `within` seconds (its commands return as the link closes).
        """
        self.stopping.set()
        with self._lock:
            conns = [c for c in self._connections.values() if c.is_connected]
        enders = [threading.Thread(target=_end_run, args=(c, self.tags.prefix, self.known_password(c.node), within),
                                   daemon=True, name="gpufab-stop") for c in conns]
        for t in enders:
            t.start()
        deadline = time.monotonic() + within
        for t in enders:
            t.join(max(0.0, deadline - time.monotonic()))
        self.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections.values():
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing a broken link is best effort
                    pass
            self._connections.clear()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


DECLARED = declare(
    "core.connection",
    Setting("workers", "hosts worked on at once (threads of one run)", str(DEFAULT_WORKERS), (CONFIG,),
            kind=whole(1)),
    Setting("connect_timeout", "seconds an SSH connection may take to open", str(DEFAULT_CONNECT_TIMEOUT), (CONFIG,),
            kind=POSITIVE),
    Setting("command_timeout", "seconds one remote command may run, where its step sets no bound of its own",
            "the step's", (CONFIG,),
            kind=POSITIVE),
    Setting("dead_after", "seconds of SSH silence after which a host counts as gone", str(DEFAULT_DEAD_AFTER),
            (CONFIG,),
            kind=POSITIVE),
    Setting("known_hosts", "the known_hosts file that pins every host key", DEFAULT_KNOWN_HOSTS, (CONFIG,),
            kind=TEXT),
    Setting("sudo_password_file", "a file holding the login's sudo password (mode 600), for every node or one",
            "none (INVOKE_SUDO_PASSWORD, or a prompt)", (CLUSTER, NODE),
            kind=TEXT),
)
