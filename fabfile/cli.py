"""The `gpufab` command: Fabric's program and flags over gpufab's task tree, from any directory.

Invoke's documented way to ship a distinct binary is a Program given its
namespace: no fabfile is searched for, so the installed tool works outside
the repository, and `fab`/`inv` inside it keep working as before. Installed, this
package is `gpufab` (pyproject.toml's package-dir); in a clone `fab` and `inv`
load the same folder as `fabfile`.

Configuration follows Invoke's hierarchy under the `gpufab` prefix:
/etc/gpufab.yaml, ~/.gpufab.yaml, ./gpufab.yaml, then `GPUFAB_*` variables.
The settings sit under the `gpufab:` key, as for `fab` and `inv`; their
variables are `GPUFAB_WORKERS` and so on (Invoke's own keys: `GPUFAB_RUN_ECHO`).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fabric import Config
from invoke import Collection
from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar
from fabric.main import Fab

from .core.errors import BAD_INPUT, GpufabError
from .core.settings import SETTINGS, bad_variable, check_setting


class GpufabConfig(Config):
    prefix = "gpufab"

    def load_shell_env(self) -> None:
        try:
            super().load_shell_env()
        except (ValueError, AmbiguousEnvVar, UncastableEnvVar) as exc:  # Invoke's cast of its own GPUFAB_* keys
            raise bad_variable(self._config, self._env_prefix, exc) from None
        section = {}
        for key in SETTINGS:
            name = f"GPUFAB_{key.upper()}"
            raw = os.environ.get(name)
            if raw is not None and key != "inventory":  # GPUFAB_INVENTORY is read before any config
                section[key] = check_setting(key, raw, name)
        if section:
            merged = dict(self._env.get("gpufab") or {})
            merged.update(section)
            self._env["gpufab"] = merged
            self.merge()


class GpufabProgram(Fab):
    def parse_core(self, *args: Any, **kwargs: Any) -> None:
        super().parse_core(*args, **kwargs)
        # `gpufab -H h -- CMD` alone: gpufab's `exec CMD`, which checks host keys,
        # instead of Fab's task-less remainder on a plain Connection.
        if self.core.remainder and not self.core.unparsed and not self.args.complete.value:
            self.core.unparsed = ["exec", self.core.remainder]
            self.core.remainder = ""

    def update_config(self, merge: bool = True) -> None:
        # The project level of an installed tool is the directory it runs in.
        self.config.set_project_location(os.getcwd())
        self.config.load_project(merge=False)
        super().update_config()


def _version() -> str:
    try:
        return version("gpufab")
    except PackageNotFoundError:
        return "unknown (not installed)"


def in_checkout() -> bool:
    """Run from the repository (editable install, or the source tree), not from an installed wheel."""
    top = Path(__file__).resolve().parents[1]
    return (top / "pyproject.toml").is_file() and (top / "tests").is_dir()


def without(ns: Collection, name: str) -> Collection:
    """The namespace less one sub-collection."""
    out = Collection()
    for task_name, task in ns.tasks.items():
        out.add_task(task, name=task_name)
    for sub_name, sub in ns.collections.items():
        if sub_name != name:
            out.add_collection(sub, name=sub_name)
    return out


def make_program() -> GpufabProgram:
    from . import ns
    from .core.executor import HostListExecutor

    # lab.* builds the repo's test hosts and keeps their inventory in the checkout: a development tool.
    tasks = ns if in_checkout() else without(ns, "lab")
    return GpufabProgram(name="gpufab", binary="gpufab", version=_version(), namespace=tasks,
                         executor_class=HostListExecutor, config_class=GpufabConfig)


def main() -> None:
    try:
        make_program().run()
    except GpufabError as exc:  # raised before any task runs (a GPUFAB_* variable)
        print(f"gpufab: error: {exc}", file=sys.stderr)
        sys.exit(BAD_INPUT)
