"""`storage`: one shared directory from the head on every worker, NFS or sshfs.

`auto` checks every node's kernel and picks NFS where it can work, else
sshfs (FUSE), and says which. A round trip through the share (a token the
head writes and every worker reads, then 64 MiB each way) is what proves it,
not the mount table.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ...core import programs
from ...core.chain import VERIFY_NAME, Column, Step
from ...core.cluster import setting
from ...core.connection import Session
from ...core.errors import HostError, InputError, keeping_changes
from ...core.facts import parse_facts
from ...core.fanout import FAILED, SKIPPED, HostResult
from ...core.inventory import Inventory, Node
from ...core.packages import Downloads, missing, parse_installed, query_command
from ...core.remote import Remote, last_line
from ...core.steps import Outcome, Seen, merge_phases, run_step
from . import nfs, sshfs
from .nfs import FINDMNT, KERNEL_SCRIPT, NfsPlan, kernel_lacks
from ..shared.share import cache_on_head, dirs_below, read_cache, share_owner
from ...core.declared import Setting, Undo, choice, declare, undoes
from ...core.context import RunContext

BACKENDS = ("auto", "nfs", "sshfs")
DEFAULT_BACKEND = "auto"

#: Throughput test size: what verify writes and reads per worker.
BENCH_MIB = 64

#: /dev/fuse present (printed as `fusedev`), then the kernel's filesystems.
FUSE_SCRIPT = programs.text("storage-fuse.sh")
#: Everything the backend choice needs from one node, in one round trip.
FACTS_SCRIPT = FUSE_SCRIPT + KERNEL_SCRIPT

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


# --------------------------------------------------------------------------- verify


def _mount_problem(remote: Remote, p: NfsPlan, backend: str, head_user: str) -> Optional[str]:
    """Why the worker's mount point is not the share, or None."""
    found = nfs.parse_findmnt(remote.run(FINDMNT.format(shlex.quote(p.mount)), warn=True).stdout)
    if backend == "sshfs":
        ok, source = sshfs.mounted_sshfs(found, head_user, p.server), f"sshfs mount of {sshfs.source(head_user, p.server)}"
    else:
        ok, source = nfs.mounted_from(found, p.server, p.export), f"NFS mount of {p.server}:{p.export}"
    return None if ok else f"{p.mount} is not an {source}"


def write_token(remote: Remote, export: str, token: str) -> Outcome:
    """The head's side of the check: a fresh token, and a 64 MiB file for workers to read."""
    remote.run(token_command(export, token), sudo=True, timeout=600)
    return Outcome([], [f"wrote the token into {export}"], share_owner(remote.user))


def token_command(export: str, token: str) -> str:
    """Root's writes into the share: the old files removed, then new ones made with O_CREAT|O_EXCL|O_NOFOLLOW.

    Other nodes write the share too: a name there may be a symlink, a FIFO or
    a device planted between the removal and the write. `dd conv=excl
    oflag=nofollow` refuses every one of them (the shell's noclobber lets a
    write through to a FIFO or a device), so the check fails instead.
    """
    q = shlex.quote(export)
    return (f"rm -f {q}/.gpufab-verify {q}/.gpufab-bench-head && printf %s {shlex.quote(token)} | "
            f"dd of={q}/.gpufab-verify conv=excl oflag=nofollow status=none && "
            f"dd if=/dev/zero of={q}/.gpufab-bench-head bs=1M count={BENCH_MIB} conv=excl oflag=nofollow 2>/dev/null")


def remove_bench_file(remote: Remote, export: str) -> Outcome:
    remote.run(f"rm -f {shlex.quote(export)}/.gpufab-bench-head", sudo=True)
    return Outcome()


def verify_worker(remote: Remote, p: NfsPlan, backend: str, head_user: str, token: str) -> Outcome:
    """Read the head's token through the mount, then time a 64 MiB write and read."""
    problem = _mount_problem(remote, p, backend, head_user)
    if problem:
        raise HostError(problem)
    seen = remote.run(f"cat {shlex.quote(p.mount + '/.gpufab-verify')}", warn=True).stdout
    if seen != token:
        raise HostError(f"{p.mount}/.gpufab-verify does not hold the head's token: the mount does not show the share")
    mine = shlex.quote(f"{p.mount}/.gpufab-bench-{remote.node.name}")
    theirs = shlex.quote(f"{p.mount}/.gpufab-bench-head")
    write = remote.run(f"rm -f {mine}; dd if=/dev/zero of={mine} bs=1M count={BENCH_MIB} conv=fsync,excl "
                       f"oflag=nofollow 2>&1 >/dev/null; rm -f {mine}", sudo=True, warn=True, timeout=600)
    read = remote.run(f"dd if={theirs} iflag=nofollow of=/dev/null bs=1M 2>&1", sudo=True, warn=True, timeout=600)
    w, r = dd_rate(write.stdout), dd_rate(read.stdout)
    return Outcome([], [f"read the head's token through {p.mount}; {rates_text(w, r)}"], Trip(w, r))


