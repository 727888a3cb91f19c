"""NVIDIA's container toolkit, for the docker step on nodes with NVIDIA GPUs: from NVIDIA's apt repository, key pinned.

`docker run --gpus all` needs the toolkit's hook and runtime; without them a
GPU node's containers see no GPU, and the usual fix from the wiki (`curl
gpgkey | gpg --dearmor`) trusts whatever that URL served. Here the key is
fetched by the node, held to the pinned fingerprint on the controller before
apt sees it, and the repository's URL is a setting so a mirror works. The
runtime entry itself comes from the installed `nvidia-ctk runtime configure
--dry-run`, so daemon.json gets what NVIDIA's own tool writes, merged by the
docker step in its one write and one restart.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from ...core import programs
from ...core import openpgp
from ...core.cluster import setting
from ...core.errors import HostError, InputError
from ...core.facts import parse_facts
from ...core.files import ManagedFile, plan_files, render
from ...core.inventory import Inventory
from ...core.remote import Remote, ensure_packages, last_line
from ...core.steps import Outcome
from ...core.declared import URL, AptSource, Setting, declare, owns, text
from ..shared import gpu

PACKAGE = "nvidia-container-toolkit"
KEYRING = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
SOURCE_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
#: NVIDIA's install guide's repository and key (docs.nvidia.com/datacenter/cloud-native/container-toolkit/
#: latest/install-guide.html); `$(ARCH)` is apt's own substitution.
DEFAULT_REPO = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
DEFAULT_KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"
#: The key that signs it (key id DDCAE044F796ECB0, NVIDIA/nvidia-container-runtime#88; the full
#: fingerprint pinned the same in Puppet's apt::key uses of the repository).
DEFAULT_FINGERPRINT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
#: A key file is a few KiB; anything much bigger is not one.
KEY_MAX_BYTES = 256 * 1024

#: key=value facts: does the node have NVIDIA GPUs (driver working, or only on PCI), and the toolkit?
#: $1 `known`: the run has read the GPU count already (then no GPUS=).
FACTS = programs.text("nvidia-toolkit-facts.sh")

#: What `nvidia-ctk runtime configure` would write into daemon.json, printed instead of written
#: (NVIDIA/nvidia-container-toolkit cmd/nvidia-ctk/runtime/configure: --dry-run saves to stdout).
CTK_DRY_RUN = "nvidia-ctk runtime configure --runtime=docker --dry-run"


def check_url(value: Any, where: str) -> str:
    """An http(s) URL that can stand in a sources.list line and a curl argument; credentials stay out of it."""
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"not an http(s) URL: {text!r}", path=where)
    if re.search(r"[\s\"'`\\\[\]]|[\x00-\x1f\x7f]", text.replace(f"[{parts.hostname}]", "")):
        raise InputError(f"a URL with spaces, quotes or brackets cannot go into an apt source: {text!r}", path=where)
    if parts.username or parts.password:
        raise InputError("credentials in a repository URL would land in a world-readable file; "
                         "give apt them in /etc/apt/auth.conf.d instead", path=where)
    return text


@dataclass(frozen=True)
class ToolkitSettings:
    repo: str = DEFAULT_REPO
    key_url: str = DEFAULT_KEY_URL
    fingerprint: str = DEFAULT_FINGERPRINT
    #: An image present on GPU nodes that verify starts with `--gpus all` (none: no container check).
    test_image: Optional[str] = None


IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


def read(config: Any, inv: Inventory) -> ToolkitSettings:
    """vars `nvidia_container_repo`, `nvidia_container_key_url`, `nvidia_container_key_fingerprint`, `gpu_test_image`."""
    fingerprint = setting(config, inv, "nvidia_container_key_fingerprint", default=DEFAULT_FINGERPRINT)
    try:
        fingerprint = openpgp.check_fingerprint(fingerprint)
    except ValueError as exc:
        raise InputError(str(exc), path="nvidia_container_key_fingerprint") from None
    image = setting(config, inv, "gpu_test_image")
    if image is not None and not IMAGE_RE.match(str(image)):
        raise InputError(f"not an image reference: {image!r}", path="gpu_test_image")
    return ToolkitSettings(
        repo=check_url(setting(config, inv, "nvidia_container_repo", default=DEFAULT_REPO), "nvidia_container_repo"),
        key_url=check_url(setting(config, inv, "nvidia_container_key_url", default=DEFAULT_KEY_URL),
                          "nvidia_container_key_url"),
        fingerprint=fingerprint,
        test_image=None if image is None else str(image),
    )


@dataclass(frozen=True)
class GpuFacts:
    #: GPUs the driver lists (`nvidia-smi -L`).
    gpus: int
    #: NVIDIA display/3D controllers on PCI, driver or not.
    pci: int
    #: The toolkit package's version when installed, else "".
    toolkit: str
    ctk: bool
    runtime: bool


def parse_gpu_facts(text: str) -> GpuFacts:
    facts = parse_facts(text)
    status, _, version = facts.get("TOOLKIT", "").partition(" ")

    def count(key: str) -> int:
        value = facts.get(key, "0").strip()
        return int(value) if value.isdigit() else 0

    return GpuFacts(gpus=count("GPUS"), pci=count("PCI"), toolkit=version if status == "installed" else "",
                    ctk=bool(facts.get("CTK")), runtime=bool(facts.get("RUNTIME")))


def source_list(repo: str) -> str:
    return render("docker/nvidia-container-toolkit.list.j2", repo=repo, keyring=KEYRING)


def check_key(data: bytes, url: str, fingerprint: str) -> None:
    """The fetched key file holds the pinned key and no other; why not, when not."""
    try:
        found = openpgp.primary_fingerprints(data)
    except openpgp.KeyFileError as exc:
        raise HostError(f"{url} did not serve an OpenPGP key ({exc}); nothing installed") from None
    if found != [fingerprint]:
        raise HostError(f"the key at {url} is {', '.join(found)}, not the pinned {fingerprint} "
                        "(set nvidia_container_key_fingerprint for a mirror's own key); nothing installed")


#: apt's complaints about one source: a fetch that failed, a signature it would not take.
_APT_TROUBLE = re.compile(r"^(?:E:|W:|Err:).*", re.M)


def update_command() -> str:
    """`apt-get update` of this one source: quick, and its failure is this repository's own."""
    return ("DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300"
            f" -o Dir::Etc::sourcelist={SOURCE_LIST} -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 update")


