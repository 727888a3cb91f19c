"""A local apt repository with stand-in NVIDIA container toolkit packages, for GPU-shaped lab hosts.

NVIDIA's repository cannot be reached from the lab, so the lab serves its own on the public bridge:
the four packages the real toolkit has (nvidia-container-toolkit, nvidia-container-toolkit-base,
libnvidia-container-tools, libnvidia-container1, with the same dependencies), whose `nvidia-ctk runtime
configure` edits daemon.json the way NVIDIA's does, signed by a key made for the lab. gpufab installs
from it exactly as from NVIDIA's: the repository URL, the key's URL and its fingerprint are settings.
"""

from __future__ import annotations

import hashlib
from email.utils import formatdate
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .gpu import STANDINS

VERSION = "1.17.8-1"
PORT = 8770
#: (package, depends, files: inner path -> stand-in)
PACKAGES: Sequence[Tuple[str, str, Dict[str, str]]] = (
    ("libnvidia-container1", "", {"/usr/share/doc/libnvidia-container1/README.gpufab-lab": ""}),
    ("libnvidia-container-tools", f"libnvidia-container1 (>= {VERSION})",
     {"/usr/bin/nvidia-container-cli": "nvidia-container-cli"}),
    ("nvidia-container-toolkit-base", "",
     {"/usr/bin/nvidia-ctk": "nvidia-ctk", "/usr/bin/nvidia-container-runtime": "nvidia-container-runtime"}),
    ("nvidia-container-toolkit", f"nvidia-container-toolkit-base (= {VERSION}), libnvidia-container-tools (>= {VERSION})",
     {"/usr/bin/nvidia-container-runtime-hook": "nvidia-container-runtime-hook"}),
)


def _run(cmd: List[str], env: Dict[str, str] = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def build_deb(out: Path, name: str, depends: str, files: Dict[str, str]) -> Path:
    """One .deb, made with dpkg-deb from the stand-ins."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for inner, source in files.items():
            target = root / inner.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            text = (STANDINS / source).read_text() if source and (STANDINS / source).is_file() else source
            target.write_text(text)
            target.chmod(0o755 if inner.startswith("/usr/bin/") else 0o644)
        (root / "DEBIAN").mkdir()
        control = (f"Package: {name}\nVersion: {VERSION}\nArchitecture: all\nMaintainer: gpufab lab <lab@gpufab>\n"
                   + (f"Depends: {depends}\n" if depends else "")
                   + "Description: gpufab lab stand-in for NVIDIA's package of this name\n")
        (root / "DEBIAN" / "control").write_text(control)
        deb = out / f"{name}_{VERSION}_all.deb"
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)])
    return deb


def build_repo(directory: Path) -> str:
    """The repository (a flat one: `deb URL /`), its Release signed; returns the key's fingerprint."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    home = directory.parent / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    env = {"GNUPGHOME": str(home)}
    if not _run(["gpg", "--batch", "--list-secret-keys", "--with-colons"], env=env).stdout.strip():
        _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
              "gpufab lab (stand-in NVIDIA repository) <lab@gpufab>", "rsa3072", "sign", "never"], env=env)
    for name, depends, files in PACKAGES:
        build_deb(directory, name, depends, files)
    packages = _run(["dpkg-scanpackages", "--multiversion", "."], cwd=str(directory)).stdout
    (directory / "Packages").write_text(packages)
    digest = hashlib.sha256(packages.encode()).hexdigest()
    # apt warns about (and gpufab refuses) a Release without a Date, as it would NVIDIA's.
    (directory / "Release").write_text(f"Origin: gpufab lab\nLabel: nvidia-container-toolkit (stand-in)\n"
                                       f"Suite: stable\nDate: {formatdate(usegmt=True)}\n"
                                       f"SHA256:\n {digest} {len(packages.encode())} Packages\n")
    _run(["gpg", "--batch", "--yes", "--clearsign", "-o", str(directory / "InRelease"), str(directory / "Release")],
         env=env)
    key = _run(["gpg", "--batch", "--armor", "--export"], env=env).stdout
    (directory / "gpgkey").write_text(key)
    colons = _run(["gpg", "--batch", "--with-colons", "--fingerprint"], env=env).stdout
    return next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
