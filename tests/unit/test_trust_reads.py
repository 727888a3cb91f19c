"""Issue 32, item 9: root's reads on a node never follow a link or wait on a FIFO, and a peer's
download cannot be larger than apt's signed lists say.

READ_SCRIPT (every managed file's state) and PEER_DEBS (a worker's .debs from
the head) are run here for real; apt-get and apt-cache are stand-ins that
print what the real ones print for one package.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest

from fabfile.core import packages
from fabfile.core.remote import READ_SCRIPT, parse_state


def read(*paths: str) -> dict:
    out = subprocess.run(["sh", "-c", READ_SCRIPT, "gpufab", *paths], capture_output=True, text=True, timeout=20)
    return parse_state(out.stdout)


def test_a_file_is_read_a_link_is_not_read_through_and_a_fifo_is_not_waited_on(tmp_path):
    (tmp_path / "plain").write_text("mine\n")
    (tmp_path / "secret").write_text("shadow-like\n")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    os.mkfifo(tmp_path / "fifo")
    found = read(str(tmp_path / "plain"), str(tmp_path / "link"), str(tmp_path / "fifo"), "-d",
                 str(tmp_path / "plain"), str(tmp_path / "absent"))
    assert found[str(tmp_path / "plain")].digest == hashlib.sha256(b"mine\n").hexdigest()
    assert found[str(tmp_path / "link")].exists and found[str(tmp_path / "link")].content is None
    assert not found[str(tmp_path / "fifo")].exists and not found[str(tmp_path / "absent")].exists


def test_the_read_itself_refuses_a_link_that_replaced_the_file_after_the_test(tmp_path):
    """The race: `[ -L ]` said no, then the file became a link. The open has O_NOFOLLOW."""
    (tmp_path / "secret").write_text("shadow-like\n")
    (tmp_path / "f").symlink_to(tmp_path / "secret")
    racing = READ_SCRIPT.replace('if [ -L "$p" ]; then', 'if false; then')  # the test was passed before the swap
    out = subprocess.run(["sh", "-c", racing, "gpufab", str(tmp_path / "f")], capture_output=True, text=True, timeout=20)
    assert "shadow-like" not in parse_state(out.stdout)[str(tmp_path / "f")].content


class EndlessDebs(http.server.SimpleHTTPRequestHandler):
    """A head that turned hostile: a .deb named `ENDLESS` in the archive is streamed without end."""

    def do_GET(self):
        if not (self.directory and os.path.exists(os.path.join(self.directory, "ENDLESS"))):
            return super().do_GET()
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def head(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(EndlessDebs, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def fake_apt(tmp_path, name: str, size: int, sha: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pkg, version = name.split("_")[:2]
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\necho \"'http://deb.example/pool/{name}' {name} {size} MD5Sum:00\"\n")
    (bin_dir / "apt-cache").write_text(f"#!/bin/sh\nprintf 'Package: {pkg}\\nVersion: {version}\\nSHA256: {sha}\\n\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("served,kept", [(b"x" * 20, True), (b"x" * 20 + b"y" * (4 << 20), False),
                                         (None, False), (b"z" * 20, False)],
                         ids=["as-listed", "larger", "endless", "other-bytes"])
def test_a_deb_from_the_head_is_kept_only_at_the_size_and_sha256_of_the_signed_lists(tmp_path, head, served, kept):
    root, url = head
    name = "sshfs_3.7.3-1.1_amd64.deb"
    if served is None:
        (root / "ENDLESS").write_text("")
    else:
        (root / name).write_bytes(served)
    env = fake_apt(tmp_path, name, 20, hashlib.sha256(b"x" * 20).hexdigest())
    archive = tmp_path / "archive"
    archive.mkdir()
    # Bounded: a node reads no more than the lists' size (+1 byte to see that there is more).
    out = subprocess.run([sys.executable, "-c", packages.PEER_DEBS, url, str(archive), "sshfs"], env=env,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert (archive / name).exists() == kept
    assert [p.name for p in archive.iterdir() if p.name.startswith(".gpufab-")] == []  # nothing half-written left
