#!/usr/bin/env python3
"""The peers gpufab is measured against, each as small as its library allows.

`peers.py TOOL HOSTS_FILE KEY KNOWN_HOSTS [--port P] [--user U] [--command C]`
runs C once on every host, all at once, and exits non-zero if any host
failed. Each tool is run in its own process so that the benchmark times the
whole thing a user would wait for: interpreter start, imports, connections,
the command, teardown. Only the named tool's library is imported.

`peers.py warm-TOOL ...` instead opens one connection per host (untimed),
runs C `--repeat` times in sequence on each host (all hosts at once), and
prints the milliseconds per command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # fabfile, for warm-gpufab


def fabric_group(hosts: List[str], a: argparse.Namespace) -> bool:
    from fabric import ThreadingGroup
    from fabric.exceptions import GroupException

    # Fabric's default: host keys are not checked (AutoAddPolicy).
    group = ThreadingGroup(*hosts, user=a.user, port=a.port,
                           connect_kwargs={"key_filename": [a.key]})
    try:
        group.run(a.command, hide=True, in_stream=False)
        return True
    except GroupException as exc:
        failed = {c.host: r for c, r in exc.result.items() if isinstance(r, Exception)}
        first = next(iter(failed.items()), ("", ""))
        print(f"fabric-group: {len(failed)} of {len(hosts)} hosts failed, e.g. {first[0]}: {first[1]!r}",
              file=sys.stderr)
        return False
    finally:
        group.close()


def asyncssh_gather(hosts: List[str], a: argparse.Namespace) -> bool:
    import asyncio

    import asyncssh

    known = asyncssh.read_known_hosts(a.known_hosts)  # parsed once, not per host
    key = asyncssh.read_private_key(a.key)

    async def one(host: str) -> int:
        async with asyncssh.connect(host, port=a.port, username=a.user, client_keys=[key],
                                    known_hosts=known) as conn:
            return (await conn.run(a.command)).exit_status

    async def main() -> bool:
        codes = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
        return all(c == 0 for c in codes)

    return asyncio.run(main())


def parallel_ssh(hosts: List[str], a: argparse.Namespace) -> bool:
    from pssh.clients import ParallelSSHClient

    # parallel-ssh's native client has no known_hosts check to switch on.
    client = ParallelSSHClient(hosts, user=a.user, port=a.port, pkey=a.key, pool_size=len(hosts))
    output = client.run_command(a.command, stop_on_errors=False)
    client.join(output)
    return all(o.exception is None and o.exit_code == 0 for o in output)


def warm_gpufab(hosts: List[str], a: argparse.Namespace) -> List[float]:
    from concurrent.futures import ThreadPoolExecutor

    from fabfile.core.connection import Session
    from fabfile.core.inventory import load_inventory
    from fabfile.core.remote import Remote

    inventory = load_inventory(a.inventory)
    with Session(inventory) as session:
        remotes = [Remote(session.connection(n), n) for n in inventory.nodes]
        for r in remotes:
            r.run(a.command)  # connect + first command, untimed

        def repeat(remote: Remote) -> float:
            start = time.perf_counter()
            for _ in range(a.repeat):
                remote.run(a.command)
            return time.perf_counter() - start

        with ThreadPoolExecutor(len(remotes)) as pool:
            return list(pool.map(repeat, remotes))


def warm_fabric(hosts: List[str], a: argparse.Namespace) -> List[float]:
    from concurrent.futures import ThreadPoolExecutor

    from fabric import Connection

    conns = [Connection(h, user=a.user, port=a.port, connect_kwargs={"key_filename": [a.key]}) for h in hosts]
    for c in conns:
        c.client.load_host_keys(a.known_hosts)
        c.run(a.command, hide=True, in_stream=False)

    def repeat(conn: Connection) -> float:
        start = time.perf_counter()
        for _ in range(a.repeat):
            conn.run(a.command, hide=True, in_stream=False)
        return time.perf_counter() - start

    try:
        with ThreadPoolExecutor(len(conns)) as pool:
            return list(pool.map(repeat, conns))
    finally:
        for c in conns:
            c.close()


def warm_asyncssh(hosts: List[str], a: argparse.Namespace) -> List[float]:
    import asyncio

    import asyncssh

    async def main() -> List[float]:
        conns = await asyncio.gather(*(asyncssh.connect(h, port=a.port, username=a.user, client_keys=[a.key],
                                                        known_hosts=a.known_hosts) for h in hosts))
        for c in conns:
            await c.run(a.command, check=True)

        async def repeat(conn: asyncssh.SSHClientConnection) -> float:
            start = time.perf_counter()
            for _ in range(a.repeat):
                await conn.run(a.command, check=True)
            return time.perf_counter() - start

        try:
            return list(await asyncio.gather(*(repeat(c) for c in conns)))
        finally:
            for c in conns:
                c.close()

    return asyncio.run(main())


FAN_OUT: Dict[str, Callable[[List[str], argparse.Namespace], bool]] = {
    "fabric-group": fabric_group,
    "asyncssh": asyncssh_gather,
    "parallel-ssh": parallel_ssh,
}
WARM: Dict[str, Callable[[List[str], argparse.Namespace], List[float]]] = {
    "warm-gpufab": warm_gpufab,
    "warm-fabric": warm_fabric,
    "warm-asyncssh": warm_asyncssh,
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("tool", choices=[*FAN_OUT, *WARM])
    p.add_argument("hosts_file")
    p.add_argument("key")
    p.add_argument("known_hosts")
    p.add_argument("--port", type=int, default=2222)
    p.add_argument("--user", default="gpufab-bench")
    p.add_argument("--command", default="true")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--inventory", help="gpufab inventory of the same hosts (warm-gpufab)")
    a = p.parse_args()
    with open(a.hosts_file) as fh:
        hosts = [line.strip() for line in fh if line.strip()]
    if a.tool in WARM:
        seconds = WARM[a.tool](hosts, a)
        # the slowest host decides: all hosts run their sequences at once
        print(f"{max(seconds) / a.repeat * 1000:.2f}")
        return 0
    return 0 if FAN_OUT[a.tool](hosts, a) else 1


if __name__ == "__main__":
    sys.exit(main())
