"""The `tools` step (the "Adding a step" example of docs/development.md) on lab hosts, as root and as the sudo user."""

from __future__ import annotations

import json

from helpers import cli

from .conftest import LAB_INVENTORY, NODES, on_host
from .test_bootstrap import progress

#: Small, not in the lab's base image, and nothing else gpufab installs pulls it in.
PACKAGE = "tree"


def inventory_with_packages(tmp_path, user: str = "root"):
    path = tmp_path / "tools.yaml"
    text = LAB_INVENTORY.read_text().replace("vars:\n", f"vars:\n  packages: [{PACKAGE}]\n")
    path.write_text(text.replace("  user: root\n", f"  user: {user}\n"))
    return path


def test_tools_installs_the_listed_packages_once_as_the_sudo_user_then_changes_nothing(lab, tmp_path):
    for node in NODES:
        on_host(node, f"DEBIAN_FRONTEND=noninteractive apt-get -y -q remove {PACKAGE} >/dev/null 2>&1; true")
    env = {**lab, "GPUFAB_INVENTORY": str(inventory_with_packages(tmp_path, "gpu")), "INVOKE_SUDO_PASSWORD": "gpufab-lab"}
    first = cli("inv", "bootstrap", "--only", "tools", env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "steps: preflight, tools" in first.stdout
    assert progress(first.stdout) == {**{(n, "preflight"): "ok" for n in NODES}, **{(n, "tools"): "changed" for n in NODES}}
    for node in NODES:
        assert on_host(node, f"dpkg-query -W -f='${{db:Status-Status}}' {PACKAGE}").stdout == "installed"
    report = json.loads((tmp_path / "tools.report.json").read_text())
    assert f"Tools: {PACKAGE} on 3/3 nodes" in report["checks"]

    env["GPUFAB_INVENTORY"] = str(inventory_with_packages(tmp_path, "root"))
    second = cli("inv", "bootstrap", "--only", "tools", env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {s for (n, step), s in progress(second.stdout).items() if step == "tools"} == {"ok"}


def test_without_packages_the_chain_leaves_tools_out(lab):
    proc = cli("inv", "bootstrap", "--only", "limits", "--dry-run", env=lab)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "steps: preflight, limits" in proc.stdout and "tools" not in proc.stdout
