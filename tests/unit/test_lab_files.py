"""The lab's own files (templates/lab/), as the lab writes and runs them: its units read as systemd reads
them, with the directives their job needs, and their shell run here on stub commands; the base image's
setup run in a temporary root; a GPU-shaped host's python wrapper run."""

from __future__ import annotations

import glob
import os
import stat
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from fabfile.lab import gpu as lab_gpu
from fabfile.lab import plan as lab
from helpers import exec_shell, unit_directives

DROPIN = "/etc/systemd/system/docker.service.d/10-lab-cgroups.conf"
#: A stub's body: it notes its name and arguments, one call a line.
NOTE = 'echo "${0##*/} $*" >> "$CALLS"'


def recording(tmp: Path, *names: str, **bodies: str) -> Tuple[Dict[str, str], Callable[[], List[str]]]:
    """Stub commands first on PATH (`names` only note their calls; `bodies` do what they say after noting
    theirs); the environment, and a reader of the calls they noted."""
    bin_dir, calls = tmp / "bin", tmp / "calls"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in {**{n: "" for n in names}, **bodies}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{NOTE}\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls))
    return env, lambda: [line.rstrip() for line in calls.read_text().splitlines()] if calls.exists() else []


def sh(text: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=60, env=env)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_gpu_unit_mounts_a_copy_of_sys_class_with_the_profiles_tree_early_at_boot(tmp_path):
    files = lab_gpu.profile_files(lab_gpu.PROFILES["hgx-h100"])
    text, mode = files[f"/etc/systemd/system/{lab_gpu.UNIT}"]
    unit = unit_directives(text)
    assert mode == 0o644 and unit["Unit"]["DefaultDependencies"] == ["no"]
    assert {"network-pre.target", "sysinit.target"} <= set(unit["Unit"]["Before"][0].split())
    assert unit["Service"]["Type"] == ["oneshot"] and unit["Service"]["RemainAfterExit"] == ["yes"]
    assert unit["Install"]["WantedBy"] == ["sysinit.target"]
    assert any(path.startswith(f"{lab_gpu.DATA}/sysfs/infiniband/") for path in files)  # the tree it copies in
    env, calls = recording(tmp_path, "mkdir", "mount", "cp")
    done = sh(exec_shell(unit["Service"]["ExecStart"][0]), env)
    assert done.returncode == 0, done.stderr
    d = "/run/gpufab-lab-class"
    assert calls() == [f"mkdir -p {d}", f"mount -t tmpfs -o mode=755 gpufab-lab-class {d}", f"cp -a /sys/class/. {d}/",
                       f"cp -a {lab_gpu.DATA}/sysfs/. {d}/", f"mount --bind {d} /sys/class"]
    # A file of /sys/class that cannot be copied (some cannot be read) does not keep the tree from its place.
    env, calls = recording(tmp_path / "cp-fails", "mkdir", "mount", cp='case "$2" in /sys/class/.) exit 1 ;; esac')
    assert sh(exec_shell(unit["Service"]["ExecStart"][0]), env).returncode == 0
    assert calls()[-1] == f"mount --bind {d} /sys/class"


def test_the_fabric_manager_stand_in_is_active_or_fails_as_on_a_version_mismatch():
    def unit(profile: str) -> Dict[str, Dict[str, List[str]]]:
        text, _ = lab_gpu.profile_files(lab_gpu.PROFILES[profile])[f"/etc/systemd/system/{lab_gpu.FM_UNIT}"]
        return unit_directives(text)

    healthy, broken = unit("hgx-h100"), unit("hgx-h100-broken")
    for u in (healthy, broken):
        assert u["Service"]["Type"] == ["oneshot"] and u["Install"]["WantedBy"] == ["multi-user.target"]
    assert healthy["Service"]["ExecStart"] == ["/bin/true"]
    failed = sh(exec_shell(broken["Service"]["ExecStart"][0]), dict(os.environ))
    assert failed.returncode == 1 and failed.stderr == "NVIDIA fabric manager: version mismatch\n"


