# SPKI pins of X.509 certificates.
# pin_of/spki_sha256/spki_range use the native module keypin_spki when it loads for this
# architecture, else the pure-Python reference (keypin.spkiref: same grammar, same error
# codes as firmware/spki/spki_core.c). IMPL says which.
from micropython import const

from keypin import CertError
from keypin.pins import format_pin

ERR_EMPTY = const(-1)
ERR_TRUNC = const(-2)
ERR_TAG = const(-3)
ERR_INDEF = const(-4)
ERR_LENLEN = const(-5)
ERR_NONMIN = const(-6)
ERR_TRAILING = const(-7)
_MSG = ("", "empty input", "truncated or overlong element", "unexpected tag",
        "indefinite length", "length field over 4 bytes", "non-minimal length", "trailing bytes")


def python_find(der):
    from keypin.spkiref import python_find as f
    return f(der)


def python_sha256(der):
    from keypin.spkiref import python_sha256 as f
    return f(der)


def python_pin_of(der):
    return format_pin(_check(python_sha256(der)))


def _check(r):
    if isinstance(r, int):
        raise CertError("malformed certificate: %s (%d)" % (_MSG[-r], r))
    return r


try:
    import keypin_spki as _n

    IMPL = "native"
    sha256_into = _n.sha256_into
    _sha = _n.sha256
    _fnd = _n.find
except ImportError:
    from keypin.spkiref import python_find as _fnd
    from keypin.spkiref import python_sha256 as _sha

    IMPL = "python"

    def sha256_into(der, out):
        r = _sha(der)
        if isinstance(r, int):
            return r
        out[:32] = r
        return 0


def spki_sha256(der):
    return _check(_sha(der))


def spki_range(der):
    return _check(_fnd(der))


def pin_of(der):
    return format_pin(_check(_sha(der)))


def error_text(code):
    return _MSG[-code] if -8 < code < 0 else "error %d" % code
