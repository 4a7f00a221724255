# SPKI pins of X.509 certificates.
# pin_of/spki_sha256/spki_range use the fastest implementation that loads here, all with the
# same grammar and error codes (firmware/spki/spki_core.c):
#   "native" keypin_spki, the C module (built with a C toolchain for the arch: x64 here),
#   "viper"  keypin_spkiv, viper machine code from mpy-cross (xtensawin, rv32imc, x64),
#   "python" keypin.spkiref, the pure-Python reference (any port, also bytecode-only ones).
# IMPL says which. sha256_into(der, out32) is the verify-callback path (allocation-free in the
# native and viper modules).
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
except (ImportError, ValueError):  # ValueError: a .mpy built for another arch or ABI
    try:
        import keypin_spkiv as _n  # type: ignore[no-redef]  # SyntaxError: no native emitter

        IMPL = "viper"
    except (ImportError, ValueError, SyntaxError):
        _n = None  # type: ignore[assignment]
if _n is not None:
    sha256_into = _n.sha256_into
    _sha = _n.sha256
    _fnd = _n.find
else:
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