def test_the_docker_drop_in_remounts_each_read_only_cgroup_v1_controller_writable(tmp_path):
    hosts = lab.plan_hosts(2)
    unit = unit_directives(lab.host_files(hosts[1], hosts, "ssh-ed25519 AAAA k\n", "0" * 32)[DROPIN])
    assert list(unit) == ["Service"] and list(unit["Service"]) == ["ExecStartPre"]
    script = exec_shell(unit["Service"]["ExecStartPre"][0])
    controllers = sorted(glob.glob("/sys/fs/cgroup/*/"))
    assert controllers, "this machine has no directory under /sys/fs/cgroup"
    # Every directory but the first is a cgroup v1 controller (cgroupfs); the first is not.
    answer = f'case "$4" in {controllers[0]}) echo cgroup2fs ;; *) echo cgroupfs ;; esac'
    env, calls = recording(tmp_path, "mount", stat=answer)
    done = sh(script, env)
    assert done.returncode == 0, done.stderr
    assert [c for c in calls() if c.startswith("mount")] == [f"mount -o remount,bind,rw {c}" for c in controllers[1:]]
    # A controller that will not remount does not keep dockerd from starting: the line ends true.
    env, calls = recording(tmp_path / "fails", mount="exit 32", stat="echo cgroupfs")
    assert sh(script, env).returncode == 0 and len([c for c in calls() if c.startswith("mount")]) == len(controllers)


def test_the_base_setup_leaves_no_host_keys_or_machine_id_and_makes_the_sudo_user(tmp_path):
    root = tmp_path / "base"
    (root / "etc" / "ssh").mkdir(parents=True)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config"):
        (root / "etc" / "ssh" / name).write_text("x\n")
    (root / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    sudoers = root / "etc" / "sudoers.d" / "gpufab-lab"
    sudoers.parent.mkdir()
    sudoers.write_text(lab.base_files()["/etc/sudoers.d/gpufab-lab"])
    sudoers.chmod(0o644)
    env, calls = recording(tmp_path, "systemctl", "useradd", "update-ca-certificates", "apt-get",
                           id="exit 1", chpasswd='echo "chpasswd < $(cat)" >> "$CALLS"')
    script = lab.base_setup_script(str(root))
    # What the lab runs in the image (chroot, `/` its root) is this, rooted at `/`.
    assert lab.base_setup_script() == script.replace(f"{root}/", "/")
    done = sh(script, env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "etc" / "ssh").iterdir()) == ["sshd_config"]
    assert (root / "etc" / "machine-id").read_text() == ""  # systemd makes each host's own at first boot
    assert mode_of(sudoers) == 0o440 and (root / "var" / "lib" / "docker").is_dir()
    assert mode_of(root / "root" / ".ssh") == 0o700
    masked = calls()[0].split()
    assert masked[:2] == ["systemctl", "mask"] and {"apt-daily.timer", "apt-daily-upgrade.timer",
                                                     "systemd-timesyncd.service", "getty@tty1.service"} <= set(masked)
    assert calls()[1:] == [f"id {lab.SUDO_USER}", f"useradd -m -s /bin/bash {lab.SUDO_USER}", "chpasswd",
                           f"chpasswd < {lab.SUDO_USER}:{lab.SUDO_PASSWORD}", "update-ca-certificates", "apt-get clean"]
    # Run again where the user is there (`id` finds it): no second useradd. A base without its sudoers file
    # stops there (set -e): no half-made image is cached as ready.
    sudoers.unlink()
    env, calls = recording(tmp_path / "again", "systemctl", "useradd", "update-ca-certificates", "apt-get", "chpasswd",
                           id="exit 0")
    failed = sh(script, env)
    assert failed.returncode != 0 and "chmod" in failed.stderr
    assert [c.split()[0] for c in calls()] == ["systemctl", "id", "chpasswd"]


def test_the_gpu_hosts_python_puts_the_stand_in_torch_first_and_keeps_the_callers_path(tmp_path):
    text, mode = lab_gpu.profile_files(lab_gpu.PROFILES["hgx-h100"])["/usr/local/bin/python-gpu"]
    assert mode == 0o755
    wrapper = tmp_path / "python-gpu"
    wrapper.write_text(text)
    wrapper.chmod(mode)
    probe = ["-c", "import os, sys; print(os.environ['PYTHONPATH']); print(sys.argv[1:])", "a b", "c"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(wrapper), *probe], capture_output=True, text=True, timeout=60, env=env).stdout
    assert out.splitlines() == [lab_gpu.SITE, "['a b', 'c']"]
    out = subprocess.run([str(wrapper), *probe], capture_output=True, text=True, timeout=60,
                         env=dict(env, PYTHONPATH="/mine")).stdout
    assert out.splitlines() == [f"{lab_gpu.SITE}:/mine", "['a b', 'c']"]
