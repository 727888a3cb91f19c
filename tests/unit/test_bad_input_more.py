"""Issue 32's bad input: what still ended in a traceback, a hang, a wrong acceptance or an unclear line.

As in test_bad_input: the parsers are called in-process (with hypothesis where the
input space is wide); a command is run only where the behaviour is the command's own,
always with a throwaway HOME and no address outside 198.18.0.0/15 and loopback.
"""

from __future__ import annotations

import pytest

from fabfile.core.errors import InputError
from fabfile.core.inventory import parse_inventory

NODE = "nodes:\n  - name: a\n    public: 198.18.0.11\n    private: 198.19.0.11\n"


# --------------------------------------------------------------------------- YAML nesting


@pytest.mark.parametrize("text", [
    NODE + "vars:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300)) + "  " * 301 + "x\n",
    NODE + "vars:\n  x: " + "[" * 3000 + "\n",
    "[" * 3000 + "]" * 3000 + "\n",
])
def test_deeply_nested_inventories_are_refused_not_a_recursion_error(text):
    with pytest.raises(InputError, match=r"hosts.yaml:\d+: nested more than 50 levels deep"):
        parse_inventory(text, "hosts.yaml")
