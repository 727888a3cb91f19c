"""Live progress of a long run: a line per host per step as it completes.

A step that takes a while (package installs, waiting for Ray) says every
`every` seconds which hosts it is still running on, so a silent terminal
never has to be guessed at.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, TextIO

from .fanout import SKIPPED, HostResult
from .inventory import Node

#: Seconds between "still running" lines of one step.
DEFAULT_EVERY = 15.0


class Progress:
    def __init__(self, out: Optional[TextIO] = None, every: float = DEFAULT_EVERY, width: int = 8):
        self.out = out
        self.every = every
        self.width = width
        self.start = time.monotonic()
        self._lock = threading.Lock()
        #: Per step running now, the hosts not done with it (steps run side by side).
        self._pending: Dict[str, List[str]] = {}

    def line(self, text: str) -> None:
        out = self.out or sys.stdout
        with self._lock:
            out.write(f"[{time.monotonic() - self.start:6.1f}s] {text}\n")
            out.flush()

    def done(self, step: str, result: HostResult) -> None:
        """One host finished one step."""
        with self._lock:
            pending = self._pending.get(step, [])
            if result.node.name in pending:
                pending.remove(result.node.name)
        text = f"{result.node.name:<{self.width}} {step:<9} {result.status:<11} {result.seconds:5.1f}s"
        if result.failed or result.status == SKIPPED:
            text += f"  {result.reason}"
        self.line(text)

    @contextmanager
    def step(self, name: str, nodes: Sequence[Node]) -> Iterator[None]:
        """While the block runs, say every `every` seconds which hosts are not done."""
        with self._lock:
            self._pending[name] = [n.name for n in nodes]
        stop = threading.Event()
        began = time.monotonic()

        def tick() -> None:
            while not stop.wait(self.every):
                with self._lock:
                    pending = list(self._pending.get(name, []))
                if pending:
                    self.line(f"{'...':<{self.width}} {name:<9} {'running':<11} {time.monotonic() - began:5.1f}s"
                              f"  on {', '.join(pending)}")

        ticker = threading.Thread(target=tick, name="gpufab-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            with self._lock:
                self._pending.pop(name, None)
