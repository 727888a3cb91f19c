"""Open-file limits: the files that raise `nofile`, and reading back the result.

Three places decide a process's limit, and the usual wiki step only fixes the
first: pam_limits for login sessions (limits.d), systemd's default for every
service, and docker.service's own setting for containers.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from ..core.errors import InputError
from ..core.files import ManagedFile, render

DEFAULT_NOFILE = 65536
#: The kernel's default fs.nr_open: no process limit can be set above it.
MAX_NOFILE = 1048576

LIMITS_FILE = "/etc/security/limits.d/90-gpufab-nofile.conf"
SYSTEMD_FILE = "/etc/systemd/system.conf.d/90-gpufab-limits.conf"
DOCKER_FILE = "/etc/systemd/system/docker.service.d/90-gpufab-limits.conf"

#: Prints the soft and hard nofile limits of a fresh login shell.
LOGIN_LIMITS_CMD = "echo $(ulimit -Sn) $(ulimit -Hn)"


def check_nofile(value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise InputError(f"invalid nofile {value!r}: give a number", path="nofile") from None
    if not 1024 <= number <= MAX_NOFILE:
        raise InputError(f"nofile {number} is out of range 1024..{MAX_NOFILE}", path="nofile")
    return number


def limit_files(nofile: int) -> List[ManagedFile]:
    """The docker.service drop-in is written even before Docker is installed:
    dockerd then starts with it, and a later run has nothing left to change."""
    return [
        ManagedFile(LIMITS_FILE, render("limits/nofile.conf.j2", nofile=nofile)),
        ManagedFile(SYSTEMD_FILE, render("limits/systemd-system.conf.j2", nofile=nofile)),
        ManagedFile(DOCKER_FILE, render("limits/docker-service.conf.j2", nofile=nofile)),
    ]


def parse_login_limits(text: str) -> Tuple[int, int]:
    """`65536 65536` -> (soft, hard); `unlimited` counts as the kernel maximum."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"unexpected ulimit output {text!r}")
    soft, hard = (MAX_NOFILE if p == "unlimited" else int(p) for p in parts)
    return soft, hard