def round_trip(session: Session, inv: Inventory, nodes: Sequence[Node], p: NfsPlan, backend: str,
               workers: Optional[int] = None, **step_kw: Any) -> List[HostResult]:
    """Head writes a token and a 64 MiB file into the share; every worker reads both through its mount."""
    token = secrets.token_hex(16)
    head = inv.head
    head_step = run_step(session, [head], lambda r: write_token(r, p.export, token), **step_kw)
    targets = [n for n in nodes if not n.is_head]
    if head_step[0].failed:
        return head_step + [HostResult(n, FAILED, 1, reason=f"the head could not write the token ({head_step[0].reason})")
                            for n in targets]
    head_user = head_step[0].value
    results = run_step(session, targets, lambda r: verify_worker(r, p, backend, head_user, token),
                       workers=workers, **step_kw)
    run_step(session, [head], lambda r: remove_bench_file(r, p.export), **step_kw)
    return head_step + results


def backend_of(found: Optional[Tuple[str, str]]) -> Optional[str]:
    """The backend a worker's mount point shows (findmnt's fstype), None when nothing is mounted."""
    if found is None:
        return None
    if found[1] == "fuse.sshfs":
        return "sshfs"
    return "nfs" if found[1].startswith("nfs") else found[1]


def mounted_backend(mounts: Mapping[str, Optional[Tuple[str, str]]], mount: str) -> Choice:
    """The backend the workers have mounted, from each one's findmnt: what `verify` checks, not a default.

    The one most workers have; a worker with another (or none) then fails
    verify, named. None when no worker has anything mounted there.
    """
    seen = Counter(b for b in (backend_of(f) for f in mounts.values()) if b is not None)
    if not seen:
        return Choice(None, f"nothing is mounted on {mount} on {', '.join(sorted(mounts)) or 'any worker'}: "
                            "run storage.setup")
    backend, _ = seen.most_common(1)[0]
    if backend not in ("nfs", "sshfs"):
        return Choice(None, f"{mount} is a {backend} mount, not gpufab's NFS or sshfs")
    return Choice(backend, "mounted on the workers")


def read_mounts(session: Session, nodes: Sequence[Node], mount: str, workers: Optional[int] = None
                ) -> Dict[str, Optional[Tuple[str, str]]]:
    q = shlex.quote(mount)
    results = run_step(session, [n for n in nodes if not n.is_head], lambda r: Outcome(
        [], [], nfs.parse_findmnt(r.run(FINDMNT.format(q), warn=True).stdout)), workers=workers)
    return {r.node.name: (None if r.failed else r.value) for r in results}


@dataclass(frozen=True)
class Choice:
    backend: Optional[str]  # None: no backend works on these nodes
    why: str


def storage_facts(remote: Remote) -> str:
    """NFS and FUSE support of one node (FACTS_SCRIPT's output)."""
    return remote.script(FACTS_SCRIPT).stdout


def choose(wanted: str, head: Node, facts: Dict[str, str]) -> Choice:
    """The backend that the head and every worker in `facts` support."""
    workers = {name: text for name, text in facts.items() if name != head.name}
    return Choice(*choose_backend(wanted, head.name, facts, workers))


def choose_for(wanted: str, head: Node, nodes: Sequence[Node], facts_of: Callable[[Node], str]) -> Choice:
    """The backend for the head and the workers among `nodes`, from each one's FACTS_SCRIPT output."""
    return choose(wanted, head, {n.name: facts_of(n) for n in [head, *[x for x in nodes if not x.is_head]]})


