"""A node in memory, for "facts in, commands out" tests of the ops modules.

`FakeRemote` has the interface of `core.remote.Remote` that steps use. It
answers commands from canned rules (the first regular expression that
matches a command gives its output and exit code), keeps managed files in a
dict that `write_files` updates (so a second run sees the first one's
files), and records every command, every changing command and every write.
"""

from __future__ import annotations

import re
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from invoke.exceptions import UnexpectedExit
from invoke.runners import Result

from fabfile.core.facts import NodeFacts
from fabfile.core.files import FileChange, FileState, ManagedFile, sha256
from fabfile.core.inventory import Node

Rule = Tuple[str, str, int]

#: What every fake node answers unless a test says otherwise: the share owner's ids (ops.shared.share).
DEFAULT_RULES: List[Rule] = [(r'echo "ids ', "ids 999 999\n", 0)]


def node(name: str = "node1", private: str = "10.0.0.1", role: str = "head", **vars: object) -> Node:
    return Node(name=name, public="203.0.113.1", private=private, nid=0 if role == "head" else 1, role=role,
                vars=dict(vars))


class FakeRemote:
    def __init__(self, rules: Iterable[Rule] = (), *, files: Optional[Dict[str, str]] = None, user: str = "root",
                 the_node: Optional[Node] = None, dry_run: bool = False, new_login: str = "65536 65536"):
        self.rules: List[Rule] = [*rules, *DEFAULT_RULES]
        self.node = the_node or node()
        self.user = user
        self.dry_run = dry_run
        self.timeout = 30.0
        self.new_login = new_login
        self.files: Dict[str, FileState] = {}
        for path, content in (files or {}).items():
            self.put(path, content)
        #: Every command sent, changing or not, in order.
        self.commands: List[str] = []
        #: The commands that change the node (sent through `change`).
        self.changes: List[str] = []
        #: The commands sent as root (sudo=True, or every command of a root login).
        self.as_root: List[str] = []
        #: What reached commands through a secret env file (never their command line).
        self.secret_envs: List[Dict[str, str]] = []
        self.written: List[FileChange] = []
        self.restored: List[str] = []
        self.home_written: List[str] = []
        self.planned: List[FileChange] = []
        self._after: List[Tuple[str, Rule]] = []
        #: The cluster's one download (core.packages.Peer), as the fetch step sets it.
        self.peer = None
        self.apt_lock = threading.RLock()
        #: The run's facts of this node, each read once (core.facts), as on a Remote.
        self.facts = NodeFacts()

    # ------------------------------------------------------------------ setup

    def put(self, path: str, content: str, mode: int = 0o644, owner: str = "root", group: str = "root") -> None:
        self.files[path] = FileState(path, True, content, sha256(content), mode, owner, group)

    def answer(self, pattern: str, stdout: str = "", exit: int = 0) -> "FakeRemote":
        """Put a rule before the others (a later call wins over an earlier one)."""
        self.rules.insert(0, (pattern, stdout, exit))
        return self

    def after(self, trigger: str, pattern: str, stdout: str = "", exit: int = 0) -> "FakeRemote":
        """Once a command matching `trigger` has run, answer `pattern` so (a mount shows up after `mount`)."""
        self._after.append((trigger, (pattern, stdout, exit)))
        return self

    # ------------------------------------------------------------------ Remote's interface

    @property
    def is_root(self) -> bool:
        return self.user == "root"

    def run(self, command: str, *, sudo: bool = False, warn: bool = False, timeout: Optional[float] = None,
            **fabric_kw: object) -> Result:
        """Also takes a Fabric connection's keywords (hide, in_stream...), so it can stand in for one."""
        secret_env = fabric_kw.pop("secret_env", None)
        if secret_env:
            self.secret_envs.append(dict(secret_env))
        self.commands.append(command)
        if sudo or self.user == "root":
            self.as_root.append(command)
        stdout, code = "", 0
        for pattern, out, exit in self.rules:
            if re.search(pattern, command):
                stdout, code = out, exit
                break
        result = Result(stdout=stdout, stderr="" if code == 0 else "fake: failed", exited=code, command=command,
                        hide=("stdout", "stderr"))
        for pending in [a for a in self._after if re.search(a[0], command)]:
            self._after.remove(pending)
            self.rules.insert(0, pending[1])
        if code != 0 and not warn:
            raise UnexpectedExit(result)
        return result

    def fact(self, fact, *args):
        return self.facts.get(fact, self, *args)

    def change(self, command: str, *, sudo: bool = True, warn: bool = False, timeout: Optional[float] = None,
               secret_env: Optional[Dict[str, str]] = None) -> Result:
        self.changes.append(command)
        if secret_env:
            self.secret_envs.append(dict(secret_env))
        if self.dry_run:
            return Result(command=command, exited=0, hide=("stdout", "stderr"))
        return self.run(command, sudo=sudo, warn=warn, timeout=timeout)

    def script(self, body: str, *args: str, sudo: bool = False, warn: bool = False,
               timeout: Optional[float] = None) -> Result:
        return self.run(" ".join([body, *args]), sudo=sudo, warn=warn, timeout=timeout)

    def check(self, command: str, *, sudo: bool = False, timeout: Optional[float] = None) -> bool:
        return self.run(command, sudo=sudo, warn=True, timeout=timeout).exited == 0

    def read_state(self, files: Iterable[ManagedFile]) -> Dict[str, FileState]:
        return {f.path: self._state(f.path) for f in files}

    def read_paths(self, args: Sequence[str]) -> Dict[str, FileState]:
        return {p: self._state(p) for p in args if p != "-d"}

    def read_text(self, path: str) -> Optional[str]:
        return self._state(path).content

    def write_files(self, changes: Sequence[FileChange]) -> List[str]:
        if not changes:
            return []
        if self.dry_run:
            self.planned += changes
        else:
            self.written += changes
        for c in changes:
            f = c.file
            self.files[f.path] = FileState(f.path, True, f.content, f.digest, f.mode, f.owner, f.group)
        return [c.describe() for c in changes]

    def write_home_files(self, directory: str, files: Dict[str, Tuple[str, int]]) -> List[str]:
        """Kept in `files` as `~/<directory>/<name>`, owned by the SSH user."""
        done = [f"wrote ~/{directory}/{name}" for name in files]
        if not self.dry_run:
            for name, (content, mode) in files.items():
                self.put(f"~/{directory}/{name}", content, mode, self.user, self.user)
            self.home_written += done
        return done

    def restore_previous(self, path: str, existed: bool) -> None:
        self.restored.append(path)

    def run_in_new_login(self, command: str) -> Result:
        self.commands.append(f"(new login) {command}")
        return Result(stdout=self.new_login, exited=0, command=command)

    def _state(self, path: str) -> FileState:
        return self.files.get(path) or FileState(path, exists=False)

    # ------------------------------------------------------------------ what the tests read

    def paths_written(self) -> List[str]:
        return [c.file.path for c in self.written]

    def sent(self, pattern: str) -> List[str]:
        return [c for c in self.commands if re.search(pattern, c)]


class FakeRun:
    """The few parts of core.chain.Run a step's own run reads (inv, remotes, ...), given as keywords,
    with Run's store of what a step keeps for the whole cluster (keep/kept/forget)."""

    def __init__(self, **parts):
        self.__dict__.update(parts)
        self._kept: Dict[str, object] = {}

    def keep(self, key: str, value: object) -> None:
        self._kept[key] = value

    def kept(self, key: str, kind: type):
        value = self._kept.get(key)
        return value if isinstance(value, kind) else None

    def forget(self, key: str):
        return self._kept.pop(key, None)
