#!/usr/bin/env python3
"""Every gpufab benchmark in one command; writes bench/RESULTS.md.

    .venv/bin/pip install -e '.[bench]'      # the peer tools (once)
    .venv/bin/python bench/run.py            # as root, from the repo root

Five benchmarks, none needing a real cluster:

- fan-out: `true` on N = 8, 32, 128 SSH targets (one local sshd on N
  addresses, see targets.py) by gpufab `exec` and five peers, whole-process
  wall time, median of --runs after one warm-up round, the tools taking turns
  in every round so that a slow minute of the machine hits them all; then
  one sampled run each for peak memory and threads; then gpufab alone (with
  the two fastest peers for scale) at 512 targets.
- warm commands: one connection per host, --repeat commands in sequence
  on each, N = 1 and 32: milliseconds per command.
- bootstrap on the nspawn lab: a first run and a no-op re-run, 1 host vs 3.
- all-reduce on the nspawn lab: `inv allreduce --json` on 3 hosts (Gloo,
  Debian's CPU torch): time, algbw and busbw per size beside the raw TCP link.
- start-up: `gpufab --list` and `gpufab exec true` on one lab host against
  the floor every Fabric tool pays, `python -c 'import fabric'`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
PEERS = str(REPO / "bench" / "peers.py")

from bench.targets import Targets  # noqa: E402

Argv = Tuple[List[str], Dict[str, str]]
#: What every measured process gets: this environment, with bytecode caching on
#: as a user has it (a PYTHONDONTWRITEBYTECODE=1 shell recompiles gpufab's own
#: modules on every run, while the peers' installed .pyc files are used).
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Tool:
    name: str
    command: Callable[[int, Dict[str, str], Targets], Argv]


def gpufab_exec(n: int, files: Dict[str, str], t: Targets) -> Argv:
    return [str(BIN / "inv"), "exec", "-q", "--workers", str(n), "true"], {"GPUFAB_INVENTORY": files["gpufab"]}


def gpufab_exec_bounded(workers: int) -> Callable[[int, Dict[str, str], Targets], Argv]:
    """gpufab as configured by default: at most `workers` hosts (and threads) at once."""
    def command(n: int, files: Dict[str, str], t: Targets) -> Argv:
        return [str(BIN / "inv"), "exec", "-q", "--workers", str(workers), "true"], {"GPUFAB_INVENTORY": files["gpufab"]}
    return command


def peer(name: str, *extra: str) -> Callable[[int, Dict[str, str], Targets], Argv]:
    """A client of bench/peers.py, with its extra arguments."""
    def command(n: int, files: Dict[str, str], t: Targets) -> Argv:
        return [sys.executable, PEERS, name, files["hosts"], t.key, t.known_hosts, "--port", str(t.port), *extra], {}
    return command


def ansible_adhoc(module: str) -> Callable[[int, Dict[str, str], Targets], Argv]:
    """`ansible targets -m MODULE -a true -f N`.

    command is what `ansible -a` runs by default (a Python module copied to
    and run on each target); raw is Ansible's fastest ad-hoc path (the command
    alone). ControlPersist is off, or later rounds would reuse master connections.
    """
    def command(n: int, files: Dict[str, str], t: Targets) -> Argv:
        return [str(BIN / "ansible"), "targets", "-i", files["ansible"], "-m", module, "-a", "true", "-f", str(n)], {
            "ANSIBLE_SSH_ARGS": f"-o ControlMaster=no -o ControlPersist=no -o UserKnownHostsFile={t.known_hosts}"
                                " -o StrictHostKeyChecking=yes",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_HOME": str(t.state / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(t.state / "ansible" / "tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        }
    return command


def pyinfra_exec(n: int, files: Dict[str, str], t: Targets) -> Argv:
    return [str(BIN / "pyinfra"), "-y", "--parallel", str(n), files["pyinfra"], "exec", "--", "true"], {}


TOOLS = [
    Tool("gpufab exec", gpufab_exec),
    Tool("Fabric ThreadingGroup", peer("fabric-group")),
    Tool("asyncssh + gather", peer("asyncssh")),
    Tool("parallel-ssh", peer("parallel-ssh")),
    Tool("Ansible ad-hoc (-f N, default command module)", ansible_adhoc("command")),
    Tool("Ansible ad-hoc (-f N, -m raw)", ansible_adhoc("raw")),
    Tool("pyinfra exec --parallel N", pyinfra_exec),
]
#: At 512 hosts: gpufab bounded (its default 32 workers, and 128) and unbounded,
#: with the two fastest peers for scale.
BIG_TOOLS = [
    Tool("gpufab exec --workers 32 (default)", gpufab_exec_bounded(32)),
    Tool("gpufab exec --workers 128", gpufab_exec_bounded(128)),
    TOOLS[0], TOOLS[1], TOOLS[2],
]


def timed(argv: Argv, cwd: Path) -> Optional[float]:
    """Whole-process wall seconds, or None when the run failed (said on stderr).

    A tool failing some hosts under load is a result to report, not a reason
    to throw away every other measurement.
    """
    args, extra = argv
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env={**BASE_ENV, **extra}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout[-1500:] + proc.stderr[-1500:]).strip()
        print(f"bench: {' '.join(args)} exited {proc.returncode}:\n{tail}", file=sys.stderr, flush=True)
        return None
    return seconds


@dataclass
class Peak:
    rss_mib: float = 0.0
    threads: int = 0
    processes: int = 0
    failed: bool = False

    def cell(self) -> str:
        text = f"{self.rss_mib:.0f} MiB, {self.threads} thr, {self.processes} proc"
        return text + (" (run failed)" if self.failed else "")


def sampled(argv: Argv, cwd: Path, every: float = 0.02) -> Peak:
    """Peak RSS summed over the process tree, peak threads and processes.

    Sampled in a separate run from the timed ones (sampling costs CPU). Forked
    workers (Ansible) count their shared pages once each, so their sum is an
    upper bound.
    """
    import psutil

    args, extra = argv
    import tempfile

    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(args, cwd=cwd, env={**BASE_ENV, **extra}, stdout=log, stderr=subprocess.STDOUT)
    peak = Peak()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        rss = threads = count = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                    threads += p.num_threads()
                    count += 1
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak.rss_mib = max(peak.rss_mib, rss / 2**20)
        peak.threads = max(peak.threads, threads)
        peak.processes = max(peak.processes, count)
        time.sleep(every)
    if proc.returncode != 0:
        log.seek(0)
        print(f"bench: {' '.join(args)} exited {proc.returncode} (sampled run):\n{log.read()[-1500:]}",
              file=sys.stderr, flush=True)
        peak.failed = True
    return peak


@dataclass
class FanOut:
    n: int
    medians: Dict[str, float] = field(default_factory=dict)
    samples: Dict[str, List[float]] = field(default_factory=dict)
    failures: Dict[str, int] = field(default_factory=dict)
    peaks: Dict[str, Peak] = field(default_factory=dict)

    def cell(self, name: str) -> str:
        """`median (ratio to the fastest)`, and how many timed runs failed."""
        failed = self.failures.get(name, 0)
        runs = len(self.samples[name]) + failed
        if name not in self.medians:
            return f"failed {failed} of {runs} runs"
        text = f"{self.medians[name]:.2f} ({self.medians[name] / min(self.medians.values()):.2f}×)"
        return text + (f", failed {failed} of {runs} runs" if failed else "")


def fan_out(t: Targets, n: int, tools: Sequence[Tool], runs: int) -> FanOut:
    files = t.files(n)
    result = FanOut(n, samples={tool.name: [] for tool in tools})
    for round_ in range(runs + 1):  # round 0 is the warm-up
        order = list(tools[round_ % len(tools):]) + list(tools[:round_ % len(tools)])
        for tool in order:
            seconds = timed(tool.command(n, files, t), REPO)
            if round_ and seconds is None:
                result.failures[tool.name] = result.failures.get(tool.name, 0) + 1
            elif round_:
                result.samples[tool.name].append(seconds)
        print(f"  N={n} round {round_ or 'warm-up'} done", flush=True)
    result.medians = {name: statistics.median(s) for name, s in result.samples.items() if s}
    for tool in tools:
        result.peaks[tool.name] = sampled(tool.command(n, files, t), REPO)
    return result


def warm_commands(t: Targets, sizes: Sequence[int], runs: int, repeat: int) -> Dict[Tuple[str, int], float]:
    tools = ("warm-gpufab", "warm-fabric", "warm-asyncssh")
    out: Dict[Tuple[str, int], List[float]] = {}
    for n in sizes:
        files = t.files(n)
        for round_ in range(runs + 1):
            for tool in tools[round_ % 3:] + tools[:round_ % 3]:
                args, _ = peer(tool, "--repeat", str(repeat), "--inventory", files["gpufab"])(n, files, t)
                proc = subprocess.run(args, cwd=REPO, env=BASE_ENV, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"bench: {tool} failed:\n{proc.stdout}{proc.stderr}")
                if round_:
                    out.setdefault((tool, n), []).append(float(proc.stdout.split()[-1]))
    return {k: statistics.median(v) for k, v in out.items()}


def inv(*args: str, env: Optional[Dict[str, str]] = None) -> float:
    seconds = timed(([str(BIN / "inv"), *args], env or {}), REPO)
    if seconds is None:
        sys.exit(f"bench: inv {' '.join(args)} failed")
    return seconds


#: The code a first bootstrap is compared with: the commit before the step graph, uv and one download per cluster.
BASELINE = "cc77122"
PROXY_PID = Path("/var/lib/gpufab/lab/tinyproxy.pid")
PROGRESS_RE = re.compile(r"^\[\s*([\d.]+)s\] (\S+)\s+(\S+)\s+(ok|changed|failed|skipped|unreachable|checked)\s+([\d.]+)s", re.M)


@dataclass
class Boot:
    """One first bootstrap on a fresh lab, and the same command again."""

    first: float
    again: float
    #: Bytes the lab's proxy read: what the hosts fetched from outside the lab.
    fetched: int
    #: Per step: (seconds its slowest host took, seconds into the run it ended).
    steps: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    #: Share of the machine's CPU time busy during the first run (the lab's hosts share its cores).
    cpu_busy: float = 0.0
    #: CPU seconds the whole machine spent during the first run (all hosts, the client, the proxy).
    cpu_seconds: float = 0.0


def cpu_times() -> Tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def proxy_read_bytes() -> int:
    """All the proxy has read so far (upstream bodies and the hosts' small requests), from /proc."""
    pid = PROXY_PID.read_text().strip()
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise SystemExit("bench: cannot read the lab proxy's I/O counters")


def step_times(output: str) -> Dict[str, Tuple[float, float]]:
    steps: Dict[str, Tuple[float, float]] = {}
    for at, _node, step, _status, took in PROGRESS_RE.findall(output):
        seen = steps.get(step, (0.0, 0.0))
        steps[step] = (max(seen[0], float(took)), max(seen[1], float(at)))
    return steps


def checkout(rev: str) -> Path:
    """The baseline's code in a temporary worktree (removed afterwards by `drop_checkout`)."""
    path = Path(f"/tmp/gpufab-baseline-{rev}")
    drop_checkout(path)
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=REPO, check=True)
    return path


