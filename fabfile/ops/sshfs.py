"""Shared storage: choosing a backend per cluster, and the sshfs backend's files.

NFS needs the kernel's nfsd on the head and nfs on the workers; many rented
machines (containers, minimal images) have neither but do have FUSE. The
sshfs backend then mounts the head's directory over SSH: each worker has its
own key, which the head accepts for SFTP only, from that worker's address
only, for the SSH user only.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from ..core.errors import InputError
from ..core.files import ManagedFile, outside_managed_block, render
from .nfs import KERNEL_SCRIPT, kernel_lacks

BACKENDS = ("auto", "nfs", "sshfs")
DEFAULT_BACKEND = "nfs"

KEY_DIR = "/etc/gpufab/sshfs"
KEY_FILE = f"{KEY_DIR}/id_ed25519"
KNOWN_HOSTS = f"{KEY_DIR}/known_hosts"
KEY_COMMENT = "gpufab-sshfs@"
KEYS_BEGIN = "# BEGIN gpufab managed block (sshfs keys)"
KEYS_END = "# END gpufab managed block (sshfs keys)"
FSTAB_BEGIN = "# BEGIN gpufab managed block (storage sshfs)"
FSTAB_END = "# END gpufab managed block (storage sshfs)"
SSHFS_OPTIONS = ("_netdev,allow_other,reconnect,ServerAliveInterval=15,ServerAliveCountMax=3,"
                 "x-systemd.mount-timeout=30,StrictHostKeyChecking=yes")
#: Throughput test size: what verify writes and reads per worker.
BENCH_MIB = 64

#: /dev/fuse present (printed as `fusedev`), then the kernel's filesystems.
FUSE_SCRIPT = r"""
[ -c /dev/fuse ] && echo fusedev
cat /proc/filesystems
"""
#: Everything the backend choice needs from one node, in one round trip.
FACTS_SCRIPT = FUSE_SCRIPT + KERNEL_SCRIPT

_KEY_RE = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/=]+ " + re.escape(KEY_COMMENT) + r"[A-Za-z0-9._-]+$")


def check_backend(value: str) -> str:
    if value not in BACKENDS:
        raise InputError(f"unknown storage backend {value!r} (one of {', '.join(BACKENDS)})", path="storage")
    return value


def fuse_lacks(text: str) -> Optional[str]:
    """Why sshfs cannot mount here (FUSE_SCRIPT's output), or None."""
    lines = text.split()
    if "fuse" not in lines:
        return "this kernel has no FUSE (fuse is not in /proc/filesystems)"
    if "fusedev" not in lines:
        return "/dev/fuse is missing (a container without the FUSE device?)"
    return None


def choose_backend(wanted: str, head: str, kernels: Mapping[str, str], fuse: Mapping[str, str]) -> Tuple[Optional[str], str]:
    """(backend, why): the backend every node supports, or None and the reasons none fits.

    `kernels` is each node's nfs KERNEL_SCRIPT output, `fuse` each worker's
    FUSE_SCRIPT output. `auto` takes NFS when it can work, else sshfs.
    """
    nfs_problem = next((f"{n}: {why}" for n, text in kernels.items()
                        for why in [kernel_lacks(text, "nfsd" if n == head else "nfs")] if why), None)
    sshfs_problem = next((f"{n}: {why}" for n, text in fuse.items() for why in [fuse_lacks(text)] if why), None)
    if wanted == "nfs":
        return (None, f"NFS unavailable: {nfs_problem}") if nfs_problem else ("nfs", "")
    if wanted == "sshfs":
        return (None, f"sshfs unavailable: {sshfs_problem}") if sshfs_problem else ("sshfs", "")
    if not nfs_problem:
        return "nfs", "auto: every node has NFS"
    if not sshfs_problem:
        return "sshfs", f"auto: NFS unavailable ({nfs_problem}); every worker has FUSE"
    return None, f"no shared storage: NFS unavailable ({nfs_problem}); sshfs unavailable ({sshfs_problem})"


def key_line(node: str, private_ip: str, public_key: str) -> str:
    """The head's authorized_keys line for one worker: SFTP only, from its address only."""
    key = public_key.strip()
    if not _KEY_RE.match(key) or not key.endswith(KEY_COMMENT + node):
        raise ValueError(f"unexpected public key from {node}: {key[:40]!r}")
    return f'restrict,from="{private_ip}",command="internal-sftp" {key}'


def keys_block(lines_by_node: Mapping[str, str]) -> str:
    """All workers' lines, sorted by node; '' when there are none (the block goes away)."""
    if not lines_by_node:
        return ""
    body = "\n".join(lines_by_node[n] for n in sorted(lines_by_node))
    return f"{KEYS_BEGIN}\n# Each worker's sshfs key: SFTP only, from that worker only (gpufab storage).\n{body}\n{KEYS_END}\n"


def keys_in_block(text: str) -> Dict[str, str]:
    """node -> line for the key lines inside gpufab's block of an authorized_keys file."""
    found: Dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith(KEYS_BEGIN):
            inside = True
        elif line.startswith(KEYS_END):
            inside = False
        elif inside and KEY_COMMENT in line:
            found[line.rsplit(KEY_COMMENT, 1)[1].strip()] = line
    return found


def fstab_block(user: str, server: str, export: str, mount: str) -> str:
    return render("storage/sshfs-fstab.j2", user=user, server=server, export=export, mount=mount,
                  options=f"{SSHFS_OPTIONS},IdentityFile={KEY_FILE},UserKnownHostsFile={KNOWN_HOSTS}")


def known_hosts_file(server: str, host_keys: str) -> ManagedFile:
    """The head's host keys under its private address: workers check it, never accept-new."""
    lines = [f"{server} {' '.join(line.split()[:2])}" for line in host_keys.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the head has no SSH host keys in /etc/ssh")
    return ManagedFile(KNOWN_HOSTS, "\n".join(lines) + "\n")


def fstab_lines_outside(text: str) -> List[str]:
    return outside_managed_block(text, FSTAB_BEGIN, FSTAB_END)


def mounted_sshfs(found: Optional[Tuple[str, str]], user: str, server: str, export: str) -> bool:
    return found is not None and found[1] == "fuse.sshfs" and found[0] == f"{user}@{server}:{export}"


_DD_RE = re.compile(r"^(\d+) bytes .* copied, ([\d.]+) s", re.M)


def dd_rate(stderr: str) -> Optional[float]:
    """MiB/s from dd's summary line, None when it did not print one."""
    match = None
    for match in _DD_RE.finditer(stderr):
        pass
    if match is None or float(match.group(2)) == 0:
        return None
    return int(match.group(1)) / float(match.group(2)) / (1024 * 1024)


def rates_text(write: Optional[float], read: Optional[float]) -> str:
    def one(x: Optional[float]) -> str:
        return f"{x:.0f} MiB/s" if x is not None else "?"

    return f"{BENCH_MIB} MiB write {one(write)}, read {one(read)}"


def summarize(rates: Iterable[Tuple[Optional[float], Optional[float]]]) -> str:
    pairs = list(rates)
    writes = [w for w, _ in pairs if w is not None]
    reads = [r for _, r in pairs if r is not None]
    if not writes and not reads:
        return ""
    return f"slowest worker: write {min(writes or [0]):.0f} MiB/s, read {min(reads or [0]):.0f} MiB/s"
