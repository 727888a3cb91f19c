"""Doing things on one node over its (one, shared) connection.

Every setup step reads state with `read_state` (one round trip for all its
files), plans in pure code, then applies with `write_files` and `change`
(`run` is for commands that only look). In a dry run the same step code runs
with a Remote that records instead of applying: files it would write are
kept as diffs and seen by later reads, commands it would run are listed.
Commands that need root go through sudo only when the SSH user is not root,
wrapped in `sh -c` so that a whole pipeline, not just its first word, runs
as root. File content travels over SFTP, never on a command line, so that
secrets do not show up in `ps` on the node.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import shlex
import socket
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from invoke.exceptions import UnexpectedExit
from invoke.runners import Result

from . import packages as apt
from . import programs
from .cancel import tagged
from .connection import NodeConnection, Session
from .errors import ConnectionLost, HostError, Interrupted
from .facts import Fact, NodeFacts, T
from .files import BACKUP_DIR, FileChange, FileState, ManagedFile
from .inventory import Node

#: Prints, per path: `==gpufab-file <mode> <owner> <group> <path>` then the
#: file base64-encoded on one line, or `==gpufab-digest ...` then its sha256
#: (for paths given after `-d`), `==gpufab-link <path>` for a symlink (never
#: followed: root would read what someone else pointed it at), or
#: `==gpufab-missing <path>`. The read itself opens with O_NOFOLLOW|O_NONBLOCK
#: (`dd iflag=`): a file swapped for a link (or a FIFO) after the test is not
#: read through, nor waited on.
READ_SCRIPT = programs.text("read-files.sh")

#: Installs uploaded files: backup of the old version, then a new file made by
#: mktemp (unpredictable, never an existing path) in the target's directory,
#: checked against the digest of what gpufab sent, and renamed over the target
#: (which replaces a symlink rather than following it). In a directory that
#: its non-root owner can write (a home's ~/.ssh), every step runs as that
#: owner, so nothing planted there is ever followed by root. Secret files get
#: no backup: an old token must not outlive its replacement. $backup/.before
#: keeps the node's version from before gpufab's first write, once ($backup: BACKUP_DIR).
INSTALL_SCRIPT = programs.text("install-files.sh", backup=BACKUP_DIR)


def secret_env_prefix(path: str, digest: str) -> str:
    """Shell that loads an uploaded env file: a private copy made, checked against `digest`, loaded; both removed."""
    q = shlex.quote(path)
    return (f'e=$(mktemp) && head -c 65536 {q} > "$e"; rm -f {q}; '
            f'[ "$(sha256sum < "$e" | cut -d" " -f1)" = {digest} ] || '
            '{ rm -f "$e"; echo "gpufab: the environment file changed before it was read" >&2; exit 3; }; '
            '. "$e"; rm -f "$e"; ')


#: Printed before every command gpufab parses: what a chatty login rc prints comes before it.
MARKER = "==gpufab-output=="

#: $1 directory under $HOME, $2 name, $3 mode; the content on stdin. A whole new file, then renamed.
HOME_WRITE_SCRIPT = programs.text("home-write.sh")


def marked(command: str) -> str:
    return f"echo {MARKER}; {command}"


def after_marker(stdout: str) -> str:
    """The command's own output: whatever a login rc printed before the marker is dropped."""
    head, found, rest = stdout.partition(MARKER + "\n")
    return rest if found else stdout


def run_parsed(conn: NodeConnection, command: str, **opts: Any) -> Result:
    """`conn.run` for output gpufab parses (hidden, no local stdin): the login rc's chatter left out."""
    opts.setdefault("hide", True)
    opts.setdefault("in_stream", False)
    result = conn.run(marked(command), **opts)
    result.stdout = after_marker(result.stdout)
    return result


