"""What each step leaves on a node is declared by its module, and reset takes away what is declared
(issue 34: "a step declares all it owns: its files and units (reset derives its list from them)").

reset.py kept its own list of every step's files; a file missing from it stayed behind, and only a lab
host could tell (the memlock limits file, written on nodes with an InfiniBand/RoCE port, did). Now every
managed file a module names by a constant must be declared by that module, which the AST scan below
checks, and reset's plan is computed from the declarations.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from fabfile.core.declared import owned, owned_by
from fabfile.ops import limits, reset

from helpers import REPO


def managed_file_constants():
    """(module, path) for each `ManagedFile(NAME, ...)` / `ManagedFile(mod.NAME, ...)` whose path is a constant."""
    for path in sorted((REPO / "fabfile").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if "lab" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        module = importlib.import_module(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ManagedFile" and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Name) and isinstance(getattr(module, first.id, None), str):
                yield name, getattr(module, first.id)
            elif isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name):
                holder = getattr(module, first.value.id, None)
                if isinstance(getattr(holder, first.attr, None), str):
                    yield name, getattr(holder, first.attr)


def test_every_managed_file_named_by_a_constant_is_declared_by_some_module():
    everything = owned()
    declared = set(everything.files) | set(everything.undone_by_step)
    found = list(managed_file_constants())
    assert len(found) >= 15, found
    missing = sorted({(m, p) for m, p in found if p not in declared})
    assert missing == [], f"declare these with core.declared.owns(...) in their module: {missing}"


def test_the_memlock_file_is_reset_now():
    assert limits.MEMLOCK_FILE in owned_by("ops.limits").files
    facts = reset.ResetFacts(files=frozenset({limits.MEMLOCK_FILE}), systemd=True)
    assert (f"removed {limits.MEMLOCK_FILE}", f"rm -f -- {limits.MEMLOCK_FILE}") in reset.plan(facts)


def test_resets_lists_are_the_declarations_and_hold_all_they_held_before():
    o = owned()
    before_files = {
        "/etc/security/limits.d/90-gpufab-nofile.conf", "/etc/systemd/system.conf.d/90-gpufab-limits.conf",
        "/etc/systemd/system/docker.service.d/90-gpufab-limits.conf", "/etc/gpufab/netenv.env",
        "/etc/gpufab/secrets.env", "/etc/nccl.conf", "/etc/profile.d/gpufab-netenv.sh",
        "/etc/gpufab/ray-secrets.applied", "/etc/systemd/system/gpufab-ray-head.service",
        "/etc/systemd/system/gpufab-ray-worker.service", "/etc/gpufab/ray-firewall.nft",
        "/etc/exports.d/gpufab.exports", "/var/lib/gpufab/installed-packages", "/var/lib/gpufab/docker-group-added",
        "/etc/gpufab/registry-login"}
    assert before_files <= set(o.files) and len(o.files) == len(set(o.files))
    assert set(o.units) == {"gpufab-ray-head.service", "gpufab-ray-worker.service"}
    assert set(o.transient) == {"gpufab-fetch.service"}
    assert set(o.trees) == {"/opt/gpufab", "/var/backups/gpufab", "/var/cache/gpufab", "/var/lib/gpufab/steps"}
    assert set(o.home) >= {".ray/auth_token", ".local/state/gpufab", ".cache/gpufab"}
    assert not set(o.files) & set(o.undone_by_step)


def test_no_declared_path_is_relative_or_odd():
    o = owned()
    for path in (*o.files, *o.trees, *o.parents, *o.undone_by_step):
        assert path.startswith("/") and ".." not in Path(path).parts and " " not in path, path
    for path in o.home:
        assert not path.startswith("/") and ".." not in Path(path).parts, path


def test_reset_runs_each_modules_own_undo_in_the_order_it_always_had():
    """Issue 34: reset imported eight steps to call their undo by name. Now each module registers its undo
    (core.declared.undoes) and reset runs them by phase and order: Ray stopped, then each worker's share
    unmounted, on every node, before anything else goes anywhere; the whole files after every step's own."""
    from fabfile.core.declared import undos
    assert [(u.phase, u.owner) for u in undos()] == [
        (1, "ops.ray"), (1, "ops.storage"),
        (2, "ops.docker"), (2, "ops.containers"), (2, "ops.images"), (2, "ops.reset"), (2, "ops.storage"),
        (2, "ops.docker"), (2, "ops.mesh"), (2, "ops.reset")]
    assert {s.package for s in owned().sources} == {"docker-ce", "nvidia-container-toolkit"}
    assert [w.what for w in owned().withdrawn] == ["withdrew the NFS export", "removed Ray's firewall rules"]


def test_an_undo_for_the_head_runs_on_the_head_only():
    from fakes import FakeRemote, node
    from fabfile.core.inventory import Inventory
    inv = Inventory((node("node1", "10.0.0.1"), node("node2", "10.0.0.2", "worker")))
    s = reset.read(None, inv, {})
    on_head = [u for u, _ in s.phase(2) if u.head]
    assert [u.owner for u in on_head] == ["ops.storage"]
    worker = FakeRemote(the_node=node("node2", "10.0.0.2", "worker"))
    reset.run_phase(worker, [(u, v) for u, v in s.phase(2) if u.head])
    assert worker.commands == []
    head = FakeRemote([(r"find -P", "/mnt/shared/.gpufab-x\n", 0)], the_node=node("node1", "10.0.0.1"))
    assert "removed gpufab's check files from /mnt/shared" in reset.run_phase(
        head, [(u, v) for u, v in s.phase(2) if u.head]).changes
