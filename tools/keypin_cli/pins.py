"""Pin text: ``sha256/`` + base64 of the 32-byte SHA-256 of a DER SubjectPublicKeyInfo."""
from __future__ import annotations

import base64
import binascii
import hashlib
import re

from .errors import CommandError

PREFIX = "sha256/"
_B64 = re.compile(r"[A-Za-z0-9+/]{43}=\Z")


def format_pin(digest: bytes) -> str:
    if len(digest) != 32:
        raise ValueError("a pin digest is 32 bytes")
    return PREFIX + base64.b64encode(digest).decode("ascii")


def pin_of_spki(spki_der: bytes) -> str:
    return format_pin(hashlib.sha256(spki_der).digest())


def parse_pin(text: object) -> bytes:
    """Strict: ``sha256/`` + 44 base64 characters, decoding to 32 bytes, canonical (zero pad bits)."""
    if not isinstance(text, str):
        raise CommandError(f"bad pin {text!r}: not a string")
    if not text.startswith(PREFIX):
        raise CommandError(f"bad pin {text!r}: must start with sha256/")
    body = text[len(PREFIX):]
    if len(body) != 44 or not _B64.match(body):
        raise CommandError(f"bad pin {text!r}: want sha256/ + 44 base64 characters (43 + '=')")
    try:
        d = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError(f"bad pin {text!r}: not base64") from None
    if len(d) != 32 or format_pin(d) != text:
        raise CommandError(f"bad pin {text!r}: not a canonical 32-byte base64 digest")
    return d


def check_pin(text: object) -> str:
    parse_pin(text)
    return text  # type: ignore[return-value]
