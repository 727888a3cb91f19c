"""The controller's `.env` of secrets and where the nodes keep it: read here, written by netenv, logged in
with by images, sourced by Ray's units. Bad entries are named by key, never by value."""

from __future__ import annotations

import io
from typing import Dict

from dotenv import dotenv_values

from ...core.errors import InputError
from ...core.inventory import VAR_KEY_RE
from ...core.localfs import read_text


SECRETS_FILE = "/etc/gpufab/secrets.env"


def load_secrets(path: str) -> Dict[str, str]:
    """Secrets from a local .env; bad entries named by key, never by value."""
    text = read_text(path)
    if text is None:
        raise InputError("no such .env file (needed by --secrets)", path=path)
    # Taken literally: a token holding `${HOME}` or `$x` must reach the nodes as written.
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    secrets: Dict[str, str] = {}
    for key, value in values.items():
        if not VAR_KEY_RE.match(key):
            raise InputError(f"invalid variable name {key!r}", path=path)
        if value is None:
            raise InputError(f"{key} has no value", path=path)
        if any(c in value for c in "'\n\r\0"):
            raise InputError(f"the value of {key} holds a quote or a line break; gpufab cannot write it safely", path=path)
        secrets[key] = value
    if not secrets:
        raise InputError(".env holds no variables", path=path)
    return secrets
