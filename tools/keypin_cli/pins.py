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


_HEX = re.compile(r"[0-9a-fA-F]{64}\Z")
_HPKP = re.compile(r'\s*pin-sha256\s*=\s*"?([A-Za-z0-9+/=]*)"?\s*;?\s*\Z', re.IGNORECASE)


def _hint(text: str) -> str:
    """The right form of a pin written another way (HPKP header, curl, bare base64, hex digest)."""
    m = _HPKP.match(text)
    body = m.group(1) if m else text.removeprefix("sha256//")
    if _B64.match(body):
        what = "an HPKP pin-sha256 value" if m else "curl's sha256// form" if body != text else "a bare base64 digest"
        return f": {what}; keypin writes it {PREFIX}{body}"
    if _HEX.match(text.replace(":", "")):  # also openssl's AB:CD:... fingerprint form
        d = bytes.fromhex(text.replace(":", ""))
        return (f": a hex digest; if it is the SHA-256 of the key's SPKI the pin is {format_pin(d)} (a certificate "
                "fingerprint is not a pin: run keypin pin CERT)")
    return ": must start with sha256/"


def parse_pin(text: object) -> bytes:
    """Strict: ``sha256/`` + 44 base64 characters, decoding to 32 bytes, canonical (zero pad bits)."""
    if not isinstance(text, str):
        raise CommandError(f"bad pin {text!r}: not a string")
    if not text.startswith(PREFIX):
        raise CommandError(f"bad pin {text!r}{_hint(text)}")
    body = text[len(PREFIX):]
    if len(body) != 44 or not _B64.match(body):
        curl = text.startswith("sha256//") and _B64.match(text[len("sha256//"):])
        raise CommandError(f"bad pin {text!r}" + (_hint(text) if curl else
                                                  ": want sha256/ + 44 base64 characters (43 + '=')"))
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
