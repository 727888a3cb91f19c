"""What the unit tests render and execute of templates/: the registry test_layout.py checks at the end.

Every Jinja2 template loaded through core.files' one environment is noted, and
so is every process a test starts (subprocess.Popen, which `run` uses too):
a template whose text (a remote program as sent, or its body) or path is in a
started command line, or is the script a test ran by its path, counts as executed.
"""

from __future__ import annotations

import os
import subprocess
from typing import List, Set

from fabfile.core import files

#: Names under templates/ that some test rendered (Jinja2).
RENDERED: Set[str] = set()
#: Every argument of every process the tests started (their text is searched afterwards).
STARTED: List[str] = []

_env = files._templates()
_get_template = _env.get_template


def _recording_get_template(name, *args, **kwargs):
    RENDERED.add(str(name))
    return _get_template(name, *args, **kwargs)


_env.get_template = _recording_get_template

_popen_init = subprocess.Popen.__init__


def _recording_popen_init(self, args, *rest, **kwargs):
    STARTED.extend([args] if isinstance(args, (str, bytes)) else [str(a) for a in args])
    program = args if isinstance(args, str) else str(args[0]) if isinstance(args, (list, tuple)) and args else ""
    if os.path.isfile(program) and os.path.getsize(program) < 1 << 20:  # a script run by its path: its text
        with open(program, encoding="utf-8", errors="replace") as f:
            STARTED.append(f.read())
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _recording_popen_init  # type: ignore[method-assign]

#: The test that reads the registry: it runs after every other unit test.
LAST = "test_every_template_is_rendered_or_executed_by_a_unit_test"


def pytest_collection_modifyitems(session, config, items):
    last = [i for i in items if i.name == LAST]
    items[:] = [i for i in items if i.name != LAST] + last
