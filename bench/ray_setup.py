#!/usr/bin/env python3
"""Wall time of `inv ray.setup` on 1 vs 3 lab hosts (workers must join in parallel).

Run as root from the repo root: `.venv/bin/python bench/ray_setup.py [--samples 3]`.
For each size it brings up a fresh lab, writes the netenv, times the cold
`ray.install` once, then times `ray.setup` from "Ray installed, no units"
(head start + workers start + wait for every node) SAMPLES times, removing the
units between samples. Prints a Markdown table; the lab is taken down at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INV = str(REPO / ".venv" / "bin" / "inv")
ENV = {**os.environ, "GPUFAB_INVENTORY": str(REPO / "inventory" / "lab.yaml")}
RESET = ("systemctl disable --now gpufab-ray-head gpufab-ray-worker 2>/dev/null;"
         " rm -f /etc/systemd/system/gpufab-ray-*.service; systemctl daemon-reload")


def inv(*args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([INV, *args], cwd=REPO, env=ENV, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"bench: inv {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return seconds


def measure(hosts: int, samples: int) -> dict:
    inv("lab.down")
    inv("lab.up", "--nodes", str(hosts))
    inv("netenv.setup")
    install = inv("ray.install")
    setups = []
    for _ in range(samples):
        inv("exec", "-q", RESET)
        setups.append(inv("ray.setup"))
    return {"hosts": hosts, "install": install, "setup": setups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    try:
        rows = [measure(n, args.samples) for n in (1, 3)]
    finally:
        inv("lab.down")
    print("| hosts | cold ray.install (s) | ray.setup, Ray installed (s), median | samples |")
    print("|---|---|---|---|")
    for r in rows:
        samples = ", ".join(f"{s:.1f}" for s in r["setup"])
        print(f"| {r['hosts']} | {r['install']:.1f} | {statistics.median(r['setup']):.1f} | {samples} |")
    one, three = (statistics.median(r["setup"]) for r in rows)
    print(f"\n3 hosts / 1 host: {three / one:.2f} (ray.setup, Ray installed)")


if __name__ == "__main__":
    main()