def fetch_key(remote: Remote, url: str) -> bytes:
    """The key file at `url`, fetched by the node (it is the one that reaches the repository), size-bounded."""
    fetch = remote.run(
        f"{{ curl -fsSL --max-time 60 --max-filesize {KEY_MAX_BYTES} --proto =http,https {shlex.quote(url)}"
        " || echo \"curl exited $?\" >&2; } | base64 -w0", warn=True)
    failed = "curl exited" in (fetch.stderr or "")
    if fetch.exited != 0 or failed or not fetch.stdout.strip():
        reason = last_line("\n".join(l for l in (fetch.stderr or "").splitlines() if "curl exited" not in l))
        raise HostError(f"cannot fetch NVIDIA's container toolkit key from {url} "
                        f"({reason or last_line(fetch.stderr) or 'no answer'}); nothing installed")
    return base64.b64decode(fetch.stdout.strip())


def install(remote: Remote, s: ToolkitSettings) -> List[str]:
    """The repository (key checked first), then the package; a repository apt cannot use is taken out again."""
    key = fetch_key(remote, s.key_url)
    check_key(key, s.key_url, s.fingerprint)
    if not key.isascii():
        raise HostError(f"the key at {s.key_url} is a binary key file; gpufab installs armored ones (.asc) only")
    files = [ManagedFile(KEYRING, key.decode("ascii")), ManagedFile(SOURCE_LIST, source_list(s.repo))]
    with remote.apt_lock:
        done = remote.write_files(plan_files(files, remote.read_state(files)))
        update = remote.change(update_command(), warn=True, timeout=max(remote.timeout or 0, 600))
        trouble = _APT_TROUBLE.findall((update.stdout or "") + "\n" + (update.stderr or ""))
        if not remote.dry_run and (update.exited != 0 or trouble):
            remote.change(f"rm -f -- {SOURCE_LIST} {KEYRING}", warn=True)
            reason = trouble[-1] if trouble else last_line(update.stderr)
            raise HostError(f"apt cannot use NVIDIA's repository {s.repo} ({reason}); its key and source removed")
        try:
            done += ensure_packages(remote, (PACKAGE,))
        except HostError as exc:
            remote.change(f"rm -f -- {SOURCE_LIST} {KEYRING}", warn=True)
            raise HostError(f"{exc}; NVIDIA's key and source removed again") from None
    return done


