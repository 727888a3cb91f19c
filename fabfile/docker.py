"""`inv docker.install`, `docker.configure`, `docker.verify`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict

from invoke import task

from . import help_texts
from .core.cluster import open_session, select_nodes
from .core.errors import number_option, reported
from .core.remote import Remote
from .core.steps import Outcome, report_step, run_task

if TYPE_CHECKING:  # the step's code is imported by the task that runs it (start-up time)
    from .ops import docker

_HELP = {
    "nodes": "only these nodes (comma-separated names)",
    "workers": help_texts.option("workers", "hosts worked on at once"),
}


def _run(c, title: str, cli: Dict[str, Any], apply: Callable[[Remote, docker.DockerSettings], Outcome], nodes, workers):
    from .ops import docker

    def step(session):
        settings = docker.read(c.config, session.inventory, cli)
        return lambda r: apply(r, settings)

    run_task(c.config, title, step, nodes=nodes, workers=workers)


@task(help={"source": help_texts.option("docker_source", "official (download.docker.com) or distro (Debian/Ubuntu docker.io)"), **_HELP})
@reported
def install(c, source=None, nodes=None, workers=None):
    """Install Docker (skipped where present), and NVIDIA's container toolkit on GPU nodes; the SSH user joins group docker."""
    from .ops import docker
    _run(c, "docker.install", {"source": source}, docker.install_with_toolkit, nodes, workers)


@task(help={"force": "replace a daemon.json that is not valid JSON (it is backed up)", **_HELP})
@reported
def configure(c, force=False, nodes=None, workers=None):
    """Merge address pools, download limits and NVIDIA's runtime into daemon.json; restart only on change."""
    from .ops import docker
    _run(c, "docker.configure", {"force": force}, lambda r, s: docker.configure_docker(r, s.daemon, s.force), nodes, workers)


@task(help={"container": "also check that this container is running", **_HELP})
@reported
def verify(c, container=None, nodes=None, workers=None):
    """Check dockerd is active with the configured address pools; on GPU nodes, NVIDIA's runtime and --gpus all."""
    from .ops import docker
    _run(c, "docker.verify", {"container": container}, docker.check, nodes, workers)


@task(help={"images": "comma-separated image names (default: the inventory's docker: images:)",
            "login": "first docker login with DOCKER_USERNAME/DOCKER_PASSWORD (and DOCKER_REGISTRY) from .env",
            "env_file": "the .env file for --login (default .env)", **_HELP})
@reported
def pull(c, images=None, login=False, env_file=".env", nodes=None, workers=None):
    """Pull the images on every node at once, then compare image IDs across all nodes: one that differs fails, named."""
    from .ops import images as images_ops
    with open_session(c.config) as session:
        inv = session.inventory
        s = images_ops.read(c.config, inv, {"images": images, "login": login, "env_file": env_file})
        results = images_ops.pull(session, inv, select_nodes(inv, nodes), s, workers=number_option(workers, "--workers"))
    report_step("docker.pull", results)


@task(help=_HELP)
@reported
def containers(c, nodes=None, workers=None):
    """Keep the inventory's docker: containers: running: created again where their settings or image changed."""
    from .ops import containers as containers_ops

    def step(session):
        settings = containers_ops.read(c.config, session.inventory, {})
        return lambda r: containers_ops.apply(r, settings)

    run_task(c.config, "docker.containers", step, nodes=nodes, workers=workers)
