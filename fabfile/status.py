"""`gpufab status` / `inv status`: is the cluster still fine? Every node at once, read-only, in seconds.

The chain's dry run (what the next bootstrap would change: drift) and each step's own read-only probe,
run by core.status; this module reads the command line and prints the answer. It writes nothing on
the nodes and never touches the saved report (`gpufab report` stays the last bootstrap's).
"""

from __future__ import annotations

import io

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.chain import SKIP_VAR, select_steps
from .core.cluster import ensure_private, open_session
from .core.errors import number_option, reported
from .core.progress import Progress
from .core.status import StatusRun, status_of


#: The settings' CLI side: the inventory's settings, and the GPU doctor without its container run (a
#: `docker run` per node is neither read-only nor quick; `bootstrap` still runs it).
STATUS_CLI = {"nofile": None, "secrets": False, "env_file": ".env", "storage": None, "timeout": None, "image": ""}


@task(
    auto_shortflags=False,
    help={
        "json": "print the answer as JSON (per node: reachable, each probe's look, drift, problems)",
        "workers": help_texts.option("workers", "hosts worked on at once"),
    },
)
@reported
def status(c, json=False, workers=None):
    """Is the cluster still as bootstrap left it? Reachable, Ray, share, limits, netenv, GPUs, drift: read-only."""
    from .ops.chain import CHAIN
    from .ops.scripts import with_user_steps
    n_workers = number_option(workers, "--workers")
    cli = STATUS_CLI
    with open_session(c.config) as session:
        chain = with_user_steps(CHAIN, session.inventory)
        steps = select_steps(chain, None, None, session.inventory.vars.get(SKIP_VAR))
        inv = ensure_private(session, workers=n_workers)
        settings = {s.name: s.settings(c.config, inv, cli) for s in steps}
        steps = [s for s in steps if s.wanted(settings[s.name])]
        # The dry run's live lines would bury the answer (and break --json): kept out of sight.
        progress = Progress(out=io.StringIO(), width=max(len(n.name) for n in inv.nodes))
        run = StatusRun(session, inv, list(inv.nodes), steps, settings, progress, True, n_workers)
        found = status_of(run)
    print(found.to_json() if json else found.to_text(), end="")
    if found.exit_code:
        raise Exit(code=found.exit_code)
