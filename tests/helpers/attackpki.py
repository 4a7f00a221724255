"""Certificates for the attack matrix (cryptography): chains of any depth, self-signed
look-alikes, rogue leaves under a replayed intermediate, oversized chains, and DER that a
lenient parser (mbedTLS) accepts but keypin's strict one must refuse."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ObjectIdentifier

from helpers.vectors import _children, _tlv, _value, name

NOW = datetime.datetime.now(datetime.timezone.utc)
_PAD_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")  # private arc: an unrecognised extension


def cert(subject_key, subject, issuer_key, issuer, *, ca=False, hosts=(), pad=0, pathlen=None):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1))
         .not_valid_after(NOW + datetime.timedelta(days=90))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen if ca else None), critical=True))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
    if pad:
        b = b.add_extension(x509.UnrecognizedExtension(_PAD_OID, b"\x04" + _len(pad) + b"\xa5" * pad),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def chain(keys, host, label="Deep", pad=0):
    """A correctly signed chain for keys = [leaf_key, ca_1, ..., ca_top] (ca_top self-signed).
    Returns the certificates leaf first. pad: bytes of padding extension in every certificate."""
    n = len(keys)
    subjects = [name(host)] + [name(f"{label} CA {i}") for i in range(1, n)]
    certs = [None] * n
    for i in range(n - 1, -1, -1):
        issuer = min(i + 1, n - 1)
        certs[i] = cert(keys[i], subjects[i], keys[issuer], subjects[issuer], ca=i > 0,
                        hosts=[host] if i == 0 else (), pad=pad)
    return certs


def self_signed(key, host):
    return cert(key, name(host), key, name(host), hosts=[host])


def rogue_under(issuer_cert, attacker_key, host):
    """A leaf that names issuer_cert's subject as its issuer but is signed by attacker_key:
    what an attacker who only has the (public) intermediate certificate can make."""
    return cert(attacker_key, name(host), attacker_key, issuer_cert.subject, hosts=[host])


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


def pem(certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def write_pair(d, stem, certs, key):
    crt, kp = d / f"{stem}.crt", d / f"{stem}.key"
    crt.write_bytes(pem(certs))
    kp.write_bytes(key_pem(key))
    return crt, kp


def nonminimal_serial(cert_der):
    """The same certificate with its serialNumber length written in long form (0x81 n):
    BER, not DER. mbedTLS parses it; keypin's strict DER grammar must refuse it."""
    tbs_tlv, alg, sig = _children(_value(cert_der))
    parts = _children(_value(tbs_tlv))
    i = 1 if parts[0][0] == 0xA0 else 0
    serial = parts[i]
    assert serial[0] == 0x02 and serial[1] < 0x80
    parts[i] = b"\x02\x81" + serial[1:]
    return _tlv(0x30, _tlv(0x30, b"".join(parts)) + alg + sig)
