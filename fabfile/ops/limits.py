"""`limits`: raise the open-file limit everywhere it is decided, and read back what a login gets.

Three places decide a process's limit, and the usual wiki step only fixes the
first: pam_limits for login sessions (limits.d), systemd's default for every
service, and docker.service's own setting for containers. On nodes with an
active InfiniBand/RoCE port the locked-memory limit is raised the same way:
RDMA pins its buffers, and NCCL's IB transport fails under the default 8 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from ..core.chain import Column, Step, every_node
from ..core.cluster import setting
from ..core.errors import HostError, InputError
from ..core.files import ManagedFile, plan_files, render
from ..core.inventory import Inventory
from ..core.remote import Remote
from ..core.steps import Outcome, Seen
from .shared import infiniband
from ..core.declared import Kind, Setting, declare, owns, whole
from ..core.context import RunContext

DEFAULT_NOFILE = 65536
#: The kernel's default fs.nr_open: no process limit can be set above it.
MAX_NOFILE = 1048576

DEFAULT_MEMLOCK = "unlimited"

LIMITS_FILE = "/etc/security/limits.d/90-gpufab-nofile.conf"
MEMLOCK_FILE = "/etc/security/limits.d/90-gpufab-memlock.conf"
SYSTEMD_FILE = "/etc/systemd/system.conf.d/90-gpufab-limits.conf"
DOCKER_FILE = "/etc/systemd/system/docker.service.d/90-gpufab-limits.conf"

#: Prints the soft and hard nofile limits of a fresh login shell.
LOGIN_LIMITS_CMD = "echo $(ulimit -Sn) $(ulimit -Hn)"
LOGIN_MEMLOCK_CMD = "ulimit -Sl"


def check_nofile(value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise InputError(f"invalid nofile {value!r}: give a number", path="nofile") from None
    if not 1024 <= number <= MAX_NOFILE:
        raise InputError(f"nofile {number} is out of range 1024..{MAX_NOFILE}", path="nofile")
    return number


def check_memlock(value: Any) -> str:
    """`unlimited`, or KiB (as limits.conf and `ulimit -l` count them)."""
    text = str(value).strip()
    if text == "unlimited" or (text.isdigit() and 64 <= int(text) <= 1 << 40):
        return text
    raise InputError(f"invalid memlock {value!r}: unlimited, or KiB from 64", path="memlock")


def systemd_memlock(memlock: str) -> str:
    """limits.conf counts KiB; systemd's LimitMEMLOCK counts bytes (K suffix) or says infinity."""
    return "infinity" if memlock == "unlimited" else f"{memlock}K"


def limit_files(nofile: int, memlock: Optional[str] = None) -> List[ManagedFile]:
    """The docker.service drop-in is written even before Docker is installed:
    dockerd then starts with it, and a later run has nothing left to change.
    `memlock`: the node has an active InfiniBand/RoCE port."""
    locked = systemd_memlock(memlock) if memlock else None
    files = [
        ManagedFile(LIMITS_FILE, render("limits/nofile.conf.j2", nofile=nofile)),
        ManagedFile(SYSTEMD_FILE, render("limits/systemd-system.conf.j2", nofile=nofile, memlock=locked)),
        ManagedFile(DOCKER_FILE, render("limits/docker-service.conf.j2", nofile=nofile, memlock=locked)),
    ]
    if memlock:
        files.append(ManagedFile(MEMLOCK_FILE, render("limits/memlock.conf.j2", memlock=memlock)))
    return files