def drop_checkout(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True)


def bootstrap_in(tree: Path, n: int) -> Boot:
    """A fresh lab of n hosts (this tree's lab tasks), then `inv bootstrap` twice with `tree`'s code."""
    inv("lab.down")
    inv("lab.up", "--nodes", str(n))
    env = {**BASE_ENV, "GPUFAB_INVENTORY": str(REPO / "inventory" / "lab.yaml"), "PYTHONPATH": str(tree)}
    before = proxy_read_bytes()
    cpu_before = cpu_times()
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "inv"), "bootstrap"], cwd=tree, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    first = time.monotonic() - start
    fetched = proxy_read_bytes() - before
    cpu_after = cpu_times()
    busy = (cpu_after[0] - cpu_before[0]) / max(1, cpu_after[1] - cpu_before[1])
    cpu_seconds = (cpu_after[0] - cpu_before[0]) / os.sysconf("SC_CLK_TCK")
    if proc.returncode != 0:
        sys.exit(f"bench: bootstrap with {tree} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    start = time.monotonic()
    again = subprocess.run([str(BIN / "inv"), "bootstrap"], cwd=tree, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    if again.returncode != 0:
        sys.exit(f"bench: the re-run with {tree} failed:\n{again.stdout[-3000:]}")
    return Boot(first, seconds, fetched, step_times(proc.stdout), busy, cpu_seconds)


def bootstrap_on_lab(sizes: Sequence[int], baseline: Optional[str]) -> Dict[Tuple[str, int], Boot]:
    """Per (code, hosts): a first bootstrap and its no-op re-run; the baseline and this tree take turns."""
    out: Dict[Tuple[str, int], Boot] = {}
    base = checkout(baseline) if baseline else None
    trees = ([("baseline", base)] if base else []) + [("this tree", REPO)]
    try:
        for n in sizes:
            for label, tree in trees:
                boot = bootstrap_in(tree, n)
                out[(label, n)] = boot
                print(f"  bootstrap ({label}) on {n} host(s): first {boot.first:.1f} s, re-run {boot.again:.1f} s,"
                      f" {boot.fetched / 2**20:.0f} MiB through the proxy", flush=True)
    finally:
        inv("lab.down")
        if base:
            drop_checkout(base)
    return out


def bootstrap_section(boot: Dict[Tuple[str, int], Boot], baseline: Optional[str], command: str) -> List[str]:
    labels = list(dict.fromkeys(label for label, _ in boot))
    sizes = sorted({n for _, n in boot})
    head = f"this tree against {baseline}" if baseline else "this tree"
    tree = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    lines = [f"## `inv bootstrap` on the nspawn lab: {head} (fresh lab, then the same command again)", "",
             f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by `{command}`, this tree at"
             f" {tree}; the baseline"
             " (its code in a temporary git worktree) and this tree take turns on the same machine and network."
             " Bytes: what the lab's proxy read (`/proc/PID/io` rchar of tinyproxy), i.e. what the hosts"
             " fetched from outside the lab, with TLS and request overhead.", ""]
    rows = [[label, str(n), f"{b.first:.1f}", f"{b.again:.1f}", f"{b.again / b.first:.0%}", f"{b.fetched / 2**20:.0f}",
             f"{b.cpu_seconds:.0f} ({b.cpu_busy:.0%})"] for (label, n), b in boot.items()]
    lines += [fmt_table(["code", "hosts", "first run s", "no-op re-run s", "re-run / first", "MiB fetched",
                         f"CPU s of the machine's {os.cpu_count()} cores (busy)"], rows), ""]
    ratios = []
    for label in labels:
        one, three = boot.get((label, min(sizes))), boot.get((label, max(sizes)))
        if one and three and one is not three:
            ratios.append(f"{label}: {max(sizes)} hosts take {three.first / one.first:.2f}× the time of {min(sizes)}"
                          f" and fetch {three.fetched / one.fetched:.2f}× its bytes; the re-run is"
                          f" {three.again / one.again:.2f}× as long")
    if len(labels) == 2:
        for n in sizes:
            ratios.append(f"{n} host(s): this tree's first run takes {boot[(labels[1], n)].first / boot[(labels[0], n)].first:.2f}×"
                          f" the baseline's")
    lines += [f"- {r}" for r in ratios] + [""]
    steps = list(dict.fromkeys(s for b in boot.values() for s in b.steps))
    rows = [[step] + [f"{b.steps[step][0]:.1f} (ends {b.steps[step][1]:.1f})" if step in b.steps else "-"
                      for b in boot.values()] for step in steps]
    lines += ["Per step, first run: seconds its slowest host took (and seconds into the run it ended).", "",
              fmt_table(["step"] + [f"{label}, {n} host{'s' if n > 1 else ''}" for label, n in boot], rows), ""]
    return lines


ALLREDUCE_SIZES = "1M,16M,64M,256M"


def allreduce_on_lab(n: int, runs: int) -> List[dict]:
    """`inv allreduce --json` on a fresh lab of n hosts (netenv set up first), `runs` times."""
    env = {"GPUFAB_INVENTORY": str(REPO / "inventory" / "lab.yaml")}
    out = []
    try:
        inv("lab.down")
        inv("lab.up", "--nodes", str(n))
        inv("netenv.setup", env=env)
        for _ in range(runs):
            proc = subprocess.run([str(BIN / "inv"), "allreduce", "--sizes", ALLREDUCE_SIZES, "--json"], cwd=REPO,
                                  env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                sys.exit(f"bench: inv allreduce failed:\n{proc.stdout}{proc.stderr}")
            out.append(json.loads(proc.stdout)["groups"][0])
        print(f"  allreduce on {n} hosts: {runs} runs", flush=True)
    finally:
        inv("lab.down")
    return out


def startup_on_lab(runs: int) -> Dict[str, float]:
    """Median whole-process seconds of each start-up case, the cases taking turns in every round."""
    env = {"GPUFAB_INVENTORY": str(REPO / "inventory" / "lab.yaml")}
    gpufab = str(BIN / "gpufab")
    cases: Dict[str, Argv] = {
        "`python -c 'import fabric'` (the floor)": ([sys.executable, "-c", "import fabric"], {}),
        "`gpufab --list`": ([gpufab, "--list"], {}),
        "`inv --list` (in the repo)": ([str(BIN / "inv"), "--list"], {}),
        "`gpufab exec true --quiet` (1 lab host)": ([gpufab, "exec", "true", "--quiet"], env),
    }
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    try:
        inv("lab.down")
        inv("lab.up", "--nodes", "1")
        for round_ in range(runs + 1):  # round 0 warms caches and records the host key
            for name, argv in cases.items():
                seconds = timed(argv, REPO)
                if seconds is None:
                    sys.exit(f"bench: {name} failed")
                if round_:
                    samples[name].append(seconds)
        print(f"  start-up: {runs} rounds", flush=True)
    finally:
        inv("lab.down")
    return {name: statistics.median(v) for name, v in samples.items()}


def startup_section(medians: Dict[str, float], runs: int) -> List[str]:
    floor = next(iter(medians.values()))
    rows = [[name, f"{sec:.2f}", f"{sec - floor:+.2f}"] for name, sec in medians.items()]
    return [f"## Start-up: whole-process wall seconds (median of {runs})", "",
            "Each command as a user runs it, from the repo root with warm caches; `gpufab exec true`"
            " opens a new connection to one lab host each time.", "",
            fmt_table(["command", "wall s", "over the floor"], rows), ""]


def allreduce_section(n: int, runs: Sequence[dict]) -> List[str]:
    """Median per size of time, algbw, busbw; the slowest link of each run beside it."""
    sizes = [s["bytes"] for s in runs[0]["sizes"]]
    link = statistics.median(min(link["bytes_per_s"] for link in r["links"]) for r in runs)
    tool = runs[0]["links"][0]["tool"]
    rows = []
    for i, size in enumerate(sizes):
        secs = statistics.median(r["sizes"][i]["seconds"] for r in runs)
        algbw = statistics.median(r["sizes"][i]["algbw_bytes_per_s"] for r in runs)
        busbw = statistics.median(r["sizes"][i]["busbw_bytes_per_s"] for r in runs)
        rows.append([f"{size >> 20} MiB", f"{secs * 1e3:.1f}", f"{algbw / 1e9:.3f}", f"{busbw / 1e9:.3f}",
                     f"{link / 1e9:.2f}", f"{busbw / link:.0%}"])
    ranks = runs[0]["ranks"]
    return [f"## `inv allreduce` on the nspawn lab: {n} hosts, {runs[0]['backend']}, median of {len(runs)}", "",
            f"One process per host ({', '.join(r['interface'] for r in ranks)}, each host's netenv NIC), Debian's"
            f" CPU torch, veth links through a bridge on this machine's cores. Link: the slowest host→head TCP"
            f" stream ({tool}, 2 s).", "",
            fmt_table(["size", "time ms", "algbw GB/s", "busbw GB/s", "link GB/s", "busbw / link"], rows), ""]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}"


def versions() -> str:
    names = ("fabric", "invoke", "paramiko", "asyncssh", "parallel-ssh", "ansible-core", "pyinfra")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    sshd = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return f"gpufab {commit}, Python {platform.python_version()}, " + ", ".join(found) + f"; sshd: {sshd}"


def fmt_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)


def fan_out_section(results: Sequence[FanOut], runs: int) -> List[str]:
    lines = [f"## Fan-out: `true` on N hosts, whole-process wall seconds (median of {runs})", ""]
    names = list(results[0].samples)
    rows = [[name] + [r.cell(name) for r in results] for name in names]
    lines += [fmt_table(["tool"] + [f"N={r.n}" for r in results], rows), "",
              "(×: ratio to the fastest tool at that N.)", "",
              "Peak memory (RSS summed over the process tree), threads and processes, one sampled run:", ""]
    rows = [[name] + [r.peaks[name].cell() for r in results] for name in names]
    lines += [fmt_table(["tool"] + [f"N={r.n}" for r in results], rows), ""]
    return lines


def write_results(path: Path, command: str, fan: Sequence[FanOut], big: Optional[FanOut],
                  warm: Dict[Tuple[str, int], float], boot: Dict[Tuple[str, int], Boot], runs: int,
                  repeat: int, allreduce: Optional[List[dict]] = None,
                  startup: Optional[Dict[str, float]] = None, baseline: Optional[str] = None,
                  keep: bool = False) -> None:
    lines = ["# gpufab benchmarks", "",
             f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
             f"- Machine: {machine()}",
             f"- Versions: {versions()}",
             f"- Command: `{command}` (as root, from the repo root)",
             "- Targets: one local sshd on N addresses in 198.18.64.0/22 (bench/targets.py), user with /bin/sh;"
             " client and server share the machine's cores.",
             "- Every run connects anew (Ansible's ControlPersist is off). Host keys are checked by gpufab,"
             " asyncssh, Ansible and pyinfra; Fabric (AutoAddPolicy) and parallel-ssh do not check them,"
             " their defaults. gpufab's time includes `inv` loading its whole task collection.", ""]
    if fan:
        lines += fan_out_section(fan, runs)
    if big:
        lines += [f"## {big.n} hosts: bounded and unbounded (median of {max(3, runs // 2)})", "",
                  "`gpufab exec` alone uses concurrency N; with `--workers W` at most W hosts, and their"
                  " threads, are worked on at once.", ""]
        rows = [[name, big.cell(name), f"{big.peaks[name].rss_mib:.0f} MiB", str(big.peaks[name].threads)]
                for name in big.samples]
        lines += [fmt_table(["tool", "wall s (median)", "peak RSS", "peak threads"], rows), ""]
    if warm:
        sizes = sorted({n for _, n in warm})
        lines += [f"## Warm connection: {repeat} commands in sequence per host, ms per command (median of {runs})", ""]
        rows = [[tool.replace("warm-", "")] + [f"{warm[(tool, n)]:.1f}" for n in sizes]
                for tool in ("warm-gpufab", "warm-fabric", "warm-asyncssh")]
        lines += [fmt_table(["tool"] + [f"N={n}" for n in sizes], rows), ""]
    if boot:
        lines += bootstrap_section(boot, baseline, command)
    if allreduce:
        lines += allreduce_section(len(allreduce[0]["nodes"]), allreduce)
    if startup:
        lines += startup_section(startup, runs)
    text = "\n".join(lines)
    if keep and path.exists():
        text = merge_sections(path.read_text(), text)
    path.write_text(text)


def merge_sections(old: str, new: str) -> str:
    """A partial run (--skip) replaces only the sections it measured; the others, and the header, stay."""
    def split(text: str) -> List[str]:
        return re.split(r"(?m)^(?=## )", text)

    def key(section: str) -> str:
        return re.split(r"[:(]", section.splitlines()[0])[0].strip() if section.startswith("## ") else ""

    fresh = {key(s): s for s in split(new)[1:]}
    out, used = [], set()
    parts = split(old)
    out.append(parts[0])
    for section in parts[1:]:
        k = key(section)
        if k in fresh and k not in used:
            out.append(fresh[k].rstrip("\n") + "\n\n")
            used.add(k)
        else:
            out.append(section)
    out += [s.rstrip("\n") + "\n\n" for k, s in fresh.items() if k not in used]
    return "".join(out).rstrip("\n") + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="8,32,128", help="fan-out host counts")
    p.add_argument("--big", type=int, default=512, help="host count for the bounded-threads run (0: skip)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per tool after the warm-up")
    p.add_argument("--repeat", type=int, default=20, help="commands per host on a warm connection")
    p.add_argument("--skip", default="", help="comma-separated: fanout, warm, bootstrap, allreduce, startup")
    p.add_argument("--tools", default="", help="comma-separated: only the fan-out tools whose name contains one of these")
    p.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"))
    p.add_argument("--baseline", default=BASELINE,
                   help=f"commit whose first bootstrap this tree's is compared with (default {BASELINE}; '' for none)")
    p.add_argument("--boot-sizes", default="1,3", help="lab host counts for the bootstrap benchmark")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it adds addresses, a user and an sshd, and runs the lab)")
    skip = set(filter(None, a.skip.split(",")))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "fabfile", "bench", "tasks.py"], cwd=REPO,
                   env=BASE_ENV, check=True, stdout=subprocess.DEVNULL)
    sizes = [int(s) for s in a.sizes.split(",")]
    wanted = [w.strip() for w in a.tools.split(",") if w.strip()]
    tools = [tool for tool in TOOLS if not wanted or any(w in tool.name for w in wanted)]
    fan: List[FanOut] = []
    big: Optional[FanOut] = None
    warm: Dict[Tuple[str, int], float] = {}
    with Targets(max(sizes + [a.big, 32])) as t:
        if "fanout" not in skip:
            for n in sizes:
                fan.append(fan_out(t, n, tools, a.runs))
            if a.big:
                big = fan_out(t, a.big, BIG_TOOLS, max(3, a.runs // 2))
        if "warm" not in skip:
            warm = warm_commands(t, (1, 32), a.runs, a.repeat)
    boot = bootstrap_on_lab([int(x) for x in a.boot_sizes.split(",")], a.baseline or None) \
        if "bootstrap" not in skip else {}
    reduced = allreduce_on_lab(3, max(3, a.runs // 2)) if "allreduce" not in skip else []
    started = startup_on_lab(a.runs) if "startup" not in skip else {}
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    write_results(Path(a.out), command, fan, big, warm, boot, a.runs, a.repeat, reduced, started, a.baseline or None,
                  keep=bool(skip))
    print(Path(a.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
