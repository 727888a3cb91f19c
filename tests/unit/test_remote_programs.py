"""templates/remote/: every shell program shellcheck-clean as it is sent, and the core's programs run here.

`SAMPLES` gives each program that takes values the values it is rendered with
here; a program that reads a value it is not given fails shellcheck (SC2154).
INSTALL_SCRIPT runs against a temporary root: its backup directory is a value,
its paths are arguments, so every path it writes is under the test's tmp_path.
"""

from __future__ import annotations

import grp
import hashlib
import importlib
import os
import pkgutil
import pwd
import shutil
import stat
import time
import subprocess
from pathlib import Path
from typing import Dict

import pytest

import fabfile
from fabfile.core import programs
from fabfile.core.files import BACKUP_DIR
from fabfile.core.remote import HOME_WRITE_SCRIPT, INSTALL_SCRIPT
from helpers import exec_shell, stubs, unit_directives

# Every module loaded: the programs made at import are in programs.RENDERED as the code sends them.
for _module in pkgutil.walk_packages(fabfile.__path__, "fabfile."):
    importlib.import_module(_module.name)

#: Values for the programs the code makes only when it sends them (none made at import).
SAMPLES: Dict[str, Dict[str, object]] = {}

SHELL_PROGRAMS = sorted(n for n, kind in programs.names().items() if kind == "sh")
PYTHON_PROGRAMS = sorted(n for n, kind in programs.names().items() if kind == "py")


def sent(name: str) -> str:
    """The program as the code sends it (or, made only when sent, with SAMPLES' values)."""
    if name in SAMPLES:
        return programs.text(name, **SAMPLES[name])
    assert name in programs.RENDERED, f"{name}: not made by any module at import; give it SAMPLES"
    return programs.RENDERED[name]


def lab_shell() -> Dict[str, str]:
    """The lab's own shell (templates/lab/), as the lab runs it: the base's setup, a GPU host's python
    wrapper, and each `/bin/sh -c` line of the units it writes."""
    from fabfile.lab import gpu as lab_gpu, plan as lab_plan
    hosts = lab_plan.plan_hosts(1)
    files = {f"{p.name}:{path}": content for p in lab_gpu.PROFILES.values()
             for path, (content, _mode) in lab_gpu.profile_files(p).items()}
    files.update({f"host:{path}": content for path, content in lab_plan.host_files(hosts[0], hosts, "", "0").items()})
    out = {"lab/base-setup.sh.j2": lab_plan.base_setup_script(),
           "lab/python-gpu.j2": files["hgx-h100:/usr/local/bin/python-gpu"]}
    for name, content in files.items():
        if name.endswith((".service", ".conf")) and "/systemd/" in name:
            for key, values in unit_directives(content).get("Service", {}).items():
                out.update({f"{name} {key}": exec_shell(v) for v in values if v.startswith("/bin/sh -c ")})
    return {name: text for text, name in {text: name for name, text in out.items()}.items()}  # each text once


