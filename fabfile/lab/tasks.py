"""`inv lab.up|down|status|poweroff|poweron`: a local practice cluster, like `kind`.

Runs on this machine as root and touches only what it names: netns
`gpufab-node*`, links `gfpub*`/`gfprv*`, the overlay mounts and files under
the lab's state directory, its tinyproxy, and inventory/lab.yaml. The
debootstrapped base is cached outside the repo and reused while its recipe
is unchanged.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from invoke import task

from . import plan
from ..core.runfiles import run_files
from ..core.errors import GpufabError, reported
from .plan import LabHost, LabPaths
from ..core.report import host_table

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.yaml"
TOOLS = {  # command -> Debian package
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "tinyproxy": "tinyproxy",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
}


class LabError(GpufabError):
    """The lab could not be brought up or down; the message says which step."""


def _run(cmd: Sequence[str], check: bool = True, env: Optional[Dict[str, str]] = None, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)
    except FileNotFoundError:
        raise LabError(f"lab: `{cmd[0]}` is not installed") from None
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise LabError(f"lab: `{' '.join(cmd)}` failed: {tail[0]}")
    return proc


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("lab: must run as root (it creates network namespaces, mounts and containers)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing and os.environ.get("CI"):
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "install", "-y", "-qq", *missing], env={"DEBIAN_FRONTEND": "noninteractive"})
        missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"lab: missing tools; install them with: apt-get install -y {' '.join(missing)}")
    if not os.path.exists("/dev/fuse"):
        raise LabError("lab: /dev/fuse is missing on this machine (needed for shared storage tests)")


# --------------------------------------------------------------------------- #
# Base image (cached)


def _write(root: str, inner: str, content: str, mode: int = 0o644) -> None:
    path = os.path.join(root, inner.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.unlink(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(content)
    os.chmod(path, mode)


def ensure_base(paths: LabPaths) -> str:
    """The base image for this recipe, built once (a few minutes) and cached."""
    mirror = plan.apt_mirror(_apt_sources())
    base = paths.base(plan.recipe_id(mirror))
    if os.path.exists(os.path.join(base, ".gpufab-base-ready")):
        return base
    os.makedirs(paths.cache, exist_ok=True)
    with open(os.path.join(paths.cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(base, ".gpufab-base-ready")):
            return base
        tmp = base + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"lab: building the base image in {base} (once; a few minutes)", flush=True)
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(plan.PACKAGES)}", plan.SUITE, tmp, mirror])
        # Still with the machine's own resolver (base_files empties it below).
        _run(["chroot", tmp, "/bin/sh", "-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
              + " ".join(plan.TRAINING_PACKAGES)], env={"DEBIAN_FRONTEND": "noninteractive"})
        for inner, content in plan.base_files().items():
            _write(tmp, inner, content, 0o440 if "sudoers" in inner else 0o644)
        # HTTPS from this machine passes an intercepting proxy whose CA only
        # this machine's bundle has: the hosts get the same bundle.
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        if os.path.exists(bundle):
            shutil.copy(bundle, os.path.join(tmp, "usr/local/share/ca-certificates/gpufab-lab-host-bundle.crt"))
        _run(["chroot", tmp, "/bin/sh", "-c", plan.base_setup_script()])
        if os.path.exists(bundle):
            shutil.copy(bundle, os.path.join(tmp, bundle.lstrip("/")))
        _write(tmp, "/.gpufab-base-ready", plan.recipe_id(mirror) + "\n")
        # Old bases of other recipes are no longer used.
        for entry in os.listdir(paths.cache):
            if entry.startswith("base-") and os.path.join(paths.cache, entry) not in (base, tmp):
                shutil.rmtree(os.path.join(paths.cache, entry), ignore_errors=True)
        os.rename(tmp, base)
    return base


def _apt_sources() -> str:
    text = ""
    for path in ["/etc/apt/sources.list", *sorted(str(p) for p in Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text += Path(path).read_text() + "\n"
        except OSError:
            pass
    return text


# --------------------------------------------------------------------------- #
# Network, proxy, hosts


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _netns_list() -> List[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ensure_bridges() -> None:
    if _link_exists(plan.PUBLIC_BRIDGE) and _link_exists(plan.PRIVATE_BRIDGE):
        return
    for cmd in plan.bridge_commands():
        name = cmd[3]
        if cmd[2] == "add" and cmd[1] == "link" and _link_exists(name):
            continue
        _run(cmd)


def ensure_proxy(paths: LabPaths) -> None:
    pid_file = os.path.join(paths.state, "tinyproxy.pid")
    if _pid_alive(_read_pid(pid_file), "tinyproxy"):
        return
    conf = os.path.join(paths.state, "tinyproxy.conf")
    log = os.path.join(paths.state, "tinyproxy.log")
    _write("/", conf, plan.tinyproxy_config(pid_file, log))
    open(log, "a").close()
    os.chmod(log, 0o666)  # tinyproxy drops to nobody before opening its log
    proc = subprocess.Popen(
        ["tinyproxy", "-d", "-c", conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    Path(pid_file).write_text(f"{proc.pid}\n")


def _read_pid(path: str) -> Optional[int]:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: Optional[int], name: str) -> bool:
    """Is `pid` a live (not zombie) process called `name`?

    Read from /proc/PID/stat, which is stable while nspawn sets up its
    namespaces; its cmdline briefly is not.
    """
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    comm = stat[stat.find("(") + 1:stat.rfind(")")]
    state = stat[stat.rfind(")") + 2:stat.rfind(")") + 3]
    return state not in ("Z", "X") and comm == name[:15]


def _is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == real for line in fh)


def ensure_key(paths: LabPaths) -> str:
    if not os.path.exists(paths.key):
        os.makedirs(paths.state, mode=0o700, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpufab-lab", "-f", paths.key])
    return Path(paths.key + ".pub").read_text()


def ensure_host(paths: LabPaths, host: LabHost, hosts: Sequence[LabHost], base: str, pubkey: str) -> List[str]:
    """Netns, overlay and first-boot files of one host; returns its known_hosts lines."""
    root = paths.host(host, "root")
    for sub in ("upper", "work", "root", "docker"):
        os.makedirs(paths.host(host, sub), exist_ok=True)
    if host.netns not in _netns_list():
        for cmd in plan.netns_commands(host):
            _run(cmd)
    if not _is_mounted(root):
        _run([
            "mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={base},upperdir={paths.host(host, 'upper')},workdir={paths.host(host, 'work')}", root,
        ])
    marker = os.path.join(root, ".gpufab-host-ready")
    if not os.path.exists(marker):
        for inner, content in plan.host_files(host, hosts, pubkey, uuid.uuid4().hex).items():
            _write(root, inner, content, 0o600 if "authorized_keys" in inner else 0o644)
        _run(["ssh-keygen", "-A", "-f", root])
        # sshd reads authorized_keys as the user: it must be theirs.
        _run(["chroot", root, "chown", "-R", f"{plan.SUDO_USER}:{plan.SUDO_USER}", f"/home/{plan.SUDO_USER}/.ssh"])
        _write(root, "/.gpufab-host-ready", "")
    lines = []
    for pub in sorted(Path(root, "etc/ssh").glob("ssh_host_*_key.pub")):
        keytype, blob = pub.read_text().split()[:2]
        lines.append(f"{host.public_ip} {keytype} {blob}")
    return lines


def host_running(paths: LabPaths, host: LabHost) -> bool:
    return _pid_alive(_read_pid(paths.host(host, "pid")), "systemd-nspawn")


#: cgroup hierarchies nspawn uses (hybrid layout: systemd's named one + cgroup2).
CGROUP_HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
CGROUP_PARENT = "gpufab-lab"


def host_cgroups(host: LabHost) -> List[str]:
    """One cgroup per host in every writable hierarchy that nspawn uses.

    With --keep-unit, nspawn puts the container under the cgroup it was
    started in (…/payload). Started from the same cgroup, all hosts would
    share one tree: systemd in node2 would clean up, or kill, the unit
    cgroups of node1's services of the same name ("Failed at step CGROUP").
    """
    out = []
    for top in CGROUP_HIERARCHIES:
        if os.path.exists(os.path.join(top, "cgroup.procs")) and top not in out:
            out.append(os.path.join(top, CGROUP_PARENT, host.name))
    return out


def _enter_cgroups(paths: Sequence[str]) -> Callable[[], None]:
    def enter() -> None:  # runs in the child between fork and exec
        for path in paths:
            with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
    return enter


def remove_cgroups(host: LabHost) -> None:
    """Remove a stopped host's cgroups, deepest first (rmdir needs them empty)."""
    for path in host_cgroups(host):
        if not os.path.isdir(path):
            continue
        for current, _dirs, _files in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
            try:
                os.rmdir(current)
            except OSError:
                pass
        try:
            os.rmdir(os.path.dirname(path))  # the shared parent, once empty
        except OSError:
            pass


