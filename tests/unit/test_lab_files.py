"""Scaffolding for moving the lab's programs out of Python strings (issue 34): the texts the lab wrote
and ran, as they were before they moved to templates/lab/, against what it makes now."""

from fabfile.lab import gpu, plan

UNIT_TEXT = "# gpufab lab: this host is GPU-shaped (profile in /usr/local/lib/gpufab-lab/gpu/profile).\n[Unit]\nDescription=gpufab lab: the GPU profile's InfiniBand sysfs tree\nDefaultDependencies=no\nBefore=network-pre.target sysinit.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'd=/run/gpufab-lab-class; mkdir -p $$d && mount -t tmpfs -o mode=755 gpufab-lab-class $$d && \\\n  cp -a /sys/class/. $$d/ 2>/dev/null; cp -a /usr/local/lib/gpufab-lab/gpu/sysfs/. $$d/ && mount --bind $$d /sys/class'\n\n[Install]\nWantedBy=sysinit.target\n"
PYTHON_GPU = '#!/bin/sh\n# The training python of a GPU-shaped lab host (gpufab lab).\nPYTHONPATH=/usr/local/lib/gpufab-lab/python${PYTHONPATH:+:$PYTHONPATH} exec python3 "$@"\n'
FM_HEALTHY = "# gpufab lab: stand-in for NVIDIA's fabric manager (running).\n[Unit]\nDescription=NVIDIA fabric manager service (gpufab lab stand-in)\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
FM_BROKEN = '# gpufab lab: stand-in for NVIDIA\'s fabric manager (failing).\n[Unit]\nDescription=NVIDIA fabric manager service (gpufab lab stand-in)\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c \'echo "NVIDIA fabric manager: version mismatch" >&2; exit 1\'\n\n[Install]\nWantedBy=multi-user.target\n'
BASE_SETUP_SCRIPT = "\nset -e\nrm -f /etc/ssh/ssh_host_*\nrm -f /etc/machine-id && touch /etc/machine-id\nsystemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \\\n  systemd-timesyncd.service getty@tty1.service console-getty.service >/dev/null 2>&1 || true\nid gpu >/dev/null 2>&1 || useradd -m -s /bin/bash gpu\necho 'gpu:gpufab-lab' | chpasswd\nchmod 0440 /etc/sudoers.d/gpufab-lab\nmkdir -p /var/lib/docker /root/.ssh\nchmod 700 /root/.ssh\nupdate-ca-certificates >/dev/null 2>&1 || true\napt-get clean\n"
DOCKER_CGROUPS_DROPIN = '# The lab only (fabfile/lab/plan.py): the cgroup controllers writable for runc, as on a real machine.\n[Service]\nExecStartPre=/bin/sh -c \'for c in /sys/fs/cgroup/*/; do [ "$$(stat -f -c %%T "$$c")" = cgroupfs ] && mount -o remount,bind,rw "$$c"; done; true\'\n'


def test_the_lab_writes_and_runs_the_same_bytes_as_before_the_move():
    healthy = gpu.profile_files(gpu.PROFILES["hgx-h100"])
    broken = gpu.profile_files(gpu.PROFILES["hgx-h100-broken"])
    assert healthy[f"/etc/systemd/system/{gpu.UNIT}"] == (UNIT_TEXT, 0o644)
    assert healthy["/usr/local/bin/python-gpu"] == (PYTHON_GPU, 0o755)
    assert healthy[f"/etc/systemd/system/{gpu.FM_UNIT}"] == (FM_HEALTHY, 0o644)
    assert broken[f"/etc/systemd/system/{gpu.FM_UNIT}"] == (FM_BROKEN, 0o644)
    assert plan.base_setup_script() == BASE_SETUP_SCRIPT
    hosts = plan.plan_hosts(2)
    files = plan.host_files(hosts[1], hosts, "ssh-ed25519 AAAA k\n", "0" * 32)
    assert files["/etc/systemd/system/docker.service.d/10-lab-cgroups.conf"] == DOCKER_CGROUPS_DROPIN
