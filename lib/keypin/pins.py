# Pin text <-> digest: "sha256/" + base64 of the 32-byte SPKI SHA-256.
from binascii import a2b_base64, b2a_base64

from keypin import PinFormatError

_PREFIX = "sha256/"


def parse_pin(text):
    # strict: "sha256/" + 43 base64 characters + "=" (44 in all), 32 bytes
    if not isinstance(text, str) or len(text) != 51 or not text.startswith(_PREFIX) or text[-1] != "=":
        raise PinFormatError("bad pin %r: want sha256/ + 44 base64 characters" % (text,))
    try:
        d = a2b_base64(text[7:])
    except (ValueError, TypeError):
        d = b""
    # decoding may skip stray characters and the last one carries 2 padding bits: only the
    # exact re-encoding of 32 bytes is a pin
    if len(d) != 32 or format_pin(d) != text:
        raise PinFormatError("bad pin %r: not a canonical 32-byte base64 digest" % (text,))
    return d


def format_pin(digest):
    if len(digest) != 32:
        raise PinFormatError("digest must be 32 bytes, got %d" % len(digest))
    return _PREFIX + b2a_base64(digest)[:-1].decode()