def test_every_shell_program_is_shellcheck_clean_as_sent():
    assert shutil.which("shellcheck"), "shellcheck is missing: scripts/install installs it (Debian's shellcheck)"
    texts = {name: sent(name) for name in SHELL_PROGRAMS}
    calls = {name: text for name, text in programs.RENDERED.items() if name.endswith("()")}
    assert {"gpu_count()", "ib_ports()"} <= set(calls)  # library functions sent as programs
    texts.update(calls)
    lab = lab_shell()
    assert len([n for n in lab if " Exec" in n]) == 3  # the GPU unit, the failing fabric manager, docker's drop-in
    texts.update(lab)
    failed = {}
    for name, text in texts.items():
        out = subprocess.run(["shellcheck", "-s", "sh", "-"], input=text, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            failed[name] = out.stdout
    assert failed == {}, "\n".join(f"== {n}\n{o}" for n, o in failed.items())


def test_library_is_shellcheck_clean_and_its_functions_are_found():
    names = [n for n, _ in programs.library()]
    assert len(names) == len(set(names))
    if shutil.which("shellcheck"):
        out = subprocess.run(["shellcheck", "-s", "sh", str(programs.DIRECTORY / programs.LIBRARY)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout
    for name, body in programs.library():
        assert body.startswith(f"{name}() {{") and body.endswith("\n}\n"), name


def test_every_python_program_compiles():
    for name in PYTHON_PROGRAMS:
        compile(programs.text(name), name, "exec")


def test_values_are_quoted_assignments_never_spliced_code():
    text = programs.text("install-files.sh", backup="/tmp/x'; touch /tmp/pwned; '")
    assert text.splitlines()[0] == "backup='/tmp/x'\"'\"'; touch /tmp/pwned; '\"'\"''"
    assert programs.source("install-files.sh") in text
    with pytest.raises(ValueError):
        programs.text("install-files.sh", **{"a b": "1"})
    with pytest.raises(ValueError):
        programs.text("peer-debs.py", x="1")


def test_only_the_library_functions_a_program_calls_are_sent():
    functions = dict(programs.library())
    for name in SHELL_PROGRAMS:
        text = sent(name)
        used = programs.needed(programs.source(name))
        for fn, body in functions.items():
            assert (body in text) == (fn in used), (name, fn)


def test_a_library_function_sent_as_a_program_is_its_values_the_functions_it_needs_and_the_call():
    functions = dict(programs.library())
    text = programs.call("ib_ports", ib_sysfs="/sys/class/infiniband", ib_gids=16)
    assert text == 'ib_sysfs=/sys/class/infiniband\nib_gids=16\n' + functions["ib_ports"] + 'ib_ports "$ib_sysfs" "$ib_gids"'
    assert programs.call("as_user", "a b", "echo").endswith("\nas_user 'a b' echo")
    with pytest.raises(ValueError):
        programs.call("no_such_function")
    with pytest.raises(ValueError):
        programs.call("gpu_count", **{"a b": "1"})
    # One line of code, for a job's command line: whole, without its comments; not a function of more, or of arguments.
    assert programs.inline("load_netenv") == functions["load_netenv"].splitlines()[-2].strip()
    assert "\n" not in programs.inline("load_netenv") and programs.inline("load_netenv").endswith("; fi")
    for longer in ("gpu_count", "proc_cmdline"):
        with pytest.raises(ValueError):
            programs.inline(longer)


# --------------------------------------------------------------------------- INSTALL_SCRIPT on a temp root

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


class Root:
    """A temporary root: the backup directory and every target under it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.backup = tmp / "backup"
        self.script = programs.text("install-files.sh", backup=str(self.backup))
        self.n = 0

    def upload(self, content: str) -> str:
        self.n += 1
        src = self.tmp / f".gpufab-upload-{self.n}"
        src.write_text(content)
        src.chmod(0o600)
        return str(src)

    def install(self, *files, digest=None) -> subprocess.CompletedProcess:
        """files: (dest, content or None for a mode change only, mode, keep)."""
        args = []
        for dest, content, mode, keep in files:
            src = self.upload(content) if content is not None else ""
            d = digest or hashlib.sha256((content or "").encode()).hexdigest()
            args += [src, str(dest), f"{mode:o}", ME, MY_GROUP, d, "1" if keep else "0"]
        return subprocess.run(["sh", "-c", self.script, "gpufab", *args], capture_output=True, text=True, timeout=30)

    def before(self, dest: Path) -> Path:
        return Path(f"{self.backup}/.before{dest}")

    def previous(self, dest: Path) -> Path:
        return Path(f"{self.backup}{dest}")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def root(tmp_path):
    tmp_path.chmod(0o755)
    return Root(tmp_path)


def test_install_script_is_the_program_with_the_backup_directory():
    assert INSTALL_SCRIPT.startswith(f"backup={BACKUP_DIR}\n")
    assert INSTALL_SCRIPT.endswith(programs.source("install-files.sh"))


def test_install_a_new_file_with_its_mode_and_the_record_that_there_was_none(root):
    dest = root.tmp / "etc" / "app" / "a.conf"
    done = root.install((dest, "one\n", 0o640, True))
    assert done.returncode == 0, done.stderr
    assert dest.read_text() == "one\n" and mode_of(dest) == 0o640
    assert (dest.parent.stat().st_mode & 0o777) == 0o755  # umask 022
    assert Path(f"{root.before(dest)}.gpufab-absent").exists() and not root.before(dest).exists()
    assert not root.previous(dest).exists()  # nothing to back up yet
    assert mode_of(root.backup) == 0o700
    assert not list(root.tmp.glob(".gpufab-upload-*"))  # the upload is removed
    assert not list(dest.parent.glob(".gpufab-new.*"))


def test_install_over_a_file_keeps_the_first_version_once_and_the_previous_one(root):
    dest = root.tmp / "etc" / "b.conf"
    dest.parent.mkdir()
    dest.write_text("node's own\n")
    assert root.install((dest, "v1\n", 0o644, True)).returncode == 0
    assert root.install((dest, "v2\n", 0o644, True)).returncode == 0
    assert dest.read_text() == "v2\n"
    assert root.before(dest).read_text() == "node's own\n"  # once: from before gpufab's first write
    assert root.previous(dest).read_text() == "v1\n"  # what restore_previous puts back
    # Remote.restore_previous's command, with this root's backup directory:
    subprocess.run(["sh", "-c", f"cp -p {root.previous(dest)} {dest}"], check=True)
    assert dest.read_text() == "v1\n"


def test_the_same_content_again_leaves_the_file_as_it_was(root):
    dest = root.tmp / "c.conf"
    assert root.install((dest, "same\n", 0o644, True)).returncode == 0
    again = root.install((dest, "same\n", 0o644, True))
    assert again.returncode == 0 and dest.read_text() == "same\n" and mode_of(dest) == 0o644
    assert root.previous(dest).read_text() == "same\n"


def test_a_mode_change_alone_uploads_nothing_and_keeps_the_content(root):
    dest = root.tmp / "d.conf"
    assert root.install((dest, "x\n", 0o644, True)).returncode == 0
    done = root.install((dest, None, 0o600, True))
    assert done.returncode == 0, done.stderr
    assert dest.read_text() == "x\n" and mode_of(dest) == 0o600


def test_a_symlink_at_the_target_is_replaced_never_followed(root):
    victim = root.tmp / "victim"
    victim.write_text("not gpufab's\n")
    dest = root.tmp / "e.conf"
    dest.symlink_to(victim)
    done = root.install((dest, "mine\n", 0o644, True))
    assert done.returncode == 0, done.stderr
    assert not dest.is_symlink() and dest.read_text() == "mine\n"
    assert victim.read_text() == "not gpufab's\n"
    # A link is not the node's file: no copy of what it points at is kept.
    assert Path(f"{root.before(dest)}.gpufab-absent").exists() and not root.previous(dest).exists()


def test_a_digest_that_does_not_match_is_refused_and_nothing_changes(root):
    dest = root.tmp / "f.conf"
    dest.write_text("old\n")
    done = root.install((dest, "new\n", 0o644, True), digest="0" * 64)
    assert done.returncode == 3
    assert "refusing to install" in done.stderr and "changed before it was installed" in done.stderr
    assert dest.read_text() == "old\n"
    assert not list(root.tmp.glob(".gpufab-new.*")) and not list(root.tmp.glob(".gpufab-upload-*"))


def test_a_directory_another_user_can_write_is_refused(root):
    shared = root.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    dest = shared / "g.conf"
    done = root.install((dest, "x\n", 0o644, True))
    assert done.returncode == 3 and "can be written by another user" in done.stderr
    assert not dest.exists() and not list(shared.iterdir())


def test_a_failed_file_stops_the_batch_after_the_ones_before_it(root):
    good, bad = root.tmp / "h.conf", root.tmp / "i.conf"
    bad.write_text("kept\n")
    upload = root.upload("wrong\n")
    ok = hashlib.sha256(b"good\n").hexdigest()
    args = [root.upload("good\n"), str(good), "644", ME, MY_GROUP, ok, "1",
            upload, str(bad), "644", ME, MY_GROUP, "0" * 64, "1"]
    done = subprocess.run(["sh", "-c", root.script, "gpufab", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and good.read_text() == "good\n" and bad.read_text() == "kept\n"
    # The caller's rollback for what was written: restore_previous's `rm -f` for a file that was new.
    subprocess.run(["sh", "-c", f"rm -f {good}"], check=True)
    assert not good.exists()


def test_a_secret_file_gets_no_backup(root):
    dest = root.tmp / "secret.env"
    dest.write_text("TOKEN=old\n")
    assert root.install((dest, "TOKEN=new\n", 0o600, False)).returncode == 0
    assert dest.read_text() == "TOKEN=new\n" and mode_of(dest) == 0o600
    assert not root.backup.exists()


def test_home_write_script_writes_a_whole_file_with_its_mode(tmp_path):
    (tmp_path / "steps").mkdir()
    env = dict(os.environ, HOME=str(tmp_path))
    done = subprocess.run(["sh", "-c", HOME_WRITE_SCRIPT, "gpufab", "steps", "run.sh", "750"], input="echo hi\n",
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "steps" / "run.sh"
    assert path.read_text() == "echo hi\n" and mode_of(path) == 0o750
    assert [p.name for p in (tmp_path / "steps").iterdir()] == ["run.sh"]
    missing = subprocess.run(["sh", "-c", HOME_WRITE_SCRIPT, "gpufab", "nowhere", "x", "600"], input="x",
                             capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode != 0 and not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------- the library's pieces, run here

def no_systemd(text: str) -> str:
    out = text.replace("[ -d /run/systemd/system ]", "false")
    assert out != text
    return out


def with_systemd(text: str) -> str:
    out = text.replace("[ -d /run/systemd/system ]", "true")
    assert out != text
    return out


def sh(text: str, *args: str, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", text, "gpufab", *args], capture_output=True, text=True, timeout=60,
                          env=env, **kw)


def test_gpu_count_counts_gpus_says_hung_and_zero_without_nvidia_smi(tmp_path):
    text = programs.call("gpu_count", smi_timeout=20)
    two = stubs(tmp_path / "a", **{"nvidia-smi": 'echo "GPU 0: H100 (UUID: x)"; echo "GPU 1: H100 (UUID: y)"'})
    assert sh(text, env=two).stdout == "2\n"
    hung = stubs(tmp_path / "b", **{"nvidia-smi": "exit 124"})
    assert sh(text, env=hung).stdout == "nvidia-smi hung (20s)\n"
    bare = dict(os.environ, PATH=str(tmp_path / "empty"))
    assert subprocess.run(["/bin/sh", "-c", text], capture_output=True, text=True, env=bare).stdout == "0\n"


def netenv_here(tmp: Path, text: str) -> str:
    """`text` with netenv.setup's files at tmp/ instead of /etc/gpufab/: NODE_RANK 9 and a NIC in netenv,
    a token in secrets."""
    (tmp / "netenv.env").write_text("NCCL_SOCKET_IFNAME='ens 5'\nMASTER_ADDR=10.0.0.1\nNODE_RANK=9\n")
    (tmp / "secrets.env").write_text("HF_TOKEN=hf_x\n")
    out = text.replace("/etc/gpufab/", f"{tmp}/")
    assert out != text and "/etc/gpufab" not in out
    return out


#: What a job sees: a child process prints the variables it was given.
SEEN = 'sh -c \'echo "${NCCL_SOCKET_IFNAME:-}|${MASTER_ADDR:-}|${NODE_RANK:-}|${HF_TOKEN:-}"\''


def test_a_launched_job_sees_netenv_exported_under_the_launch_values(tmp_path):
    from fabfile.ops.shared import launch
    values = {"NODE_RANK": "2", "NNODES": "3", "MASTER_ADDR": "10.0.0.10", "MASTER_PORT": "29500", "NPROC_PER_NODE": "8"}
    line = netenv_here(tmp_path, launch.node_command(SEEN, values))
    assert sh(line).stdout == "ens 5|10.0.0.10|2|\n"  # netenv's NIC; the launch's own values win; no secrets
    (tmp_path / "netenv.env").unlink()
    assert sh(line).stdout == "|10.0.0.10|2|\n"  # a node without netenv runs the job all the same


def test_ray_started_without_systemd_sees_netenv_and_the_secrets(tmp_path):
    from fabfile.ops import ray
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ray").write_text(f"#!/bin/sh\n{SEEN}\n")
    (tmp_path / "bin" / "ray").chmod(0o755)
    line = netenv_here(tmp_path, ray.start_command(ray.UnitPlan("worker", "root", str(tmp_path), "10.0.0.2", "10.0.0.1")))
    assert sh(line).stdout == "ens 5|10.0.0.1|9|hf_x\n"
    (tmp_path / "secrets.env").unlink()
    assert sh(line).stdout == "ens 5|10.0.0.1|9|\n"


def test_a_detached_jobs_own_shell_loads_netenv(tmp_path):
    from fabfile.ops import detached
    log = tmp_path / "job.log"
    done = sh(netenv_here(tmp_path, no_systemd(detached.START_SCRIPT)), "gpufab-run-netenv", str(log), ME, SEEN)
    assert done.returncode == 0, done.stderr
    for _ in range(100):
        if log.exists() and log.read_text():
            break
        time.sleep(0.05)
    assert log.read_text() == "ens 5|10.0.0.1|9|\n"  # netenv, not the secrets


@pytest.fixture
def sleeper(tmp_path):
    """A live process whose command line names tmp_path/d/run."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "run").write_text("sleep 60\n")
    proc = subprocess.Popen(["sh", str(d / "run")])
    yield d, proc
    proc.kill()
    proc.wait()


def test_step_facts_and_status_see_a_live_run_by_its_command_line(tmp_path, sleeper):
    from fabfile.ops import scripts
    d, proc = sleeper
    (d / "pid").write_text(f"{proc.pid}\n")
    (d / "log").write_text("one\ntwo\nthree\n")
    env = stubs(tmp_path, **{"nvidia-smi": 'echo "GPU 0: x"'})
    facts = sh(scripts.FACTS_SCRIPT, str(d), ME, env=env).stdout.splitlines()
    assert f"run={hashlib.sha256(b'sleep 60').hexdigest()}" not in facts  # the digest of the file's bytes:
    assert f"run={hashlib.sha256((d / 'run').read_bytes()).hexdigest()}" in facts
    assert "gpus=1" in facts and "running=yes" in facts and not [f for f in facts if f.startswith("script=")]
    assert sh(scripts.STATUS_SCRIPT, str(d), "2").stdout == "running=yes\n==log\ntwo\nthree\n"
    (d / "pid").write_text("999999999\n")  # no such process
    assert "running=yes" not in sh(scripts.FACTS_SCRIPT, str(d), ME, env=env).stdout
    assert sh(scripts.STATUS_SCRIPT, str(d), "1").stdout == "running=no\n==log\nthree\n"
    (d / "exit").write_text("3\n")
    assert sh(scripts.STATUS_SCRIPT, str(d), "1").stdout == "exit=3\n==log\nthree\n"


def test_a_live_process_running_something_else_is_not_the_run(tmp_path, sleeper):
    from fabfile.ops import scripts
    d, proc = sleeper
    other = subprocess.Popen(["sleep", "60"])
    try:
        (d / "pid").write_text(f"{other.pid}\n")
        assert sh(scripts.STATUS_SCRIPT, str(d), "1").stdout.startswith("running=no\n")
    finally:
        other.kill()
        other.wait()


def test_step_start_without_systemd_runs_the_runner_detached_in_home(tmp_path):
    from fabfile.ops import scripts
    d = tmp_path / "d"
    d.mkdir()
    (d / "exit").write_text("0\n")
    (d / "run").write_text(f'pwd > {d}/where; echo 0 > {d}/exit\n')
    done = sh(no_systemd(scripts.START_SCRIPT), "gpufab-step-x", "root" if ME == "root" else ME, str(tmp_path),
              str(d / "run"))
    assert done.returncode == 0, done.stderr
    for _ in range(100):
        if (d / "where").exists() and (d / "exit").exists():
            break
        time.sleep(0.05)
    assert (d / "where").read_text() == f"{tmp_path}\n"


def test_step_and_detached_start_with_systemd_make_a_transient_unit(tmp_path):
    from fabfile.ops import detached, scripts
    calls = tmp_path / "calls"
    env = stubs(tmp_path, **{"systemd-run": f'printf "%s\\n" "$@" > {calls}', "getent": f"echo nobody:x:1:1::{tmp_path}:/bin/sh"})
    done = sh(with_systemd(scripts.START_SCRIPT), "gpufab-step-x", "root", str(tmp_path), "/d/run", env=env)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["--quiet", "--collect", "--unit=gpufab-step-x", "--uid=root",
                                              "-p", f"WorkingDirectory={tmp_path}", "/bin/sh", "/d/run"]
    done = sh(with_systemd(detached.START_SCRIPT), "gpufab-run-1", "train.log", "root", "echo hi", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"how=systemd unit gpufab-run-1.service\nlog={tmp_path}/train.log\n"
    args = calls.read_text().splitlines()
    assert args[:6] == ["--quiet", "--collect", "--unit=gpufab-run-1", "--uid=root", "-p", f"WorkingDirectory={tmp_path}"]
    assert args[6:10] == ["env", f"GPUFAB_LOG={tmp_path}/train.log", "/bin/sh", "-c"] and args[10].endswith("; echo hi")
    failing = stubs(tmp_path / "f", **{"systemd-run": "exit 1", "getent": f"echo nobody:x:1:1::{tmp_path}:/bin/sh"})
    assert sh(with_systemd(detached.START_SCRIPT), "gpufab-run-2", "x.log", "root", "true", env=failing).returncode == 1


def test_detached_list_and_kill_find_the_process_not_themselves():
    from fabfile.ops import detached
    # Not this test's child (which would linger as a zombie once killed): a detached one, as run.start makes.
    pid = int(sh("sleep 7341 >/dev/null 2>&1 </dev/null & echo $!").stdout)
    try:
        listed = sh(detached.LIST_SCRIPT, "sleep 734[1]")
        assert listed.stdout == f"{pid} sleep 7341 \n", listed.stderr
        assert sh(detached.LIST_SCRIPT, "sleep 7349").stdout == ""
        assert sh(detached.LIST_SCRIPT, "(").returncode == 2  # pgrep refuses the pattern
        killed = sh(detached.KILL_SCRIPT, "TERM", "sleep 734[1]", str(pid), "999999999")
        assert killed.stdout.splitlines() == [f"signalled {pid}", "gone 999999999"]
    finally:
        subprocess.run(["kill", "-KILL", str(pid)], capture_output=True)
def test_nic_toward_names_the_route_device_or_the_owner_of_a_local_address(tmp_path):
    from fabfile.ops import preflight  # nic_toward, as preflight sends it
    text = preflight.PREFLIGHT_SCRIPT
    ip = stubs(tmp_path, ip='case "$*" in\n'
               '  "-o route get 10.0.0.1") echo "10.0.0.1 dev ens5 src 10.0.0.2 uid 0" ;;\n'
               '  "-o route get 10.0.0.2") echo "local 10.0.0.2 dev lo table local src 10.0.0.2" ;;\n'
               '  "-o addr show to 10.0.0.2") echo "2: ens6    inet 10.0.0.2/24 brd 10.0.0.255 scope global ens6" ;;\n'
               'esac')
    def nic(head):
        return [line for line in sh(text, head, env=ip).stdout.splitlines() if line.startswith("nic=")]
    assert nic("10.0.0.1") == ["nic=ens5"]
    assert nic("10.0.0.2") == ["nic=ens6"]  # the head itself: the NIC holding the address
    assert nic("10.9.9.9") == ["nic="]
    assert nic("") == []




def test_mesh_facts_name_the_user_the_host_keys_and_the_mesh_key(tmp_path):
    from fabfile.ops import mesh
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "k.pub").write_text("ssh-ed25519 AAAAkey comment\n")
    (tmp_path / ".ssh" / "old").write_text("x")
    env = dict(stubs(tmp_path, **{"nvidia-smi": 'echo "GPU 0: x"; echo "GPU 1: y"'}), HOME=str(tmp_path))
    lines = sh(mesh.FACTS_SCRIPT, "k", "old", env=env).stdout.splitlines()
    assert f"user={ME}" in lines and f"group={MY_GROUP}" in lines and "gpus=2" in lines
    assert "meshkey=ssh-ed25519 AAAAkey" in lines and "oldkey=yes" in lines
    assert all(line.startswith(("user=", "group=", "home=", "gpus=", "hostkey=", "meshkey=", "oldkey=")) for line in lines)


def fake_ib(root: Path) -> Path:
    """One RoCE port under a fake /sys/class/infiniband: ACTIVE, two GIDs, a netdev."""
    port = root / "mlx5_0" / "ports" / "1"
    for sub in ("gids", "gid_attrs/types"):
        (port / sub).mkdir(parents=True)
    (port / "state").write_text("4: ACTIVE\n")
    (port / "link_layer").write_text("Ethernet\n")
    (port / "rate").write_text("100 Gb/sec (4X EDR)\n")
    (port / "phys_state").write_text("5: LinkUp\n")
    (port / "gids" / "0").write_text("fe80:0000:0000:0000:0000:0000:0000:0001\n")
    (port / "gid_attrs" / "types" / "0").write_text("IB/RoCE v1\n")
    (port / "gids" / "1").write_text("0000:0000:0000:0000:0000:ffff:0a00:0002\n")
    (port / "gid_attrs" / "types" / "1").write_text("RoCE v2\n")
    (root / "mlx5_0" / "device" / "net" / "ens5").mkdir(parents=True)
    return root


def test_netenv_facts_read_routes_addresses_and_the_ib_ports(tmp_path):
    sysfs = fake_ib(tmp_path / "ib")
    text = programs.text("netenv-facts.sh", ib_sysfs=str(sysfs), ib_gids=16)
    env = stubs(tmp_path, ip='case "$*" in\n'
                '  "-o route get 10.0.0.1") echo "10.0.0.1 dev ens5 src 10.0.0.2" ;;\n'
                '  "-o -4 addr show") echo "2: ens5    inet 10.0.0.2/24 brd 10.0.0.255 scope global ens5" ;;\n'
                '  "-o route show default") echo "default via 10.0.0.254 dev ens5 proto dhcp" ;;\n'
                '  "-o link show") echo "2: ens5: <BROADCAST,UP> mtu 9000 qdisc mq state UP" ;;\n'
                'esac')
    lines = sh(text, "10.0.0.1", env=env).stdout.splitlines()
    assert lines[:4] == ["route=10.0.0.1 dev ens5 src 10.0.0.2", "owner=", f"group={MY_GROUP}", "defroute=ens5"]
    assert "addr=ens5 10.0.0.2/24" in lines and "link=ens5 9000" in lines
    assert "ibport=mlx5_0 1|4: ACTIVE|Ethernet|100 Gb/sec (4X EDR)|ens5 |5: LinkUp|" in lines
    assert "ibgid=mlx5_0 1 1|RoCE v2|0000:0000:0000:0000:0000:ffff:0a00:0002" in lines
    assert lines[-1] in ("verbs=yes", "verbs=no")


def test_fleet_facts_take_the_nic_from_netenv_and_read_its_mtu(tmp_path):
    from fabfile.ops import fleet
    env_file = tmp_path / "netenv.env"
    env_file.write_text("NCCL_SOCKET_IFNAME=lo\n")
    text = programs.text("fleet-facts.sh", env_file=str(env_file), ib_sysfs=str(tmp_path / "none"), ib_gids=16)
    assert text.endswith(programs.source("fleet-facts.sh")) and fleet.SCRIPT.startswith("env_file=/etc/gpufab/")
    env = stubs(tmp_path, **{"nvidia-smi": 'case "$*" in *driver_version*) echo 550.54.15 ;; *name*) echo H100 ;;'
                             ' *) echo "| NVIDIA-SMI 550.54.15   CUDA Version: 12.4 |" ;; esac'})
    lines = sh(text, "10.0.0.1", "/nonexistent/python", "5", env=env).stdout.splitlines()
    assert "driver=550.54.15" in lines and "cuda=12.4" in lines and "gpu=H100" in lines
    assert "nic=lo" in lines and f"mtu={Path('/sys/class/net/lo/mtu').read_text().strip()}" in lines
    assert not [line for line in lines if line.startswith(("ray=", "ibport="))] and lines[-1].startswith("verbs=")


def test_install_in_a_users_own_directory_runs_as_that_user_and_replaces_a_planted_link():
    """~/.ssh and the like: every step as its owner (runuser), so root follows nothing planted there."""
    assert os.geteuid() == 0 and shutil.which("runuser"), "the suite runs as root (README), with util-linux's runuser"
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="gpufab-install-"))
    try:
        top.chmod(0o755)
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
        home = top / "home"
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True)
        for d in (home, ssh_dir):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        ssh_dir.chmod(0o700)
        victim = top / "victim"
        victim.write_text("root's\n")
        victim.chmod(0o644)
        dest = ssh_dir / "config"
        dest.symlink_to(victim)
        env = stubs(top, getent=f'echo "nobody:x:{nobody.pw_uid}:{nobody.pw_gid}::{home}:/bin/sh"')
        root = Root(top)
        content = "Host *\n"
        src = root.upload(content)
        args = [src, str(dest), "600", "nobody", group, hashlib.sha256(content.encode()).hexdigest(), "1"]
        done = subprocess.run(["sh", "-c", root.script, "gpufab", *args], capture_output=True, text=True, timeout=30,
                              env=env)
        assert done.returncode == 0, done.stderr
        assert not dest.is_symlink() and dest.read_text() == content and mode_of(dest) == 0o600
        assert dest.stat().st_uid == nobody.pw_uid and victim.read_text() == "root's\n"
        assert victim.stat().st_uid == 0
        # A directory of the user's that others may write: refused, as anywhere.
        ssh_dir.chmod(0o777)
        src = root.upload(content)
        args[0] = src
        refused = subprocess.run(["sh", "-c", root.script, "gpufab", *args], capture_output=True, text=True, timeout=30,
                                 env=env)
        assert refused.returncode == 3 and "can be written by another user" in refused.stderr
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_told_known_each_program_leaves_out_the_fact_the_run_has_read(tmp_path):
    """The programs that read the GPU count or the InfiniBand ports on their way (core.facts): given `known`
    as their last argument they neither run `nvidia-smi -L` nor print a port; without it they do."""
    from fabfile.ops import doctor, fleet, mesh, scripts
    from fabfile.ops.docker import nvidia_toolkit
    from fabfile.ops.shared import infiniband, nic
    calls = tmp_path / "nvidia-smi.calls"
    env = dict(stubs(tmp_path, **{"nvidia-smi": f'echo "$*" >> {calls}; echo "GPU 0: x"'}), HOME=str(tmp_path))
    sysfs = str(fake_ib(tmp_path / "ib"))
    (tmp_path / "d").mkdir()
    gpus = {"mesh-facts": (mesh.FACTS_SCRIPT, ["k", "old"]),
            "step-facts": (scripts.FACTS_SCRIPT, [str(tmp_path / "d"), ME]),
            "nvidia-toolkit-facts": (nvidia_toolkit.FACTS, [])}
    for name, (text, args) in gpus.items():
        calls.write_text("")
        told = sh(text, *args, "known", env=env).stdout
        assert not [x for x in told.splitlines() if x.lower().startswith("gpus=")] and "-L" not in calls.read_text(), name
        assert [x for x in sh(text, *args, "", env=env).stdout.splitlines() if x.lower().startswith("gpus=")] == \
            [("GPUS=1" if name.startswith("nvidia") else "gpus=1")], name
    ports = {"netenv-facts": (nic.FACTS_SCRIPT, ["10.0.0.1"]),
             "fleet-facts": (fleet.SCRIPT, ["10.0.0.1", "", "5"]),
             "doctor-root": (doctor.ROOT_SCRIPT, ["5", "0", ""])}
    for name, (text, args) in ports.items():
        text = text.replace(infiniband.SYSFS, sysfs)
        told = sh(text, *args, "known", env=env).stdout.splitlines()
        assert not [x for x in told if x.startswith(("ibport=", "verbs=", "@@ib"))], name
        assert "ibport=mlx5_0 1|4: ACTIVE|Ethernet|100 Gb/sec (4X EDR)|ens5 |5: LinkUp|" in \
            sh(text, *args, "", env=env).stdout.splitlines(), name
