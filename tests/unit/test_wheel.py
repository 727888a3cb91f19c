"""The wheel: it installs the package as `gpufab` (the folder is fabfile/ so that `fab` in a clone finds it).

Built once per session with this venv's setuptools (no build isolation, no index) from a copy of the
sources, so that nothing is written into the checkout; unpacked, which is what installing a pure wheel
is; then imported by a python that sees only the unpacked wheel and this venv's dependencies (`-S`: not
the checkout, not the editable install's finder). The whole of it takes about a second and a half.
(The wheel installed by pip into a fresh venv and run against lab hosts: tests/lab/test_install.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

#: What the build reads: the project file, the readme it names, and the two folders it maps.
SOURCES = ("pyproject.toml", "README.md", "fabfile", "templates")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc")


def _files(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("wheel")
    src, out = where / "src", where / "dist"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree(REPO / name, src / name, ignore=JUNK) if (REPO / name).is_dir()
         else shutil.copy2(REPO / name, src / name))
    build = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                            "print(b.build_wheel(sys.argv[1]))", str(out)],
                           cwd=str(src), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, build.stdout + build.stderr
    return out / build.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def unpacked(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)
    return site


def test_the_wheel_holds_gpufab_with_its_templates_and_no_fabfile(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        entry_points = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert not [n for n in names if n.startswith("fabfile/") or n.startswith("fabfile.")], names
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"gpufab", wheel.name.split("-py")[0] + ".dist-info"}, tops
    assert {"gpufab/__init__.py", "gpufab/cli.py", "gpufab/core/files.py", "gpufab/ops/chain.py"} <= set(names)
    # Every module of the packages (fabfile/ and its core, ops with its steps' packages and shared layer,
    # lab), under its installed name; every template, inside the package. (lab/standins/ holds the lab's
    # stand-in tools, no package.)
    assert {f"gpufab/{p}" for p in _files(REPO / "fabfile") if p.endswith(".py") and "standins" not in Path(p).parts} \
        <= set(names)
    shipped = {n.split("gpufab/templates/", 1)[1] for n in names if n.startswith("gpufab/templates/")}
    assert shipped == _files(REPO / "templates")
    assert "gpufab = gpufab.cli:main" in entry_points


PROBE = """
import json, sys
sys.argv = ["gpufab", "--list"]
import gpufab
from gpufab.core import files
from gpufab.ops.chain import CHAIN  # every step, its package and the shared layer, from the wheel
try:
    import fabfile
    fabfile_found = fabfile.__file__
except ModuleNotFoundError:
    fabfile_found = None
print(json.dumps({"gpufab": gpufab.__file__, "fabfile": fabfile_found, "templates": str(files.TEMPLATES),
                  "nofile": files.render("limits/nofile.conf.j2", nofile=23456),
                  "shipped": files.shipped("steps/run.sh"), "steps": [s.name for s in CHAIN]}))
from gpufab.cli import main
main()
"""


def test_the_unpacked_wheel_is_gpufab_lists_the_tasks_and_finds_its_templates(unpacked, tmp_path):
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))  # fabric, jinja2...
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GPUFAB_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(unpacked), *deps]), HOME=str(tmp_path), XDG_CONFIG_HOME="")
    cwd = tmp_path / "elsewhere"  # no fabfile/, no tasks.py: nothing of the checkout
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, listing = proc.stdout.split("\n", 1)
    seen = json.loads(first)
    assert seen["gpufab"] == str(unpacked / "gpufab" / "__init__.py")
    assert seen["fabfile"] is None  # `import fabfile` fails: the name stays free for the user's own tasks
    # core/files.py's TEMPLATES: the templates inside the installed package, rendered and shipped from there.
    assert seen["templates"] == str(unpacked / "gpufab" / "templates")
    assert "*       soft    nofile  23456" in seen["nofile"]
    assert seen["shipped"] == (REPO / "templates" / "steps" / "run.sh").read_text()
    assert seen["steps"][0] == "preflight" and "storage" in seen["steps"] and seen["steps"][-1] == "verify"
    tasks = {line.split()[0] for line in listing.splitlines() if line.startswith("  ")}
    assert {"bootstrap", "exec", "nfs.setup", "storage.setup", "reset", "node.remove"} <= tasks, listing
    assert not [t for t in tasks if t.startswith("lab.")]  # the repo's test hosts: no task of the installed tool
    assert list(cwd.iterdir()) == []
