"""A narrow DER reader: the raw SubjectPublicKeyInfo span of a certificate or a CSR.

The pin of a certificate is the SHA-256 of the SPKI bytes exactly as they appear in the
certificate (what the device hashes), not of a re-encoding of the parsed key.
"""
from __future__ import annotations


class DerError(ValueError):
    pass


def _tlv(b: bytes, pos: int, end: int, want: int | None) -> tuple[int, int, int]:
    """-> (tag, value_start, value_end) of the element at ``pos``; bounded by ``end``."""
    if pos >= end:
        raise DerError("truncated")
    tag = b[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tag")
    if want is not None and tag != want:
        raise DerError(f"unexpected tag 0x{tag:02x} (want 0x{want:02x})")
    if pos >= end:
        raise DerError("truncated")
    ln = b[pos]
    pos += 1
    if ln == 0x80:
        raise DerError("indefinite length")
    if ln > 0x80:
        k = ln & 0x7F
        if k > 4 or k > end - pos:
            raise DerError("bad length")
        if b[pos] == 0:
            raise DerError("non-minimal length")
        n = int.from_bytes(b[pos:pos + k], "big")
        pos += k
        if n < 0x80:
            raise DerError("non-minimal length")
        ln = n
    if ln > end - pos:
        raise DerError("truncated element")
    return tag, pos, pos + ln


def cert_spki(der: bytes) -> bytes:
    """Raw SPKI element (tag and length included) of an X.509 certificate."""
    _, cs, ce = _tlv(der, 0, len(der), 0x30)
    if ce != len(der):
        raise DerError("trailing bytes")
    _, ts, te = _tlv(der, cs, ce, 0x30)  # tbsCertificate
    p = ts
    if p < te and der[p] == 0xA0:  # [0] version
        p = _tlv(der, p, te, 0xA0)[2]
    p = _tlv(der, p, te, 0x02)[2]  # serialNumber
    for _ in range(4):  # signature, issuer, validity, subject
        p = _tlv(der, p, te, 0x30)[2]
    _, _ks, ke = _tlv(der, p, te, 0x30)
    return der[p:ke]


def csr_spki(der: bytes) -> bytes:
    """Raw SPKI element of a PKCS#10 certification request."""
    _, cs, ce = _tlv(der, 0, len(der), 0x30)
    if ce != len(der):
        raise DerError("trailing bytes")
    _, ts, te = _tlv(der, cs, ce, 0x30)  # certificationRequestInfo
    p = _tlv(der, ts, te, 0x02)[2]  # version
    p = _tlv(der, p, te, 0x30)[2]  # subject
    _, _ks, ke = _tlv(der, p, te, 0x30)
    return der[p:ke]
