"""The bootstrap chain: every step, in the order it runs. A new step is one entry here."""

from __future__ import annotations

from ..core.chain import VERIFY
from . import allreduce, containers, docker, images, limits, mesh, netenv, preflight, ray, storage, tools

CHAIN = (
    preflight.STEP,
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
