"""`inv limits.setup`: raise the open-file limit everywhere it is decided."""

from __future__ import annotations

from invoke import task

from . import help_texts
from .core.errors import reported
from .core.steps import run_task


@task(
    help={
        "nofile": help_texts.option("nofile", "open files per process"),
        "nodes": "only these nodes (comma-separated names)",
        "workers": help_texts.option("workers", "hosts worked on at once"),
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
