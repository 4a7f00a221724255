# The pure-Python reference for keypin.spki: the same strict DER grammar and the same
# error codes as firmware/spki/spki_core.c, and the codes' texts. Loaded only when no native
# module is there, on an error (error_text), or for comparisons (tests, the differential fuzz),
# so devices with a native module never hold it.
import hashlib

from micropython import const

ERR_EMPTY = const(-1)
ERR_TRUNC = const(-2)
ERR_TAG = const(-3)
ERR_INDEF = const(-4)
ERR_LENLEN = const(-5)
ERR_NONMIN = const(-6)
ERR_TRAILING = const(-7)
_MSG = ("", "empty input", "truncated or overlong element", "unexpected tag",
        "indefinite length", "length field over 4 bytes", "non-minimal length", "trailing bytes")


def error_text(code):
    return _MSG[-code] if -8 < code < 0 else "error %d" % code


class _Bad(Exception):
    pass


def _tlv(b, pos, end, want):
    # -> (value_start, value_end); raises _Bad(code)
    if pos >= end:
        raise _Bad(ERR_TRUNC)
    tag = b[pos]
    pos += 1
    if (tag & 0x1F) == 0x1F or (want >= 0 and tag != want):
        raise _Bad(ERR_TAG)
    if pos >= end:
        raise _Bad(ERR_TRUNC)
    ln = b[pos]
    pos += 1
    if ln < 0x80:
        n = ln
    elif ln == 0x80:
        raise _Bad(ERR_INDEF)
    else:
        k = ln & 0x7F
        if k > 4:
            raise _Bad(ERR_LENLEN)
        if k > end - pos:
            raise _Bad(ERR_TRUNC)
        if b[pos] == 0:
            raise _Bad(ERR_NONMIN)
        n = 0
        while k:
            n = (n << 8) | b[pos]
            pos += 1
            k -= 1
        if n < 0x80:
            raise _Bad(ERR_NONMIN)
    if n > end - pos:
        raise _Bad(ERR_TRUNC)
    return pos, pos + n


def _find(b):
    # -> (start, end) of the SPKI element, or a negative error code
    n = len(b)
    if n == 0:
        return ERR_EMPTY
    try:
        cs, ce = _tlv(b, 0, n, 0x30)
        if ce != n:
            return ERR_TRAILING
        ts, te = _tlv(b, cs, ce, 0x30)
        p = ts
        if p < te and b[p] == 0xA0:
            p = _tlv(b, p, te, 0xA0)[1]
        p = _tlv(b, p, te, 0x02)[1]  # serialNumber
        for _ in range(4):  # signature, issuer, validity, subject
            p = _tlv(b, p, te, 0x30)[1]
        start = p
        ks, ke = _tlv(b, p, te, 0x30)  # subjectPublicKeyInfo
        v = _tlv(b, ks, ke, 0x30)[1]
        if _tlv(b, v, ke, 0x03)[1] != ke:
            return ERR_TRAILING
        p = ke
        while p < te:
            p = _tlv(b, p, te, -1)[1]
        p = _tlv(b, te, ce, 0x30)[1]
        if _tlv(b, p, ce, 0x03)[1] != ce:
            return ERR_TRAILING
        return start, ke
    except _Bad as e:
        return e.args[0]


def python_find(der):
    return _find(memoryview(der))


def python_sha256(der):
    r = _find(memoryview(der))
    if isinstance(r, int):
        return r
    return hashlib.sha256(memoryview(der)[r[0]:r[1]]).digest()


def sha256_into(der, out):
    # the python path of keypin.spki.sha256_into (this one allocates: the digest)
    r = python_sha256(der)
    if isinstance(r, int):
        return r
    out[:32] = r
    return 0


def python_pin_of(der):
    from keypin import CertError
    from keypin.pins import format_pin
    r = python_sha256(der)
    if isinstance(r, int):
        raise CertError("malformed certificate: %s (%d)" % (error_text(r), r))
    return format_pin(r)
