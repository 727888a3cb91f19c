"""Issue 32, item 8: an index URL or proxy with a token reaches a node's command through a file, not argv.

The prefix `Remote.run(secret_env=...)` puts before a command is run here for
real: the values arrive, the file is gone afterwards, and a file swapped
before it was read (by any process of the SSH user) is never loaded.
"""

from __future__ import annotations

import hashlib
import subprocess

from fabfile.core.errors import HostError, redact
from fabfile.core.remote import secret_env_prefix


def staged(tmp_path, body: str):
    path = tmp_path / ".gpufab-env-test"
    path.write_text(body)
    path.chmod(0o600)
    return path, hashlib.sha256(body.encode()).hexdigest()


def test_the_values_reach_the_command_and_the_file_is_gone(tmp_path):
    path, digest = staged(tmp_path, "export UV_INDEX_URL='https://u:T0K3N@idx/simple'\n")
    out = subprocess.run(["sh", "-c", secret_env_prefix(str(path), digest) + 'echo "$UV_INDEX_URL"'],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "https://u:T0K3N@idx/simple\n" and out.returncode == 0
    assert not path.exists()
    assert "T0K3N" not in secret_env_prefix(str(path), digest)


def test_a_file_changed_before_it_was_read_is_never_loaded(tmp_path):
    path, digest = staged(tmp_path, "export A=1\n")
    path.write_text("export A=1; touch planted\n")
    out = subprocess.run(["sh", "-c", secret_env_prefix(str(path), digest) + "echo ran"], capture_output=True,
                         text=True, timeout=30, cwd=str(tmp_path))
    assert out.returncode == 3 and "ran" not in out.stdout and not (tmp_path / "planted").exists()
    assert not path.exists()


def test_a_url_s_credentials_never_reach_a_report_line():
    assert redact("error: Failed to fetch: `https://u:T0K3N@idx.example/simple/uv/`") == \
        "error: Failed to fetch: `https://***@idx.example/simple/uv/`"
    assert HostError("pip: http://p:S3CR3T@proxy:3128 refused").reason == "pip: http://***@proxy:3128 refused"
    assert redact("https://idx.example/simple and user@host:22") == "https://idx.example/simple and user@host:22"