def setup(session: Session, inv: Inventory, nodes: Sequence[Node], share: NfsPlan, backend: str,
          workers: Optional[int] = None, cache: Optional[str] = None, **step_kw: Any) -> List[HostResult]:
    """The chosen backend's setup: the head first, then its workers; then the shared cache directory in it."""
    if backend == "nfs":
        results = nfs.setup_share(session, nodes, share, workers=workers, **step_kw)
    else:
        results = sshfs.setup_sshfs(session, inv, nodes, share, workers, **step_kw)
    head = next((r for r in results if r.node.is_head and not r.failed), None)
    if cache is None or head is None:
        return results
    made = run_step(session, [head.node], lambda r: make_cache(r, share, cache), remotes=step_kw.get("remotes"))
    merged = merge_phases([r.node for r in results], [results, made])
    after = next(r for r in merged if r.node.is_head)
    if step_kw.get("on_result") and after.status != head.status:  # the live line shows what the cache phase added
        step_kw["on_result"](after)
    return merged


def make_cache(remote: Remote, share: NfsPlan, cache: str) -> Outcome:
    """Made in the share and owned by the share's owner (the SSH user, or gpufab's account for a root
    login), so that every node's jobs can fill it.

    Directories of it that another login made (an earlier run as root) are
    given to the owner, as the share itself is: `find -P` and `chown -h`,
    which never follow a link someone planted in the share.
    """
    owner = share_owner(remote.user)
    path = cache_on_head(share.export, share.mount, cache)
    q = shlex.quote(path)
    writable = f"test -d {q} -a -w {q}"
    dirs = " ".join(shlex.quote(d) for d in reversed(dirs_below(path, share.export)))
    foreign = f"find -P {dirs} -maxdepth 0 -type d ! -user {shlex.quote(owner)} 2>/dev/null; true"
    give = f"find -P {dirs} -maxdepth 0 -type d ! -user {shlex.quote(owner)} -exec chown -h {shlex.quote(owner)}: {{}} +"
    theirs = remote.run(foreign, sudo=True).stdout.split()
    if not theirs and remote.check(writable):
        return Outcome([], [f"HF_HOME={cache}"])
    done = []
    if theirs:
        remote.change(f"{give} 2>/dev/null; true")
        done.append(f"gave {', '.join(theirs)} to {owner}")
    made = remote.run(f"mkdir -p -- {q}", warn=True, timeout=60)
    if remote.dry_run:
        return Outcome(done + [f"created the shared cache {path} (HF_HOME={cache})"], [])
    if owner != remote.user:  # a root login made them: the workers act as the share's account
        remote.change(f"{give} 2>/dev/null; true")
    if made.exited != 0 or not remote.check(writable):
        raise HostError(f"cannot create the shared cache {path} as {remote.user}: "
                        f"{last_line(made.stderr) or 'not writable'}", changes=done)
    return Outcome(done + ([f"created the shared cache {path} (HF_HOME={cache})"] if not theirs else []), [])


@dataclass(frozen=True)
class StorageSettings:
    backend: str  # auto, nfs or sshfs
    share: NfsPlan
    #: HF_HOME in the share (None: inventory var shared_cache is none).
    cache: Optional[str] = None


def downloads(remote: Remote, s: StorageSettings) -> Downloads:
    """sshfs where a worker lacks it (NFS packages are not fetched: a kernel that can serve NFS is rare here)."""
    if remote.node.is_head or s.backend == "nfs":
        return Downloads()
    return Downloads(debs=tuple(missing(["sshfs"], parse_installed(remote.run(query_command(["sshfs"])).stdout))))


