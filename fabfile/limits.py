"""`inv limits.setup`: raise the open-file limit everywhere it is decided."""

from __future__ import annotations

from invoke import task

from .ops import limits as plan
from .core.cluster import setting
from .core.errors import HostError, reported
from .core.files import plan_files
from .core.remote import Remote
from .core.steps import Outcome, run_task

def setup_limits(remote: Remote, nofile: int) -> Outcome:
    """Write the drop-ins, make systemd re-read them, and check a new login."""
    wanted = plan.limit_files(nofile)
    changes = plan_files(wanted, remote.read_state(wanted))
    done = remote.write_files(changes)
    changed = {c.file.path for c in changes}
    if plan.SYSTEMD_FILE in changed:
        # Manager settings are only read when systemd itself re-executes.
        remote.change("systemctl daemon-reexec")
        done.append("systemctl daemon-reexec")
    elif plan.DOCKER_FILE in changed:
        remote.change("systemctl daemon-reload")
        done.append("systemctl daemon-reload")
    if plan.DOCKER_FILE in changed and remote.check("systemctl is-active --quiet docker"):
        remote.change("systemctl restart docker")
        done.append("restarted docker")

    if remote.dry_run:
        return Outcome(done, [])
    # What the next login gets: pam_limits applies when sshd opens a session.
    soft, hard = plan.parse_login_limits(remote.run_in_new_login(plan.LOGIN_LIMITS_CMD).stdout)
    default = remote.run("systemctl show --property DefaultLimitNOFILE --value").stdout.strip()
    notes = [f"new login: nofile {soft} (hard {hard}); systemd default {default}"]
    if soft < nofile:
        if hard < nofile:
            why = (f"sshd runs with hard limit {hard} and pam_limits may not raise it here"
                   f" (no CAP_SYS_RESOURCE?); use nofile <= {hard}")
        else:
            why = "is pam_limits enabled for sshd (UsePAM yes, pam_limits.so in /etc/pam.d/sshd)?"
        raise HostError(f"a new login gets nofile {soft}, not {nofile}: {why}", changes=done)
    return Outcome(done, notes, {"nofile": soft})


@task(
    help={
        "nofile": f"open files per process (default {plan.DEFAULT_NOFILE}; inventory var nofile)",
        "nodes": "only these nodes (comma-separated names)",
        "workers": "hosts worked on at once (default 32)",
    }
)
@reported
def setup(c, nofile=None, nodes=None, workers=None):
    """Raise nofile via limits.d, systemd and docker drop-ins; verify in a new login."""

    def step(session):
        value = plan.check_nofile(setting(c.config, session.inventory, "nofile", nofile, plan.DEFAULT_NOFILE))
        return lambda r: setup_limits(r, value)

    run_task(c.config, "limits.setup", step, nodes=nodes, workers=workers)