#: systemd-nspawn keeps a directory per machine here while it runs. Where /run is on the
#: root disk (no systemd as PID 1, as on this VM) one left by a killed nspawn stays, and
#: the next nspawn of that name refuses to boot ("Attempted to remove disk file system").
NSPAWN_PROPAGATE = "/run/systemd/nspawn/propagate"


def boot(paths: LabPaths, host: LabHost) -> None:
    if host_running(paths, host):
        return
    shutil.rmtree(os.path.join(NSPAWN_PROPAGATE, host.name), ignore_errors=True)
    cgroups = host_cgroups(host)
    for path in cgroups:
        os.makedirs(path, exist_ok=True)
    console = open(paths.host(host, "console.log"), "ab")
    proc = subprocess.Popen(
        plan.nspawn_command(host, paths.host(host, "root"), paths.host(host, "docker")),
        stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True,
        env={**os.environ, **plan.NSPAWN_ENV}, preexec_fn=_enter_cgroups(cgroups),
    )
    Path(paths.host(host, "pid")).write_text(f"{proc.pid}\n")


def ssh_answers(address: str, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(paths: LabPaths, hosts: Sequence[LabHost], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = list(hosts)
    while pending and time.monotonic() < deadline:
        for host in list(pending):
            if not host_running(paths, host):
                log = Path(paths.host(host, "console.log")).read_text(errors="replace").strip().splitlines()
                last = log[-1].strip() if log else "(no output)"
                raise LabError(f"lab: {host.name} stopped while booting ({last}); see {paths.host(host, 'console.log')}")
            if ssh_answers(host.public_ip):
                pending.remove(host)
        if pending:
            time.sleep(0.2)
    if pending:
        names = ", ".join(h.name for h in pending)
        raise LabError(f"lab: sshd did not answer on {names} within {timeout:.0f}s")


def _processes(name: str) -> Iterator[Tuple[int, str]]:
    """(pid, text of /proc/<pid>/<name>) for every process still there."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                yield int(entry), Path("/proc", entry, name).read_bytes().decode(errors="replace")
            except OSError:
                continue


def _container_init(nspawn_pid: int) -> Optional[int]:
    """The PID (on this machine) of systemd inside a host: nspawn's child."""
    for pid, stat in _processes("stat"):
        if int(stat.rsplit(")", 1)[1].split()[1]) == nspawn_pid:
            return pid
    return None


def wait_booted(paths: LabPaths, hosts: Sequence[LabHost], timeout: float = 120) -> None:
    """Wait until each host's boot has finished, not just its sshd.

    sshd answers while the boot still runs, and until systemd-user-sessions
    has run /run/nologin makes PAM refuse every user but root: a test logging
    in as the sudo user would fail as "authentication failed".
    """
    deadline = time.monotonic() + timeout
    for host in hosts:
        init = _container_init(_read_pid(paths.host(host, "pid")) or -1)
        if init is None:
            raise LabError(f"lab: {host.name} is not running")
        enter = ["nsenter", "-t", str(init), "-m", "-p", "--"]
        try:
            state = subprocess.run(enter + ["systemctl", "is-system-running", "--wait"], capture_output=True,
                                   text=True, timeout=max(1.0, deadline - time.monotonic())).stdout.strip()
        except subprocess.TimeoutExpired:
            state = "starting"
        if state not in ("running", "degraded"):
            jobs = subprocess.run(enter + ["systemctl", "list-jobs", "--no-legend", "--no-pager"],
                                  capture_output=True, text=True).stdout.strip().splitlines()
            waiting = "; ".join(" ".join(j.split()[1:3]) for j in jobs[:3]) or "no jobs listed"
            raise LabError(f"lab: {host.name} did not finish booting within {timeout:.0f}s "
                           f"(state {state or 'unknown'}; waiting on: {waiting})")


def stop_host(paths: LabPaths, host: LabHost, timeout: float = 30) -> bool:
    """Power a host off cleanly (nspawn turns SIGTERM into a poweroff); kill if it hangs."""
    return bool(stop_hosts(paths, [host], timeout))


def stop_hosts(paths: LabPaths, hosts: Sequence[LabHost], timeout: float = 30) -> List[LabHost]:
    """Power hosts off at once, under one deadline; returns those that were running.

    A host's poweroff after a bootstrap waits for its services (Docker, Ray, the
    share's mounts) to stop: one host after another, lab.down took 78 s on this
    machine; all at once, 14 s.
    """
    running = [(h, pid) for h in hosts for pid in [_read_pid(paths.host(h, "pid"))] if _pid_alive(pid, "systemd-nspawn")]
    for _, pid in running:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid, "systemd-nspawn") for _, pid in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    hung = [pid for _, pid in running if _pid_alive(pid, "systemd-nspawn")]
    for pid in hung:
        os.killpg(pid, signal.SIGKILL)
    if hung:
        time.sleep(0.5)
    for host, _ in running:
        remove_cgroups(host)
    return [h for h, _ in running]


def _lab_processes(paths: LabPaths) -> List[int]:
    """Every nspawn started on this lab's state dir, tracked by a pid file or not.

    A host left over by an interrupted run (its pid file gone with the state
    dir) would keep its old netns and mounts alive and break the next lab.up.
    """
    marker = f" {os.path.realpath(paths.state)}/"
    commands = ((pid, cmdline.replace("\0", " ")) for pid, cmdline in _processes("cmdline"))
    return [pid for pid, cmd in commands if cmd.startswith("systemd-nspawn ") and marker in cmd]


def _kill_strays(paths: LabPaths) -> int:
    pids = _lab_processes(paths)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while _lab_processes(paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(pids)


def lab_hosts(paths: LabPaths) -> List[LabHost]:
    """The hosts of the lab that exists now (from its state directory)."""
    try:
        count = int(Path(paths.state, "size").read_text())
    except (OSError, ValueError):
        return []
    return plan.plan_hosts(count)


# --------------------------------------------------------------------------- #
# Whole lab


def on_lab_host(paths: LabPaths, host: LabHost, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command on a lab host as root, over SSH with the lab's key."""
    return _run(["ssh", "-i", paths.key, "-o", f"UserKnownHostsFile={paths.known_hosts}", "-o", "BatchMode=yes",
                 "-o", "ConnectTimeout=10", f"root@{host.public_ip}", command], timeout=timeout)


def ensure_toolkit_repo(paths: LabPaths) -> str:
    """The stand-in NVIDIA container toolkit repository, built once and served on the bridge; its key's fingerprint."""
    from . import toolkit  # builds .debs with dpkg-deb: only for GPU-shaped labs
    directory = Path(paths.state, "nvidia-repo")
    fingerprint_file = Path(paths.state, "nvidia-repo.fingerprint")
    if not fingerprint_file.exists():
        fingerprint_file.write_text(toolkit.build_repo(directory) + "\n")
    pid_file = os.path.join(paths.state, "nvidia-repo.pid")
    if not _pid_alive(_read_pid(pid_file), "python3"):
        proc = subprocess.Popen(["python3", "-m", "http.server", str(plan.TOOLKIT_PORT), "--bind", str(plan.BRIDGE_IP),
                                 "--directory", str(directory)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        Path(pid_file).write_text(f"{proc.pid}\n")
    return fingerprint_file.read_text().strip()


def install_gpu_profiles(paths: LabPaths, hosts: Sequence[LabHost], profiles: Dict[str, Any]) -> None:
    """Each chosen host's GPU profile: its files into the host's root, its units on (at once and at every boot)."""
    from . import gpu
    for host in hosts:
        profile = profiles.get(host.name)
        if profile is None:
            continue
        root = paths.host(host, "root")
        for inner, (content, mode) in gpu.profile_files(profile).items():
            _write(root, inner, content, mode)
        on_lab_host(paths, host, gpu.ENABLE)


def lab_up(count: int, paths: Optional[LabPaths] = None, gpus: Optional[str] = None) -> List[LabHost]:
    paths = paths or LabPaths.from_env()
    require_root_and_tools()
    existing = lab_hosts(paths)
    if existing and len(existing) != count:
        raise LabError(f"lab: a lab of {len(existing)} hosts is already up; run inv lab.down first")
    from . import gpu  # the GPU profiles read captures with gpufab's parsers: loaded when a lab starts
    hosts = plan.plan_hosts(count)
    profiles = gpu.parse_gpus_option(gpus, [h.name for h in hosts])
    if not existing:
        _kill_strays(paths)
    base = ensure_base(paths)
    os.makedirs(paths.state, mode=0o700, exist_ok=True)
    Path(paths.state, "size").write_text(f"{count}\n")
    ensure_bridges()
    ensure_proxy(paths)
    pubkey = ensure_key(paths)
    known: List[str] = []
    for host in hosts:
        known += ensure_host(paths, host, hosts, base, pubkey)
    Path(paths.known_hosts).write_text("\n".join(known) + "\n")
    os.chmod(paths.known_hosts, 0o600)
    for host in hosts:
        boot(paths, host)
    wait_ssh(paths, hosts)
    wait_booted(paths, hosts)
    # A lab brought up again keeps the GPU profiles its hosts were given (they are in their roots).
    profiles = {**{h.name: gpu.PROFILES[p] for h in hosts for p in [gpu.installed_profile(paths.host(h, "root"))]
                   if p in gpu.PROFILES}, **profiles}
    fingerprint = ensure_toolkit_repo(paths) if profiles else ""
    install_gpu_profiles(paths, hosts, profiles)
    LAB_INVENTORY.parent.mkdir(exist_ok=True)
    LAB_INVENTORY.write_text(plan.lab_inventory(hosts, paths.key, paths.known_hosts,
                                                {n: p.name for n, p in profiles.items()}, fingerprint))
    return hosts


def _made_host_count(paths: LabPaths) -> int:
    """How many hosts the lab made, also for a half-made lab without a size file."""
    numbers = [len(lab_hosts(paths))]
    prefix = plan.NETNS_PREFIX + "node"
    numbers += [int(n[len(prefix):]) for n in _netns_list() if n.startswith(prefix) and n[len(prefix):].isdigit()]
    if os.path.isdir(paths.state):
        numbers += [int(d[4:]) for d in os.listdir(paths.state) if d.startswith("node") and d[4:].isdigit()]
    return max(numbers)


def lab_down(paths: Optional[LabPaths] = None) -> List[str]:
    """Remove everything the lab made; returns what was removed. Safe to repeat."""
    paths = paths or LabPaths.from_env()
    if os.geteuid() != 0:
        raise LabError("lab: must run as root")
    removed: List[str] = []
    count = _made_host_count(paths)
    hosts = plan.plan_hosts(count) if count else []
    removed += [f"host {h.name}" for h in stop_hosts(paths, hosts)]
    if _kill_strays(paths):
        removed.append("stray hosts")
    for host in hosts:
        remove_cgroups(host)
        root = paths.host(host, "root")
        if _is_mounted(root):
            _run(["umount", root])
            removed.append(f"mount {root}")
        if host.netns in _netns_list():
            _run(["ip", "netns", "del", host.netns])
            removed.append(f"netns {host.netns}")
        for link in (host.host_pub_veth, host.host_prv_veth):
            if _link_exists(link):
                try:
                    _run(["ip", "link", "del", link])
                except LabError:
                    # Deleting the netns takes its veth peers with it, asynchronously.
                    if _link_exists(link):
                        raise
    pid = _read_pid(os.path.join(paths.state, "tinyproxy.pid"))
    if _pid_alive(pid, "tinyproxy"):
        os.killpg(pid, signal.SIGTERM)
        removed.append("tinyproxy")
    pid = _read_pid(os.path.join(paths.state, "nvidia-repo.pid"))
    if _pid_alive(pid, "python3"):
        os.killpg(pid, signal.SIGTERM)
        removed.append("the stand-in NVIDIA repository's server")
    for bridge in (plan.PUBLIC_BRIDGE, plan.PRIVATE_BRIDGE):
        if _link_exists(bridge):
            _run(["ip", "link", "del", bridge])
            removed.append(f"bridge {bridge}")
    if os.path.isdir(paths.state):
        with open("/proc/mounts") as fh:
            busy = [line.split()[1] for line in fh if line.split()[1].startswith(os.path.realpath(paths.state) + "/")]
        if busy:
            raise LabError(f"lab: still mounted, not removing {paths.state}: {', '.join(busy)}")
        shutil.rmtree(paths.state)
        removed.append(f"dir {paths.state}")
    # The inventory, and bootstrap's report and failed-host list about these hosts.
    run = run_files(str(LAB_INVENTORY), from_cli_hosts=False)
    for path in (LAB_INVENTORY, Path(run.markdown), Path(run.json), Path(run.failed)):
        if path.exists():
            path.unlink()
            removed.append(str(path.relative_to(REPO)))
    return removed


def _host(paths: LabPaths, name: str) -> LabHost:
    for host in lab_hosts(paths):
        if host.name == name:
            return host
    raise LabError(f"lab: no lab host named {name!r} (is the lab up?)")


# --------------------------------------------------------------------------- #
# Tasks


@task(help={"nodes": "number of hosts (default 3)",
            "gpus": "GPU-shaped hosts: a profile for all (hgx-h100), or per host (node2=hgx-h100,node3=hgx-h100-broken)"})
@reported
def up(c, nodes=3, gpus=None):
    """Start the local lab: N systemd-booted Debian hosts reachable over SSH."""
    hosts = lab_up(int(nodes), gpus=gpus)
    print(host_table(["Node", "Public IP (SSH)", "Private IP", "Private NIC"],
                     [(h.name, h.public_ip, h.private_ip, h.private_nic) for h in hosts]))
    rel = LAB_INVENTORY.relative_to(REPO)
    print(f"lab: {len(hosts)} hosts up; inventory written to {rel}")
    print(f"lab: try  GPUFAB_INVENTORY={rel} inv exec hostname")


@task
@reported
def down(c):
    """Remove every netns, bridge, mount, process and file the lab made."""
    removed = lab_down()
    print("lab: removed " + (", ".join(removed) if removed else "nothing (no lab was up)"))


@task
@reported
def status(c):
    """Show each lab host: running, SSH answering, addresses."""
    paths = LabPaths.from_env()
    hosts = lab_hosts(paths)
    if not hosts:
        print("lab: no lab is up (inv lab.up)")
        return
    rows = []
    for h in hosts:
        running = host_running(paths, h)
        rows.append((h.name, "running" if running else "off", "yes" if running and ssh_answers(h.public_ip) else "no",
                     h.public_ip, h.private_ip, h.private_nic))
    print(host_table(["Node", "State", "SSH", "Public IP", "Private IP", "Private NIC"], rows))


@task(help={"name": "lab host to power off, e.g. node3"})
@reported
def poweroff(c, name):
    """Power one lab host off (its netns and disk stay), to test dead hosts."""
    paths = LabPaths.from_env()
    host = _host(paths, name)
    print(f"lab: {name} " + ("powered off" if stop_host(paths, host) else "was already off"))


@task(help={"name": "lab host to power on, e.g. node3"})
@reported
def poweron(c, name):
    """Boot a powered-off lab host again and wait for its sshd."""
    paths = LabPaths.from_env()
    host = _host(paths, name)
    boot(paths, host)
    wait_ssh(paths, [host])
    wait_booted(paths, [host])
    print(f"lab: {name} is up")