def ensure_toolkit(remote: Remote, s: ToolkitSettings) -> Outcome:
    """Where the driver lists NVIDIA GPUs and the toolkit is missing, install it; otherwise say what is there."""
    facts = gpu_facts(remote)
    if facts.gpus == 0:
        if facts.pci:
            return Outcome([], [f"{facts.pci} NVIDIA GPUs on PCI but no working driver (nvidia-smi): "
                                "no container toolkit installed (see doctor)"])
        return Outcome([], [])
    if facts.toolkit:
        return Outcome([], [f"NVIDIA container toolkit {facts.toolkit}"])
    if facts.ctk and facts.runtime:
        return Outcome([], ["NVIDIA container runtime present (not from a package)"])
    return Outcome(install(remote, s), [])


def runtime_entry(remote: Remote) -> Optional[Dict[str, Any]]:
    """The "nvidia" runtime that `nvidia-ctk runtime configure` would add to daemon.json (None without nvidia-ctk)."""
    if not remote.check("command -v nvidia-ctk >/dev/null"):
        return None
    result = remote.run(CTK_DRY_RUN, sudo=True, warn=True)
    try:
        entry = json.loads(result.stdout)["runtimes"]["nvidia"]
    except (ValueError, KeyError, TypeError):
        raise HostError(f"`{CTK_DRY_RUN}` gave no runtime ({last_line(result.stderr) or 'no output'})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise HostError(f"`{CTK_DRY_RUN}` gave a runtime without a path: {entry!r}")
    return entry


def container_check(remote: Remote, image: Optional[str], facts: GpuFacts) -> Optional[str]:
    """`docker run --gpus all IMAGE nvidia-smi -L` where IMAGE is on the node: a note, or HostError when GPUs are missing."""
    if facts.gpus == 0:
        return None
    if not image:
        return "no --gpus container check (set gpu_test_image to an image on the nodes)"
    q = shlex.quote(image)
    if not remote.check(f"docker image inspect {q} >/dev/null 2>&1", sudo=True):
        return f"no --gpus container check: image {image} is not on the node"
    result = remote.run(f"timeout 120 docker run --rm --gpus all {q} nvidia-smi -L", sudo=True, warn=True)
    seen = sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))
    if result.exited != 0 or seen != facts.gpus:
        why = last_line(result.stderr) or f"it listed {seen} GPUs"
        raise HostError(f"a container started with --gpus all does not see the node's {facts.gpus} GPUs ({why})")
    return f"--gpus all: a container sees all {seen} GPUs ({image})"


def gpu_facts(remote: Remote) -> GpuFacts:
    gpus_known = remote.facts.flag(gpu.GPUS)
    text = remote.script(FACTS, gpus_known).stdout
    gpus = remote.facts.kept(gpu.GPUS, gpus_known, lambda: parse_facts(text).get("GPUS", "0"), remote)
    return replace(parse_gpu_facts(text), gpus=gpu.count_of(gpus))


DECLARED = declare(
    "ops.docker.nvidia_toolkit",
    Setting("nvidia_container_repo", "the NVIDIA Container Toolkit's apt repository", "NVIDIA's stable deb repository",
            kind=URL, check=lambda v: check_url(v, "nvidia_container_repo")),
    Setting("nvidia_container_key_url", "where each GPU node fetches that repository's signing key",
            DEFAULT_KEY_URL,
            kind=URL, check=lambda v: check_url(v, "nvidia_container_key_url")),
    Setting("nvidia_container_key_fingerprint", "the key's pinned OpenPGP fingerprint", DEFAULT_FINGERPRINT,
            kind=text("^ *(?:0[xX])?(?: *[0-9A-Fa-f]){40} *$", "OpenPGP fingerprint"),
            check=openpgp.check_fingerprint),
    Setting("gpu_test_image", "an image on the node that docker.verify runs with --gpus all", "none",
            kind=text(IMAGE_RE.pattern, "image")),
)


OWNED = owns("ops.nvidia_toolkit", undone_by_step=(SOURCE_LIST, KEYRING),
             sources=(AptSource(PACKAGE, "NVIDIA's", (SOURCE_LIST, KEYRING)),))