def parse_login_limits(text: str) -> Tuple[int, int]:
    """`65536 65536` -> (soft, hard); `unlimited` counts as the kernel maximum."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"unexpected ulimit output {text!r}")
    soft, hard = (MAX_NOFILE if p == "unlimited" else int(p) for p in parts)
    return soft, hard


@dataclass(frozen=True)
class LimitsSettings:
    nofile: int
    #: For nodes with an active InfiniBand/RoCE port.
    memlock: str = DEFAULT_MEMLOCK


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> LimitsSettings:
    """CLI `--nofile` > inventory var `nofile` > config `gpufab.nofile` > 65536; var `memlock` (IB nodes)."""
    return LimitsSettings(check_nofile(setting(config, inv, "nofile", cli.get("nofile"), DEFAULT_NOFILE)),
                          check_memlock(setting(config, inv, "memlock", None, DEFAULT_MEMLOCK)))


@dataclass(frozen=True)
class LoginLimits:
    """The nofile a new login gets (and the hard limit behind it)."""

    soft: int
    hard: Optional[int] = None
    #: KiB or `unlimited`, on InfiniBand nodes (None: not raised here).
    memlock: Optional[str] = None


def apply(remote: Remote, s: LimitsSettings) -> Outcome:
    """Write the drop-ins, make systemd re-read them, and check a new login."""
    ib = remote.fact(infiniband.PORTS)
    memlock = s.memlock if ib.active else None
    wanted = limit_files(s.nofile, memlock)
    changes = plan_files(wanted, remote.read_state(wanted))
    done = remote.write_files(changes)
    changed = {c.file.path for c in changes}
    if SYSTEMD_FILE in changed:
        # Manager settings are only read when systemd itself re-executes.
        remote.change("systemctl daemon-reexec")
        done.append("systemctl daemon-reexec")
    elif DOCKER_FILE in changed:
        remote.change("systemctl daemon-reload")
        done.append("systemctl daemon-reload")
    if DOCKER_FILE in changed and remote.check("systemctl is-active --quiet docker"):
        remote.change("systemctl restart docker")
        done.append("restarted docker")

    if remote.dry_run:
        return Outcome(done, [])
    # What the next login gets: pam_limits applies when sshd opens a session.
    soft, hard = parse_login_limits(remote.run_in_new_login(LOGIN_LIMITS_CMD).stdout)
    default = remote.run("systemctl show --property DefaultLimitNOFILE --value").stdout.strip()
    notes = [f"new login: nofile {soft} (hard {hard}); systemd default {default}"]
    if soft < s.nofile:
        if hard < s.nofile:
            why = (f"sshd runs with hard limit {hard} and pam_limits may not raise it here"
                   f" (no CAP_SYS_RESOURCE?); use nofile <= {hard}")
        else:
            why = "is pam_limits enabled for sshd (UsePAM yes, pam_limits.so in /etc/pam.d/sshd)?"
        raise HostError(f"a new login gets nofile {soft}, not {s.nofile}: {why}", changes=done)
    if memlock:
        got = remote.run_in_new_login(LOGIN_MEMLOCK_CMD).stdout.strip()
        notes.append(f"InfiniBand ({', '.join(p.name for p in ib.active)}): memlock {got} in a new login")
        if got != memlock:
            raise HostError(f"a new login gets memlock {got}, not {memlock}: RDMA needs it for NCCL over InfiniBand"
                            " (is pam_limits enabled for sshd, and may sshd raise its hard limit here?)", changes=done)
    return Outcome(done, notes, LoginLimits(soft, hard, memlock))


def check(remote: Remote, s: LimitsSettings) -> Outcome:
    """The verify phase: nofile as this session's shell sees it."""
    text = remote.run("ulimit -n").stdout.strip()
    return Outcome(value=LoginLimits(MAX_NOFILE if text == "unlimited" else int(text)))


def _found(run: RunContext, node: Any) -> Optional[int]:
    found = run.value(NAME, node) or run.checked(NAME, node)
    return found.soft if found else None


def _cell(run: RunContext, node: Any) -> str:
    return str(_found(run, node) or "-")


def _report(run: RunContext, s: LimitsSettings) -> Tuple[List[str], List[str]]:
    verified = run.verified()
    values = sorted({str(_found(run, n)) for n in verified})
    return [f"nofile: {', '.join(values) or '-'} in a new login ({len(verified)}/{len(run.inv.nodes)} nodes)"], []


def limits_seen(found: int, wanted: int) -> Seen:
    """`gpufab status`: nofile in force in this login, as the step set it."""
    if found != wanted:
        return Seen(f"nofile {found}", (f"a login gets nofile {found}, not {wanted}",))
    return Seen(f"nofile {found}")


def _status(run: RunContext, remote: Remote, s: LimitsSettings) -> Seen:
    return limits_seen(check(remote, s).value.soft, s.nofile)


NAME = "limits"
STEP = Step(NAME, settings=read, run=every_node(NAME, apply), check=check, needs=("preflight",),
            columns=(Column("ulimit", "ulimit", _cell),), report=_report,
            status=_status)


DECLARED = declare(
    "ops.limits",
    Setting("nofile", "open files per process (soft and hard), for logins and systemd units", str(DEFAULT_NOFILE),
            kind=whole(1024, MAX_NOFILE), check=check_nofile),
    Setting("memlock", "locked memory per process in KiB, or unlimited (RDMA registers its buffers)",
            DEFAULT_MEMLOCK,
            kind=Kind("unlimited or KiB", {"anyOf": [{"enum": ["unlimited"]}, {"type": "integer", "minimum": 64, "maximum": 1 << 40}]}), check=check_memlock),
)


OWNED = owns("ops.limits", files=(LIMITS_FILE, MEMLOCK_FILE, SYSTEMD_FILE, DOCKER_FILE),
             parents=("/etc/systemd/system/docker.service.d", "/etc/systemd/system.conf.d"))
