"""Ports the inventory and the CLI give (a job's MASTER_PORT, the fetch server's, sshfs's): one check for all."""

from __future__ import annotations

from ...core.errors import InputError


DEFAULT_MASTER_PORT = 29500


def check_port(value: object, what: str = "master port", path: str = "--master-port") -> int:
    try:
        port = int(str(value))
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise InputError(f"invalid {what} {value!r}", path=path)
    return port