def parse_state(text: str) -> Dict[str, FileState]:
    """Parse READ_SCRIPT's output into a FileState per path."""
    found: Dict[str, FileState] = {}
    lines = iter(text.splitlines())
    for line in lines:
        tag, _, rest = line.partition(" ")
        if tag == "==gpufab-missing":
            found[rest] = FileState(rest, exists=False)
        elif tag == "==gpufab-link":  # present but not gpufab's file: replaced by a real one
            found[rest] = FileState(rest, exists=True)
        elif tag in ("==gpufab-file", "==gpufab-digest"):
            mode, owner, group, path = rest.split(" ", 3)
            body = next(lines, "")
            kind = dict(digest=body) if tag == "==gpufab-digest" else dict(
                content=base64.b64decode(body).decode("utf-8", errors="replace")
            )
            found[path] = FileState(path, True, mode=int(mode, 8), owner=owner, group=group, **kind)
    return found


class Remote:
    """One node, seen by a setup step: run commands, read and write files."""

    def __init__(
        self,
        conn: NodeConnection,
        node: Node,
        *,
        password: Callable[[], Optional[str]] = lambda: None,
        timeout: Optional[float] = None,
        session: Optional[Session] = None,
        dry_run: bool = False,
    ):
        self.conn = conn
        self.node = node
        self._password = password
        self.timeout = timeout
        self.session = session
        self.dry_run = dry_run
        #: Dry run: the file changes that were not applied (for their diffs).
        self.planned: List[FileChange] = []
        self._overlay: Dict[str, FileState] = {}
        #: The cluster's one download, once a run has made it (apt and Python installs take from it).
        self.peer: Optional[apt.Peer] = None
        #: Steps run side by side: one apt run at a time on this node (two `apt-get update`s at once
        #: fail on the lists lock, where dpkg's own lock would have made them wait).
        self.apt_lock = threading.RLock()
        #: The facts several steps read (GPUs, InfiniBand ports...): once for all the steps of a run.
        self.facts = NodeFacts()

    def fact(self, fact: Fact[T], *args: Any) -> T:
        """`fact` of this node: read the first time a step asks, then the same answer for every step."""
        return self.facts.get(fact, self, *args)

    @property
    def user(self) -> str:
        return self.conn.user

    @property
    def is_root(self) -> bool:
        return self.conn.user == "root"

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        warn: bool = False,
        timeout: Optional[float] = None,
        secret_env: Optional[Mapping[str, str]] = None,
    ) -> Result:
        """Run `command` (as root when `sudo`); hidden, no local stdin.

        `secret_env`: variables whose values must not be on a command line (an
        index URL with a token, a proxy with a password): they reach the
        command in a 0600 file, never in `ps` or sudo's log.
        """
        if secret_env:
            command = self._with_secret_env(secret_env) + command
        opts = dict(hide=True, warn=True, in_stream=False, timeout=timeout or self.timeout)
        if sudo and not self.is_root:
            result = self.conn.sudo(f"sh -c {shlex.quote(marked(command))}", password=self._password(), **opts)
            result.stdout = after_marker(result.stdout)
            prompt = self.conn.config.sudo.prompt
            result.stderr = result.stderr.replace(prompt, "")
        else:
            result = run_parsed(self.conn, command, **opts)
        if result.exited != 0 and self.conn.stopping is not None and self.conn.stopping.is_set():
            raise Interrupted()  # ended by Ctrl-C (core.cancel), whatever its exit code says
        if result.exited == -1 and not self.conn.is_connected:
            # Paramiko closes the channel without an exit status when the link drops.
            raise ConnectionLost("connection lost during a command (host powered off, rebooted or cut off?)")
        if result.exited != 0 and not warn:
            raise UnexpectedExit(result)
        return result

    def change(self, command: str, *, sudo: bool = True, warn: bool = False, timeout: Optional[float] = None,
               secret_env: Optional[Mapping[str, str]] = None) -> Result:
        """Run a command that changes the node; in a dry run, only note it."""
        if self.dry_run:
            return Result(command=command, exited=0, hide=("stdout", "stderr"))
        return self.run(command, sudo=sudo, warn=warn, timeout=timeout, secret_env=secret_env)

    def _with_secret_env(self, values: Mapping[str, str]) -> str:
        """A prefix that loads `values` from a file uploaded for this one command, then deletes it.

        The file is the SSH user's (0600, a new name): a process of that user
        could swap it before a root shell reads it, so the shell reads a copy
        of its own and loads it only when its digest is the one sent here.
        """
        body = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
        path = f"/tmp/.gpufab-env-{secrets.token_hex(8)}"
        self._upload(path, body)
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        return secret_env_prefix(path, digest)

    def script(self, body: str, *args: str, sudo: bool = False, warn: bool = False, timeout: Optional[float] = None) -> Result:
        """Run a shell script with positional arguments, each quoted."""
        command = "sh -c " + shlex.quote(body) + " gpufab " + " ".join(shlex.quote(a) for a in args)
        return self.run(command, sudo=sudo, warn=warn, timeout=timeout)

    def check(self, command: str, *, sudo: bool = False, timeout: Optional[float] = None) -> bool:
        """True when `command` exits 0."""
        return self.run(command, sudo=sudo, warn=True, timeout=timeout).exited == 0

    def read_state(self, files: Iterable[ManagedFile]) -> Dict[str, FileState]:
        """The current state of `files` on the node, in one round trip."""
        args: List[str] = []
        for f in files:
            args += ["-d", f.path] if f.secret else [f.path]
        return self.read_paths(args)

    def read_paths(self, args: Sequence[str]) -> Dict[str, FileState]:
        if not args:
            return {}
        found = parse_state(self.script(READ_SCRIPT, *args, sudo=True).stdout)
        found.update({p: state for p, state in self._overlay.items() if p in found})
        return found

    def read_text(self, path: str) -> Optional[str]:
        return self.read_paths([path])[path].content

    def write_files(self, changes: Sequence[FileChange]) -> List[str]:
        """Apply file changes atomically, old versions backed up; returns what was done."""
        if not changes:
            return []
        if self.dry_run:
            self.planned += changes
            for c in changes:
                f = c.file
                self._overlay[f.path] = FileState(f.path, True, None if f.secret else f.content, f.digest if f.secret else None,
                                                  f.mode, f.owner, f.group)
            return [c.describe() for c in changes]
        args: List[str] = []
        uploaded: List[str] = []
        try:
            for change in changes:
                f = change.file
                src = ""
                if change.kind != "perms":
                    src = f"/tmp/.gpufab-upload-{secrets.token_hex(8)}"
                    self._upload(src, f.content)
                    uploaded.append(src)
                args += [src, f.path, f"{f.mode:o}", f.owner, f.group, f.digest, "0" if f.secret else "1"]
            self.script(INSTALL_SCRIPT, *args, sudo=True)
        except Exception:
            if uploaded:
                self.run("rm -f " + " ".join(shlex.quote(p) for p in uploaded), warn=True)
            raise
        return [c.describe() for c in changes]

    def write_home_files(self, directory: str, files: Mapping[str, Tuple[str, int]]) -> List[str]:
        """Write `{name: (content, mode)}` into `~/<directory>` as the SSH user, each whole or not at all.

        For what the user's own jobs run (scripts, their variables): no root
        is involved, so nothing another user planted there can be followed
        by root, and the content never shows on a command line.
        """
        if self.dry_run or not files:
            return [f"wrote ~/{directory}/{name}" for name in files]
        self.run(f'mkdir -p -m 0700 "$HOME"/{shlex.quote(directory)}', timeout=30)
        for name, (content, mode) in files.items():
            self._pipe(f"sh -c {shlex.quote(HOME_WRITE_SCRIPT)} gpufab {shlex.quote(directory)} {shlex.quote(name)} "
                       f"{mode:o}", content, f"~/{directory}/{name}")
        return [f"wrote ~/{directory}/{name}" for name in files]

    def restore_previous(self, path: str, existed: bool) -> None:
        """Undo `write_files` for one file: its backup back in place, or the new file removed."""
        q = shlex.quote(path)
        self.change(f"cp -p {shlex.quote(BACKUP_DIR + path)} {q}" if existed else f"rm -f {q}", sudo=True, warn=True)

    def _upload(self, path: str, content: str) -> None:
        """Write a private (0600) file owned by the SSH user; created exclusively (O_EXCL: `set -C`)."""
        self._pipe(f"sh -c 'umask 077; set -C; cat > \"$1\"' gpufab {shlex.quote(path)}", content, path)

    def run_in_new_login(self, command: str) -> Result:
        """Run `command` over a new SSH connection: what the next login sees."""
        if self.session is None:
            raise RuntimeError("run_in_new_login needs the session")
        conn = self.session.fresh_connection(self.node)
        try:
            return run_parsed(conn, command, timeout=self.timeout)
        finally:
            conn.close()

    def _pipe(self, command: str, data: str, what: str, timeout: float = 120) -> None:
        """Run `command` as the SSH user with `data` on its stdin: file content that needs no SFTP.

        A login shell rc that prints (conda init, banners) breaks the SFTP
        subsystem ("Garbage packet received"), but only adds text to an exec
        channel's output, which is ignored here. The content is never on a
        command line, so it does not show in `ps`.
        """
        self.conn.open()
        channel = self.conn.transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            tags = self.conn.tags
            channel.exec_command(tagged(command, tags.next()) if tags is not None else command)
            channel.sendall(data.encode("utf-8"))
            channel.shutdown_write()
            channel.makefile("rb").read()
            err = channel.makefile_stderr("rb").read().decode("utf-8", errors="replace")
            code = channel.recv_exit_status()
        except socket.timeout:
            raise HostError(f"writing {what} timed out after {timeout:g}s") from None
        finally:
            channel.close()
        if code != 0:
            raise HostError(f"cannot write {what}: {last_line(err) or f'exit {code}'}")


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: usually the error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def ensure_packages(remote: Remote, packages: Sequence[str]) -> List[str]:
    """Install the packages that are missing; returns what was installed.

    With a peer (the cluster's one download, see ops.fetch), the .debs come from
    the head first; apt checks each against its signed lists and fetches the rest.
    """
    with remote.apt_lock:
        installed = apt.parse_installed(remote.run(apt.query_command(packages)).stdout)
        todo = apt.missing(packages, installed)
        if not todo:
            return []
        peer = remote.peer.debs if remote.peer is not None else None
        if peer and not remote.dry_run:
            remote.run(apt.peer_debs_command(peer, todo), sudo=True, warn=True, timeout=max(remote.timeout or 0, 600))
        result = remote.change(apt.install_command(todo), warn=True, timeout=max(remote.timeout or 0, 900))
        if result.exited != 0:
            raise HostError(f"apt-get install {' '.join(todo)} failed: {last_line(result.stderr or result.stdout)}")
        remote.change(apt.record_command(todo))
        # A package can bring what a fact reads (libibverbs, nvidia-smi): those are read again.
        remote.facts.changed("packages")
    return [f"installed {' '.join(todo)}"]


def ensure_dir(remote: Remote, path: str, owner: Optional[str] = None) -> List[str]:
    """Create `path` (owned by `owner` and their group) unless it is there so."""
    q = shlex.quote(path)
    seen = remote.run(f"stat -c %U {q} 2>/dev/null || true").stdout.strip()
    if seen and (owner is None or seen == owner):
        return []
    remote.change(f"mkdir -p {q}" + (f" && chown {shlex.quote(owner)}: {q}" if owner else ""))
    if not seen:
        return [f"created {path}" + (f" (owner {owner})" if owner else "")]
    return [f"changed owner of {path} to {owner}"]
