# SPKI pins of X.509 certificates.
# pin_of/spki_sha256/spki_range use the fastest implementation that loads here, all with the
# same grammar and error codes (firmware/spki/spki_core.c):
#   "native" keypin_spki, the C module (built with a C toolchain for the arch: x64 here),
#   "viper"  keypin_spkiv, viper machine code from mpy-cross (xtensawin, rv32imc, x64),
#   "python" keypin.spkiref, the pure-Python reference (any port, also bytecode-only ones).
# IMPL says which. sha256_into(der, out32) is the verify-callback path (allocation-free in the
# native and viper modules). The error codes, their texts and the python_* reference functions
# live in keypin.spkiref, loaded only on the python path, on an error, or by tests: a device
# with a native module keeps just this module resident.
from keypin import CertError

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
    from keypin.spkiref import sha256_into  # noqa: F401 (re-exported: the callback path)

    IMPL = "python"


def _check(r):
    if isinstance(r, int):
        raise CertError("malformed certificate: %s (%d)" % (error_text(r), r))
    return r


def spki_sha256(der):
    return _check(_sha(der))


def spki_range(der):
    return _check(_fnd(der))


def pin_of(der):
    from keypin.pins import format_pin
    return format_pin(_check(_sha(der)))


def error_text(code):
    from keypin.spkiref import error_text as t
    return t(code)
