"""The package's source read as syntax, once a session: several unit tests walk the same modules."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Tuple


@functools.lru_cache(maxsize=None)
def syntax_nodes(path: Path) -> Tuple[ast.AST, ...]:
    """Every node of the module at `path`, in `ast.walk` order."""
    return tuple(ast.walk(ast.parse(path.read_text())))
