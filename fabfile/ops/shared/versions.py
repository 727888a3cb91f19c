"""Python's and packages' versions in a venv (Ray's): read once per run, however many ask.

ray's install and check compare them with its pins, `ray.versions` lists them, and the fleet's
verify compares Ray's across nodes; each asks the one fact (`VERSIONS`) instead of the venv again.
"""

from __future__ import annotations

import json
import shlex
from typing import Dict, Optional, Sequence

from ...core import programs
from ...core.facts import Fact
from ...core.remote import Remote

#: Packages whose versions `ray.versions` shows; ray and Python must agree.
VERSION_PACKAGES = ("ray", "torch", "vllm", "transformers")

#: Prints a JSON object of versions: python, then each package named in argv.
VERSIONS_CODE = programs.text("ray-versions.py")


def versions_command(venv: str, packages: Sequence[str]) -> str:
    python = f"{venv}/bin/python"
    return f"{shlex.quote(python)} -c {shlex.quote(VERSIONS_CODE)} " + " ".join(shlex.quote(p) for p in packages)


def read_versions(remote: Remote, venv: str, packages: Sequence[str] = VERSION_PACKAGES
                  ) -> Optional[Dict[str, Optional[str]]]:
    result = remote.run(versions_command(venv, packages), warn=True)
    if result.exited != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


#: Python's and the packages' versions in a venv (`VERSION_PACKAGES`, and any pin beyond them), read once
#: per run for every step that needs them; installing into the venv forgets them (ray's `install_ray`).
VERSIONS = Fact("the venv's versions", read_versions)


def installed_versions(remote: Remote, venv: str, packages: Sequence[str]) -> Optional[Dict[str, Optional[str]]]:
    """Versions in the venv, or None when there is no venv."""
    found = remote.fact(VERSIONS, venv)
    if found is not None and any(p not in found for p in packages):
        found = remote.facts.note(VERSIONS, read_versions(remote, venv, [*(k for k in found if k != "python"),
                                                                   *(p for p in packages if p not in found)]), venv)
    return None if found is None else {k: found.get(k) for k in ("python", *packages)}
