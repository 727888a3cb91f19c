"""apt on the nodes: which packages are missing, and the commands that install them.

Fresh rental machines often run unattended-upgrades at first boot; every
apt call waits for the dpkg lock (bounded) instead of failing on it, and
never asks a question.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from . import programs
from .declared import owns

APT_GET = (
    "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300"
    " -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
)

#: Refresh the package lists unless they were fetched within the last hour.
UPDATE_IF_STALE = (
    "[ -n \"$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -60 2>/dev/null | head -n1)\" ]"
    f" || {APT_GET} update"
)


def query_command(packages: Iterable[str]) -> str:
    """Prints `name status` per package; unknown packages print nothing."""
    names = " ".join(shlex.quote(p) for p in packages)
    return f"dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {names} 2>/dev/null; true"


def parse_installed(text: str) -> Set[str]:
    installed = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "installed":
            installed.add(parts[0])
    return installed


#: Finish what an interrupted dpkg run (a host that died mid-install) left half-configured.
RESUME_DPKG = (
    "if [ -n \"$(ls -A /var/lib/dpkg/updates 2>/dev/null)\" ];"
    " then DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold --configure -a; fi"
)


def install_command(packages: Iterable[str], update: bool = True) -> str:
    names = " ".join(shlex.quote(p) for p in packages)
    install = f"{RESUME_DPKG}; {APT_GET} install --no-install-recommends {names}"
    return f"{UPDATE_IF_STALE} && {install}" if update else install


#: Where apt keeps the .debs it downloaded (and installs from).
APT_ARCHIVE = "/var/cache/apt/archives"

#: What gpufab's apt installs added (one name a line): what `reset --packages` may purge.
INSTALLED_RECORD = "/var/lib/gpufab/installed-packages"
#: Installed by gpufab where missing, never purged by it: the way in (sshd) and what other software needs.
NEVER_PURGE = frozenset({"openssh-server", "ca-certificates", "curl"})


def record_command(packages: Iterable[str], rec: str = INSTALLED_RECORD) -> str:
    """Add names to a record, each once; a new file renamed over the old (the directory is root's only)."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (f"install -d -m 0755 {rec.rsplit('/', 1)[0]} && {{ cat {rec} 2>/dev/null; printf '%s\\n' {names}; }}"
            f" | sort -u > {rec}.new && mv -f {rec}.new {rec}")


def purge_command(packages: Iterable[str]) -> str:
    """Purge the packages and what only they needed."""
    names = " ".join(shlex.quote(p) for p in packages)
    return f"{RESUME_DPKG}; {APT_GET} purge --auto-remove {names}"


def missing(wanted: Iterable[str], installed: Set[str]) -> List[str]:
    return [p for p in wanted if p not in installed]


@dataclass(frozen=True)
class Downloads:
    """What one step would download on one node: .debs by package name, Python pins (with uv to install them)."""

    debs: Tuple[str, ...] = ()
    wheels: Tuple[str, ...] = ()
    uv: bool = False

    def __or__(self, other: "Downloads") -> "Downloads":
        return Downloads(tuple(dict.fromkeys(self.debs + other.debs)), tuple(dict.fromkeys(self.wheels + other.wheels)),
                         self.uv or other.uv)

    def __bool__(self) -> bool:
        return bool(self.debs or self.wheels or self.uv)


@dataclass(frozen=True)
class Peer:
    """Where a node gets what the cluster downloaded once: the head's packages over the private network.

    `debs`: the URL of the head's apt archive (None on the head itself, whose
    apt already holds them). `wheels`: the head's wheel directory (a URL, or
    the local path on the head); `hashes`: each wheel's sha256 as read on the
    head over SSH, so that a node trusts a wheel for its hash, not for the
    network it came over.
    """

    debs: Optional[str]
    wheels: str
    hashes: Dict[str, str] = field(default_factory=dict)


#: Run as root with python3: the .debs `apt-get install PKGS` would download, taken from the
#: head's archive (argv[1]) into apt's own (argv[2]), each kept only with the size and SHA256 apt's
#: signed lists give for it; whatever the head lacks, apt downloads itself.
PEER_DEBS = programs.text("peer-debs.py")


def peer_debs_command(url: str, packages: Iterable[str]) -> str:
    names = " ".join(shlex.quote(p) for p in packages)
    # Fresh lists or not, the .debs the head has are tried: apt checks each against the lists it has.
    return f"{UPDATE_IF_STALE}; python3 -c {shlex.quote(PEER_DEBS)} {shlex.quote(url)} {APT_ARCHIVE} {names}"


OWNED = owns("core.packages", files=(INSTALLED_RECORD,))
