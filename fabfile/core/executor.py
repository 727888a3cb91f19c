"""`fab -H a,b,c TASK` without Fabric's one-call-per-host expansion.

Fabric's Executor calls a task once per host, one host after the other, each
with its own Connection. gpufab tasks fan out themselves (bounded, parallel,
one connection per host for the whole run), so this executor calls each task
once and leaves the host list in the config as `gpufab.hosts`.
Selected by `tasks.executor_class` in the project's fabric.yaml, and by the
`gpufab` program.

A `-- CMD` remainder becomes gpufab's own `exec CMD`: Fabric would run it on
a plain Connection, whose AutoAddPolicy takes any host key it does not know.
"""

from __future__ import annotations

from typing import Any, List

from fabric.executor import Executor
from invoke import Call


class HostListExecutor(Executor):
    def expand_calls(self, calls: List[Any], apply_hosts: bool = True) -> List[Any]:
        host_str = self.core[0].args.hosts.value if self.core else None
        if self.core is not None and self.core.remainder and "exec" in self.collection.task_names:
            calls = list(calls) + [Call(self.collection["exec"], kwargs={"command": self.core.remainder})]
            self.core.remainder = ""
        if apply_hosts and host_str and not self.core.remainder:
            hosts = [h for h in host_str.split(",")]
            # A modification, not load_overrides(): that would replace the
            # overrides level, where Fabric keeps `-i` and `-t`.
            section = dict(self.config.get("gpufab") or {})
            section["hosts"] = hosts
            self.config["gpufab"] = section
            return super().expand_calls(calls, apply_hosts=False)
        return super().expand_calls(calls, apply_hosts=apply_hosts)
