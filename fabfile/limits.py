"""`inv limits.setup`: raise the open-file limit everywhere it is decided."""

from __future__ import annotations

from invoke import task

from .core.errors import reported
from .core.steps import run_task


@task(
    help={
        "nofile": "open files per process (default 65536; inventory var nofile)",
        "nodes": "only these nodes (comma-separated names)",
        "workers": "hosts worked on at once (default 32)",
    }
)
@reported
def setup(c, nofile=None, nodes=None, workers=None):
    """Raise nofile via limits.d, systemd and docker drop-ins; verify in a new login."""
    from .ops import limits

    def step(session):
        settings = limits.read(c.config, session.inventory, {"nofile": nofile})
        return lambda r: limits.apply(r, settings)

    run_task(c.config, "limits.setup", step, nodes=nodes, workers=workers)
