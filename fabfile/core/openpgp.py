"""The fingerprints of the primary keys in an OpenPGP key file, so an apt signing key can be pinned.

An apt repository's key is fetched over the network from a URL that a
mirror or an attacker may serve; apt trusts every key in its `signed-by`
file. So gpufab installs a key file only when it holds exactly the keys the
operator pinned. A version 4 key's fingerprint is defined by the format
itself (RFC 4880 section 12.2), over the key packet's bytes, so it is
computed here rather than by a gpg that may not be on the controller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Iterator, List, Tuple

PUBLIC_KEY = 6
FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
_ARMOR_RE = re.compile(
    r"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S)


class KeyFileError(ValueError):
    """Not an OpenPGP public key file gpufab can read."""


def check_fingerprint(value: object) -> str:
    """A pinned fingerprint as written anywhere (spaces, lower case, 0x) in gpufab's form: upper-case hex."""
    text = re.sub(r"\s+", "", str(value)).upper()
    text = text[2:] if text.startswith("0X") else text
    if not FINGERPRINT_RE.match(text):
        raise ValueError(f"not an OpenPGP key fingerprint (40 hex digits): {value!r}")
    return text


def dearmor(data: bytes) -> bytes:
    """The binary packets of an armored file (every block in it), or the bytes themselves when binary."""
    if data[:1] and data[0] & 0x80:
        return data
    text = data.decode("ascii", errors="strict") if data.isascii() else None
    if text is None:
        raise KeyFileError("neither binary OpenPGP nor ASCII armor")
    blocks = _ARMOR_RE.findall(text)
    if not blocks:
        raise KeyFileError("no PGP PUBLIC KEY BLOCK in it")
    out = b""
    for block in blocks:
        # Armor headers (Version:, Comment:) end at the first empty line.
        block = block.replace("\r\n", "\n")
        body = block.split("\n\n", 1)[1] if "\n\n" in block else block
        lines = [line.strip() for line in body.splitlines() if line.strip() and not line.startswith("=")]
        try:
            out += base64.b64decode("".join(lines), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError("its armor is not valid base64") from None
    return out


def packets(data: bytes) -> Iterator[Tuple[int, bytes]]:
    """(tag, body) of each packet, old and new headers alike."""
    i = 0
    while i < len(data):
        first = data[i]
        if not first & 0x80:
            raise KeyFileError(f"byte {i} does not start a packet")
        if first & 0x40:  # new format
            tag, i = first & 0x3F, i + 1
            if i >= len(data):
                raise KeyFileError("a packet header is cut short")
            o1 = data[i]
            if o1 < 192:
                length, i = o1, i + 1
            elif o1 < 224:
                if i + 1 >= len(data):
                    raise KeyFileError("a packet header is cut short")
                length, i = ((o1 - 192) << 8) + data[i + 1] + 192, i + 2
            elif o1 == 255:
                length, i = int.from_bytes(data[i + 1:i + 5], "big"), i + 5
            else:
                raise KeyFileError("a packet with partial lengths (not used in key files)")
        else:
            tag, kind, i = (first >> 2) & 0x0F, first & 0x03, i + 1
            if kind == 3:
                length = len(data) - i
            else:
                size = (1, 2, 4)[kind]
                length, i = int.from_bytes(data[i:i + size], "big"), i + size
        if i + length > len(data):
            raise KeyFileError("a packet is cut short")
        yield tag, data[i:i + length]
        i += length


def fingerprint(body: bytes) -> str:
    """The fingerprint of a version 4 public-key packet's body: SHA-1 over 0x99, its two-octet length, itself."""
    version = body[0] if body else 0
    if version != 4:
        raise KeyFileError(f"a version {version} key (gpufab reads version 4 keys, what apt repositories sign with)")
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def primary_fingerprints(data: bytes) -> List[str]:
    """The fingerprint of each primary key in a key file (armored or binary), in file order."""
    found = [fingerprint(body) for tag, body in packets(dearmor(data)) if tag == PUBLIC_KEY]
    if not found:
        raise KeyFileError("no public key in it")
    return found
