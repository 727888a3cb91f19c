"""The bootstrap chain: every step, in chain order. A new step is one entry here.

Each step says which steps it needs (`needs=`); a step starts as soon as those
have ended, so the order here is only the order of the report and of a dry run.
The checks of their own a step carries (core.checks) are placed here too: the
GPU doctor and the fleet's comparison ride on preflight. This is the one ops
module that imports the steps (tests/unit/test_layout.py).
"""

from __future__ import annotations

from ..core.chain import VERIFY
from . import (allreduce, containers, docker, doctor, fetch, fleet, images, limits, mesh, netenv, preflight, ray, storage,
               tools, wheels)

CHAIN = (
    preflight.carrying(doctor.CHECK, fleet.CHECK),
    fetch.STEP,
    wheels.STEP,
    limits.STEP,
    docker.STEP,
    images.STEP,
    containers.STEP,
    netenv.STEP,
    mesh.STEP,
    storage.STEP,
    ray.STEP,
    tools.STEP,
    allreduce.STEP,
    VERIFY,
)
