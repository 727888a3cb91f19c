"""The scripts the head and the nodes run for the one download, run here for real against a local web server.

uv's binary comes out of its wheel only when the wheel's sha256 is the one
given; the head keeps a wheel from uv's lock only with the lock's sha256.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import platform
import subprocess
import sys
import threading
import zipfile

import pytest

from fabfile.ops import wheels
from fabfile.ops.shared import uv as uv_plan


@pytest.fixture()
def served(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (an index page, wheels), and its URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def uv_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("uv/__init__.py", "")
        z.writestr("uv-0.13.9.data/scripts/uv", "#!/bin/sh\necho fake uv\n")
    return buf.getvalue()


def run(script: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "UV_INDEX_URL"}
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60,
                          env={**env, **extra})


def test_uv_comes_out_of_its_wheel_only_with_the_right_hash(served, tmp_path):
    root, url = served
    data = uv_wheel()
    digest = hashlib.sha256(data).hexdigest()
    name = f"uv-0.13.9-py3-none-manylinux_2_17_{platform.machine()}.whl"
    (root / "files").mkdir()
    (root / "files" / name).write_bytes(data)
    (root / "simple" / "uv").mkdir(parents=True)
    (root / "simple" / "uv" / "index.html").write_text(
        f'<a href="../../files/uv-0.13.9-py3-none-musllinux_1_1_{platform.machine()}.whl#sha256={"0" * 64}">x</a>\n'
        f'<a href="../../files/{name}#sha256={digest}">{name}</a>\n')
    dest = tmp_path / "bin"
    # The index from the environment (the inventory's pip_index_url, which may hold a token), never argv.
    proc = run(uv_plan.UV_INSTALL, "index", "-", "0.13.9", str(dest), UV_INDEX_URL=f"{url}/simple")
    assert proc.returncode == 0, proc.stderr
    uv = dest / "uv"
    assert uv.read_text() == "#!/bin/sh\necho fake uv\n" and uv.stat().st_mode & 0o777 == 0o755
    # From the head: a URL and the hash read over SSH; a wheel that differs is refused, nothing written.
    uv.unlink()
    proc = run(uv_plan.UV_INSTALL, "wheel", f"{url}/files/{name}", "f" * 64, str(dest))
    assert proc.returncode != 0 and "sha256 differs" in proc.stderr and not uv.exists()
    assert run(uv_plan.UV_INSTALL, "wheel", str(root / "files" / name), digest, str(dest)).returncode == 0
    assert uv.exists()


@pytest.mark.parametrize("tomllib", [True, False], ids=["tomllib", "python<3.11"])
def test_the_head_keeps_each_wheel_of_the_lock_only_with_its_hash(served, tmp_path, tomllib):
    script = wheels.DOWNLOAD if tomllib else "import sys; sys.modules['tomllib'] = None\n" + wheels.DOWNLOAD
    root, url = served
    good, pure = b"binary wheel", b"pure wheel"
    (root / "a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(good)
    (root / "a-1.0-py3-none-any.whl").write_bytes(pure)
    (root / "b-2.0-py3-none-any.whl").write_bytes(b"b")
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in
           {"a": good, "pure": pure, "b": b"b"}.items()}
    lock = tmp_path / "pylock.toml"

    def write(b_hash: str) -> None:
        lock.write_text(f"""lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "a"
version = "1.0"
wheels = [
    {{ url = "{url}/a-1.0-py3-none-any.whl", size = 10, hashes = {{ sha256 = "{sha['pure']}" }} }},
    {{ url = "{url}/a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", size = 12, hashes = {{ sha256 = "{sha['a']}" }} }},
]

[[packages]]
name = "b"
version = "2.0"
wheels = [{{ url = "{url}/b-2.0-py3-none-any.whl", size = 1, hashes = {{ sha256 = "{b_hash}" }} }}]
""")

    dest = tmp_path / "wheels"
    dest.mkdir()
    write("e" * 64)
    proc = run(script, str(lock), str(dest))
    assert proc.returncode != 0 and "b-2.0-py3-none-any.whl: sha256 differs" in proc.stderr
    assert not (dest / "b-2.0-py3-none-any.whl").exists()
    write(sha["b"])
    proc = run(script, str(lock), str(dest))
    assert proc.returncode == 0, proc.stderr
    hashes = wheels.parse_sha256sum(proc.stdout)
    # One wheel per package, the binary one before the pure one.
    assert hashes == {"a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl": sha["a"], "b-2.0-py3-none-any.whl": sha["b"]}
    assert sorted(p.name for p in dest.iterdir()) == sorted(hashes)
    again = run(script, str(lock), str(dest))
    assert "@@bytes 0" in again.stdout  # already there with the right hash: nothing fetched again
