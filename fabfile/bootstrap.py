"""`fab -H a,b,c bootstrap` / `inv bootstrap`: the whole chain over one Session; `inv report`.

The chain is `ops.chain.CHAIN` plus the inventory's own `steps:`; this module only reads the command line,
picks the steps and hosts, runs the chain and saves what it found.
"""

from __future__ import annotations

import os
from typing import Sequence

from invoke import Task, task
from invoke.exceptions import Exit

from . import help_texts
from .core.chain import SKIP_VAR, Run, Step, select_steps
from .core.cluster import cli_hosts, ensure_private, inventory_path, open_session
from .core.errors import InputError, number_option, reported
from .core.localfs import read_text, write_if_changed
from .core.progress import Progress
from .core.reporting import build_report, print_plan
from .core.runfiles import RunFiles, choose_targets, failed_hosts_text, run_files, ssh_aliases
from .core.runreport import Report


def save(run: Run, chain: Sequence[Step], files: RunFiles) -> int:
    """Print the report, save it next to the inventory (and the failed hosts); its exit code."""
    failures = [run.failures[n.name] for n in run.targets if n.name in run.failures]
    aliases = ssh_aliases(read_text(os.path.expanduser("~/.ssh/config")))
    label = run.inv.path or "--hosts " + ",".join(n.public for n in run.inv.nodes)
    report = build_report(run, chain, label, aliases, files.failed if failures else None)
    print()
    print(report.to_text(), end="")
    write_if_changed(files.markdown, report.to_markdown())
    write_if_changed(files.json, report.to_json())
    if failures:
        write_if_changed(files.failed, failed_hosts_text(failures))
        print(f"report: {files.markdown} and {files.json}; failed hosts: {files.failed}")
    else:
        if os.path.exists(files.failed):
            os.unlink(files.failed)
        print(f"report: {files.markdown} and {files.json}")
    return report.exit_code


def _derived_doc(body):
    """The docstring names the chain's steps, as help_texts has them from ops/chain.py."""
    body.__doc__ = help_texts.bootstrap_doc()
    return body


@task(
    auto_shortflags=False,
    help={
        "skip": help_texts.skip_help(),
        "only": help_texts.only_help(),
        "dry_run": "connect and gather facts; print what would change, with diffs; change nothing",
        "retry_failed": "run only the hosts the last bootstrap failed on (from the failed-hosts file)",
        "hosts_from": "run only the hosts listed in this file (names or addresses, one per line)",
        "nofile": help_texts.option("nofile", "open files per process"),
        "secrets": "also write the local .env's variables to /etc/gpufab/secrets.env (0600), and log docker in where"
                   " it holds DOCKER_USERNAME/DOCKER_PASSWORD",
        "env_file": "the .env file for --secrets (default .env)",
        "storage": help_texts.option("storage", "shared storage backend: auto, nfs or sshfs"),
        "timeout": "seconds Ray gets to show every node (default 180)",
        "workers": help_texts.option("workers", "hosts worked on at once"),
    }
)
@reported
@_derived_doc
def bootstrap(c, skip=None, only=None, dry_run=False, retry_failed=False, hosts_from=None, nofile=None,
              secrets=False, env_file=".env", storage=None, timeout=None, workers=None):
    from .ops.chain import CHAIN
    from .ops.scripts import with_user_steps
    n_workers = number_option(workers, "--workers")
    files = run_files(inventory_path(c.config), bool(cli_hosts(c.config)))
    cli = {"nofile": nofile, "secrets": secrets, "env_file": env_file, "storage": storage, "timeout": timeout}
    with open_session(c.config) as session:
        # The inventory's own steps (steps:) join the chain where they say.
        chain = with_user_steps(CHAIN, session.inventory)
        steps = select_steps(chain, skip, only, session.inventory.vars.get(SKIP_VAR))
        chosen = choose_targets(session.inventory, retry_failed, hosts_from, files.failed)
        if chosen is None:
            print(f"bootstrap: no failed hosts recorded in {files.failed if retry_failed else hosts_from}; nothing to retry")
            return
        inv = ensure_private(session, workers=n_workers)
        settings = {s.name: s.settings(c.config, inv, cli) for s in steps}
        # A step with nothing configured runs only when --only names it.
        steps = [s for s in steps if only or s.wanted(settings[s.name])]
        targets = [inv.by_name(n.name) for n in chosen]
        print(f"bootstrap{' --dry-run' if dry_run else ''}: {', '.join(n.name for n in targets)}; "
              f"steps: {', '.join(s.name for s in steps)}")
        progress = Progress(width=max(len(n.name) for n in inv.nodes))
        run = Run(session, inv, targets, steps, settings, progress, dry_run, n_workers)
        try:
            run.go()
        except KeyboardInterrupt:
            # What was done stays reported: the hosts cut off fail at this step, for --retry-failed.
            run.interrupted()
            if not dry_run:
                save(run, chain, files)
            raise
    code = print_plan(run) if dry_run else save(run, chain, files)
    if code:
        raise Exit(code=code)


REPORT_FORMATS = ("text", "markdown", "json")


class ReportFlags(Task):
    """-f for --format as before, -o for --output, and no short flag for --html: Invoke's own would
    be `-h`, and `gpufab report -h` would write a page instead of showing the help."""

    SHORT = {"format": "f", "output": "o"}

    def arg_opts(self, name, default, taken_names):  # type: ignore[no-untyped-def]
        opts = super().arg_opts(name, default, taken_names)
        if name in self.SHORT:
            opts["names"] = [name, self.SHORT[name]]
        return opts


@task(klass=ReportFlags, auto_shortflags=False, help={
    "format": "text (default), markdown or json",
    "html": "write the report as one self-contained HTML page, with pictures (busbw, links, step timeline)",
    "output": "with --html: the page's file (default beside the report: inventory/<inventory>.report.html)",
})
@reported
def report(c, format=None, html=False, output=None):
    """Show the last bootstrap's report again, without touching the nodes (--html: as a page with pictures)."""
    if format is not None and format not in REPORT_FORMATS:  # before looking for a report: "no report yet" hid the typo
        raise InputError(f"unknown format {format!r} (one of: {', '.join(REPORT_FORMATS)})", path="--format")
    if html and format is not None:
        raise InputError("not with --html: the page holds the whole report", path="--format")
    if output is not None and not html:
        raise InputError("goes with --html (the text formats print to stdout)", path="--output")
    files = run_files(inventory_path(c.config), bool(cli_hosts(c.config)))
    page = None
    if html:
        from .core import htmlreport
        page = output or htmlreport.page_path(files)
        htmlreport.check_page_path(page, inventory_path(c.config), files)  # before reading anything: nothing written
    text = read_text(files.json)
    if text is None:
        raise InputError("no report yet: run bootstrap first", path=files.json)
    saved = Report.from_json(text, files.json)
    if page is not None:
        print(htmlreport.write_page(saved, page, files.json))
        return
    print({"text": saved.to_text, "markdown": saved.to_markdown, "json": saved.to_json}[format or "text"](), end="")