def read(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> StorageSettings:
    """CLI `--backend`/`--storage` > inventory var `storage` > config > nfs; the share's paths from nfs."""
    wanted = cli.get("backend") or cli.get("storage")
    share = nfs.read_share(config, inv, cli)
    return StorageSettings(check_backend(setting(config, inv, "storage", wanted, DEFAULT_BACKEND)), share,
                           read_cache(config, inv, share.mount))


#: As the SSH user: the cache directory there and writable (`yes`), or not.
CACHE_CHECK = 'if [ -d "$1" ] && [ -w "$1" ]; then echo yes; else echo no; fi'


@dataclass(frozen=True)
class CacheCheck:
    path: str
    writable: bool


def check_cache(remote: Remote, s: "StorageSettings") -> Outcome:
    """The verify phase: HF_HOME is a directory the SSH user can write, on this node."""
    if s.cache is None:
        return Outcome()
    found = remote.script(CACHE_CHECK, s.cache, timeout=60).stdout.split()
    return Outcome(value=CacheCheck(s.cache, found[-1:] == ["yes"]))


@dataclass(frozen=True)
class Shared:
    """This node's side of the share."""

    backend: Optional[str]  # None: unavailable on these kernels

    def cell(self, node: Node) -> str:
        if self.backend is None:
            return "unavailable"
        return f"{self.backend} " + ("shared" if node.is_head else "mounted")


@dataclass(frozen=True)
class Trip:
    """A worker's round trip through the share: MiB/s written and read (None: not measured)."""

    write: Optional[float] = None
    read: Optional[float] = None


def run_step_on(run: RunContext, nodes: Sequence[Node], s: StorageSettings) -> List[HostResult]:
    """The backend every node supports (as asked: nfs, sshfs or auto), then the share."""
    def facts_of(n: Node) -> str:
        # From preflight; read now only for a head outside this run (a retry of workers).
        known = run.gathered(NAME, n)
        return known if known is not None else storage_facts(run.remotes[n.name])

    try:
        choice = choose_for(s.backend, run.inv.head, nodes, facts_of)
        run.keep(NAME, choice)
    except Exception as exc:  # noqa: BLE001 - the head is down; its clients cannot mount
        return [HostResult(n, FAILED, 1, reason=f"cannot check the head's kernel for shared storage ({exc})") for n in nodes]
    if choice.backend is None:
        # Not `ok`: the cluster has no shared directory, and the table says so.
        return [HostResult(n, SKIPPED, reason=choice.why, notes=[choice.why],
                           value=Shared(None)) for n in nodes]
    results = setup(run.session, run.inv, nodes, s.share, choice.backend, cache=s.cache, **run.step_kw(NAME))
    for r in results:
        r.value = Shared(choice.backend)
        if choice.why:
            r.notes.append(choice.why)
    return results


def check_share(run: RunContext, nodes: Sequence[Node], s: StorageSettings) -> List[HostResult]:
    choice = run.kept(NAME, Choice)
    if choice is None or choice.backend is None:
        return []
    return round_trip(run.session, run.inv, nodes, s.share, choice.backend, run.workers, remotes=run.remotes)


def _cell(run: RunContext, node: Node) -> str:
    choice = run.kept(NAME, Choice)
    if run.status(NAME, node) == "not run" and run.status(VERIFY_NAME, node) == "not run":
        return "-"
    if choice is not None and choice.backend is None:
        return "unavailable"
    found = run.value(NAME, node)
    shown = found.cell(node) if found else (choice.backend if choice else "-")
    trip = run.cluster_checked(NAME, node)
    return f"{shown}, round trip ok" if trip is not None and not trip.failed else shown


def _report(run: RunContext, s: StorageSettings) -> Tuple[List[str], List[str]]:
    choice = run.kept(NAME, Choice)
    if choice is None:
        return [], []
    if choice.backend is None:
        unshared = [f"HF_HOME={s.cache} is in no shared directory: each node downloads its own copy"] if s.cache else []
        return ["Storage: unavailable on these kernels (no shared directory)"], [choice.why, *unshared]
    verified = {n.name for n in run.verified()}
    trips = [r for n in run.inv.workers for r in [run.cluster_checked(NAME, n)]
             if r is not None and not r.failed and n.name in verified]
    rates = summarize((r.value.write, r.value.read) for r in trips if r.value is not None)
    p = s.share
    public = [f"allow_public_networks is set: the NFS export of {p.export} is not held to a private range"] \
        if p.reach.allow_public and choice.backend == "nfs" else []
    checks = [f"Storage ({choice.backend}): round trip {len(trips)}/{len(run.inv.workers)} workers read the "
              f"head's token ({p.server_name}:{p.export} on {p.mount})" + (f"; {rates}" if rates else "")]
    cache_checks, cache_warnings = _cache_report(run, s)
    return checks + cache_checks, public + ([choice.why] if choice.why.startswith("auto: NFS unavailable") else []) \
        + cache_warnings


def _cache_report(run: RunContext, s: StorageSettings) -> Tuple[List[str], List[str]]:
    if s.cache is None:
        return [], []
    found = {n.name: run.checked(NAME, n) for n in run.verified()}
    good = [n for n, c in found.items() if c is not None and c.writable]
    bad = [n for n, c in found.items() if c is not None and not c.writable]
    return ([f"Shared cache: HF_HOME={s.cache}, writable by the SSH user on {len(good)}/{len(run.inv.nodes)} nodes"],
            [f"HF_HOME={s.cache} is not a directory the SSH user can write on {', '.join(bad)}"] if bad else [])


#: `gpufab status`: this node's side of the share ($1 the path, $2 the head's serving unit), reading only.
STATUS_SCRIPT = programs.text("status-share.sh")


def share_seen(backend: Optional[str], node: Node, share: NfsPlan, facts: Mapping[str, str]) -> Seen:
    """`gpufab status`: the head's export there and served; a worker's mount there and answering."""
    if backend is None:
        return Seen("unavailable")
    if node.is_head:
        problems = [] if facts.get("dir") == "yes" else [f"the export {share.export} is missing"]
        if facts.get("unit", "active") != "active":
            problems.append(f"{_serving_unit(backend)} is {facts.get('unit') or 'unknown'}")
        return Seen(f"{backend} shared", tuple(problems))
    if not facts.get("fstype"):
        return Seen("not mounted", (f"{share.mount} is not mounted",))
    if facts.get("live") != "yes":
        return Seen(f"{backend} stale", (f"{share.mount} does not answer within 5 s (a stale mount?)",))
    return Seen(f"{backend} mounted")


def _serving_unit(backend: str) -> str:
    return sshfs.SFTP_UNIT if backend == "sshfs" else "nfs-server"


def _status(run: RunContext, remote: Remote, s: StorageSettings) -> Seen:
    choice = run.kept(NAME, Choice)
    backend = choice.backend if choice is not None else None
    if backend is None:
        return share_seen(None, remote.node, s.share, {})
    path, unit = (s.share.export, _serving_unit(backend)) if remote.node.is_head else (s.share.mount, "")
    out = remote.script(STATUS_SCRIPT, path, unit, sudo=True, timeout=30).stdout
    return share_seen(backend, remote.node, s.share, parse_facts(out))


NAME = "storage"
STEP = Step(NAME, settings=read, run=run_step_on, needs_head=True, aliases=("nfs",), gather=storage_facts,
            # The mesh edits the same authorized_keys and known_hosts files: one after the other.
            needs=("preflight", "fetch", "mesh"), downloads=downloads,
            check=check_cache, check_cluster=check_share, columns=(Column("nfs", "Storage", _cell),), report=_report,
            status=_status)


DECLARED = declare(
    "ops.storage",
    Setting("storage", "the share's backend: auto, nfs or sshfs", DEFAULT_BACKEND,
            kind=choice(*BACKENDS), check=check_backend),
)


# --------------------------------------------------------------------------- reset


#: rmdir each directory given, deepest first, until one is not empty (run as the SSH user: it made them).
RMDIR_SCRIPT = 'n=0; for d in "$@"; do rmdir -- "$d" 2>/dev/null || break; n=$((n+1)); done; echo "$n"'


def remove_empty_cache(remote: Remote, share: nfs.NfsPlan, cache: str) -> Outcome:
    """The shared cache directory storage made, if nothing was ever downloaded into it (else it is data)."""
    path = cache_on_head(share.export, share.mount, cache)
    removed = remote.script(RMDIR_SCRIPT, *dirs_below(path, share.export), warn=True).stdout.split()
    if removed[-1:] in (["0"], []):
        return Outcome([], [])
    return Outcome([f"removed the empty shared cache {path}"], [])


@dataclass(frozen=True)
class ShareToReset:
    share: NfsPlan
    #: The shared cache storage made in the share (removed only when empty).
    cache: Optional[str] = None


def share_to_reset(config: Any, inv: Inventory, cli: Mapping[str, Any]) -> ShareToReset:
    share = nfs.read_share(config, inv, {})
    return ShareToReset(share, read_cache(config, inv, share.mount))


def reset_head(remote: Remote, s: ShareToReset) -> Outcome:
    """The head's share service and check files, and the empty shared cache; the shared data stays."""
    share = s.share
    done = list(sshfs.revoke_workers(remote).changes)
    notes: List[str] = []
    with keeping_changes(done):
        # -P (find's default) never follows a link, the export itself included; -delete removes links, not targets.
        found = remote.run(f"find -P {shlex.quote(share.export)} -maxdepth 1 -name '.gpufab-*' ! -type d -print -delete",
                           sudo=True, warn=True).stdout.split()
        if found:
            done.append(f"removed gpufab's check files from {share.export}")
        if s.cache is not None:
            done += remove_empty_cache(remote, share, s.cache).changes
        if remote.check(f"test -d {shlex.quote(share.export)}"):
            notes.append(f"kept {share.export}: the shared data is the operator's")
    return Outcome(done, notes)


UNDONE = undoes(
    "ops.storage",
    # Phase 1: each worker's share unmounted while the head still serves it.
    Undo(1, 20, lambda remote, s: Outcome(sshfs.unmount_worker(remote, s.share).changes), settings=share_to_reset,
         head=False),
    Undo(2, 50, reset_head, settings=share_to_reset, head=True),
)
