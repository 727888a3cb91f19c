"""`inv inventory.import|show|check|settings`: the node list, a preflight over it, and the settings it may hold."""

from __future__ import annotations

import os

from invoke import task
from invoke.exceptions import Exit

from . import help_texts
from .core.declared import reference_table
from .core.cluster import ensure_private, inventory_path, open_session, resolve_inventory
from .core.errors import InputError, number_option, reported
from .core.facts import human_kib
from .core.fanout import UNREACHABLE, fan_out, worst_exit_code
from .core.localfs import check_writable, read_text, write_if_changed
from .core.mapping import check_prefix, parse_mapping, render_inventory, render_ssh_block, replace_block
from .core.report import host_table, inventory_table, summary_line
from .core.inventory import load_yaml, parse_inventory


@task(
    name="import",
    help={
        "mapping": "file with one 'PUBLIC_IP PRIVATE_IP' row per node (header optional)",
        "output": "inventory file to write (default: the inventory in use: inventory/hosts.yaml, or ~/.config/gpufab/hosts.yaml outside a project)",
        "prefix": "host alias prefix for ~/.ssh/config entries (default rental: rental0, rental1, ...)",
        "user": "SSH user (default root)",
        "port": "SSH port (default 22)",
        "key": "SSH private key (IdentityFile)",
        "ssh_config": "ssh config file to manage (default ~/.ssh/config)",
    },
)
@reported
def import_(c, mapping, output=None, prefix="rental", user="root", port=None, key=None, ssh_config="~/.ssh/config"):
    """Turn a pasted 'Public IP  Private IP' table into the inventory and ~/.ssh/config entries."""
    text = read_text(mapping)
    if text is None:
        raise InputError("mapping file not found", path=mapping)
    prefix = check_prefix(prefix)
    port = number_option(port, "--port") or 22
    pairs = parse_mapping(text, mapping)
    output = output or inventory_path(c.config)
    inv_text = render_inventory(pairs, prefix, user, port, key, source=os.path.basename(mapping))
    cfg_path = os.path.expanduser(ssh_config)
    check_writable([output, output + ".bak", cfg_path, cfg_path + ".gpufab.bak"])  # before reading any of them
    check_two_files(output, cfg_path)
    check_replaceable(output)
    block = render_ssh_block(pairs, prefix, user, port, key, output)
    old_cfg = read_text(cfg_path) or ""
    new_cfg = replace_block(old_cfg, block, cfg_path)
    # Every check above passed: only now is anything written.
    inv_changed = write_if_changed(output, inv_text, 0o644, backup=output + ".bak")
    os.makedirs(os.path.dirname(cfg_path) or ".", mode=0o700, exist_ok=True)
    cfg_changed = write_if_changed(cfg_path, new_cfg, 0o600, backup=cfg_path + ".gpufab.bak")
    print(inventory_table(parse_inventory(inv_text, output)))
    print(f"{output}: {'written' if inv_changed else 'unchanged'}")
    print(f"{cfg_path}: managed block {'written' if cfg_changed else 'unchanged'} "
          f"({prefix}0..{prefix}{len(pairs) - 1}; try: ssh {prefix}0)")


def check_two_files(output: str, cfg_path: str) -> None:
    """The inventory and the ssh config are two files: one written over the other lost the inventory."""
    if os.path.realpath(output) == os.path.realpath(cfg_path):
        raise InputError(f"is the ssh config file too ({cfg_path}): give the inventory a file of its own",
                         path="--output")


def check_replaceable(output: str) -> None:
    """An existing --output must be an inventory: import replaces the whole file, and a .bak is no excuse."""
    text = read_text(output)
    if not text or not text.strip():
        return
    try:
        data = load_yaml(text, output)
    except InputError:
        data = None
    if not (isinstance(data, dict) and "nodes" in data):
        raise InputError("exists and is not an inventory (it has no nodes:); import replaces the whole file: "
                         "give another --output, or move this one away", path=output)


@task
@reported
def show(c):
    """Print the node table of the inventory in use."""
    inv = resolve_inventory(c.config)
    print(inventory_table(inv))


@task
@reported
def settings(c):
    """Print every setting the inventory's vars, a node's vars or a config file may hold (docs/settings.md)."""
    print(reference_table(), end="")


@task
@reported
def schema(c):
    """Print the inventory's JSON Schema, for editors (`# yaml-language-server: $schema=gpufab.schema.json`)."""
    import json
    from .core.schema import inventory_schema
    print(json.dumps(inventory_schema(), indent=2))


@task(help={"private_subnet": "CIDR of the private network (for fab -H, when discovery is ambiguous)",
            "workers": help_texts.option("workers", "hosts checked at once")})
@reported
def check(c, private_subnet=None, workers=None):
    """Preflight: reachable, auth, sudo, OS, GPUs, private NIC, free disk on / per host."""
    from .ops import preflight
    workers = number_option(workers, "--workers")
    with open_session(c.config) as session:
        inv = ensure_private(session, private_subnet, workers)
        head_private = inv.head.private
        results = fan_out(session, inv.nodes, lambda conn, node: preflight.probe(session, conn, node, head_private),
                          workers=workers)
    rows = []
    for r in results:
        d = r.value
        if d is None and r.status == UNREACHABLE:
            rows.append((r.node.name, f"no: {r.reason}", "-", "-", "-", "-", "-", "-"))
            continue
        d = d or preflight.Preflight()
        rows.append((r.node.name, d.reachable, d.auth, d.sudo, d.os, d.gpus, d.nic or "-",
                     human_kib(d.disk_free_kb) if d.disk_free_kb else "-"))
    print(host_table(["Node", "Reachable", "Auth", "Sudo", "OS", "GPUs", "Private NIC", "Free /"], rows))
    print(summary_line("inventory.check", results))
    code = worst_exit_code(results)
    if code:
        raise Exit(code=code)
