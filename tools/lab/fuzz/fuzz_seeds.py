"""Seed corpus of real certificates for the SPKI parser fuzzers (host side, CPython).

Usage: fuzz_seeds.py OUTDIR
Writes DER files: RSA-2048, EC P-256/P-384, Ed25519 keys as root, intermediate and leaf
certificates, X.509 v1 certificates (no [0] version, no extensions), long subjects and
many extensions (multi-byte lengths). Byte-for-byte deterministic: keys are derived from
fixed seeds (RSA primes from a seeded PRNG), ECDSA signs deterministically (RFC 6979),
serials, dates and names are fixed. Library use: `make_certs()` -> [(name, der), ...].
"""
import datetime
import hashlib
import os
import random
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2035, 1, 1, tzinfo=datetime.timezone.utc)
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def _probable_prime(n):
    if n % 2 == 0:
        return False
    for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _rsa_key(seed, bits=2048):
    rnd = random.Random(seed)
    e = 65537
    while True:
        primes = []
        while len(primes) < 2:
            c = rnd.getrandbits(bits // 2) | (3 << (bits // 2 - 2)) | 1
            if _probable_prime(c) and (c - 1) % e and c not in primes:
                primes.append(c)
        p, q = primes
        if (p * q).bit_length() == bits:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    pub = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), pub).private_key()


def _key(kind, label):
    seed = hashlib.sha256((f"keypin-fuzz-seed/{kind}/{label}").encode()).digest()
    if kind == "rsa2048":
        return _rsa_key(seed)
    if kind == "p256":
        return ec.derive_private_key(int.from_bytes(seed, "big") % (2**255), ec.SECP256R1())
    if kind == "p384":
        return ec.derive_private_key(int.from_bytes(seed, "big"), ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def _hash_for(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(cn, long=False):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if long:
        attrs = [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keypin fuzz " + "o" * 60),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 64),
        ] + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit-{i:02d}-" + "x" * 50)
             for i in range(6)] + attrs
    return x509.Name(attrs)


def _cert(subject, issuer, pub, signer, serial, *, ca, version=x509.Version.v3, sans=(), pathlen=None):
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer).public_key(pub)
         .serial_number(serial).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER))
    if version == x509.Version.v3:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]),
                                critical=False)
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        cert = b.sign(signer, hashes.SHA256(), ecdsa_deterministic=True)
    else:
        cert = b.sign(signer, _hash_for(signer))
    der = cert.public_bytes(DER)
    if version == x509.Version.v1:
        der = _to_v1(der, signer)
    return der


def _tlv(tag, body):
    n = len(body)
    if n < 0x80:
        hdr = bytes([n])
    else:
        nb = n.to_bytes((n.bit_length() + 7) // 8, "big")
        hdr = bytes([0x80 | len(nb)]) + nb
    return bytes([tag]) + hdr + body


def _children(b):
    # -> list of raw child TLVs of a DER value (definite lengths only)
    out, p = [], 0
    while p < len(b):
        ln = b[p + 1]
        h = 2
        if ln & 0x80:
            k = ln & 0x7F
            ln = int.from_bytes(b[p + 2:p + 2 + k], "big")
            h += k
        out.append(b[p:p + h + ln])
        p += h + ln
    return out


def _value(tlv):
    ln = tlv[1]
    return tlv[2 + (ln & 0x7F):] if ln & 0x80 else tlv[2:]


def _to_v1(der, signer):
    # cryptography only builds v3: drop [0] version and extensions, re-sign the TBS.
    tbs, alg, _sig = _children(_value(der))
    kids = [c for c in _children(_value(tbs)) if c[0] not in (0xA0, 0xA3)]
    tbs = _tlv(0x30, b"".join(kids))
    if isinstance(signer, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding
        sig = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(signer, ec.EllipticCurvePrivateKey):
        sig = signer.sign(tbs, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    else:
        sig = signer.sign(tbs)
    return _tlv(0x30, tbs + alg + _tlv(0x03, b"\x00" + sig))


def make_certs():
    kinds = ("rsa2048", "p256", "p384", "ed25519")
    keys = {k: _key(k, "root") for k in kinds}
    out = []
    serial = 0x1000
    for kname in kinds:
        # chain: root (self-signed) -> intermediate -> leaf, all of the same key type
        root_key, inter_key, leaf_key = keys[kname], _key(kname, "inter"), _key(kname, "leaf")
        root_name = _name("keypin fuzz root " + kname)
        inter_name = _name("keypin fuzz intermediate " + kname)
        chain = (
            ("root", root_name, root_name, root_key, root_key, {"ca": True}),
            ("inter", inter_name, root_name, inter_key, root_key, {"ca": True, "pathlen": 0}),
            ("leaf", _name("device.example.test"), inter_name, leaf_key, inter_key,
             {"ca": False, "sans": ("device.example.test", "mqtt.example.test")}),
            ("v1", _name("v1 " + kname), root_name, leaf_key, root_key,
             {"ca": False, "version": x509.Version.v1}),
            ("longsubj", _name("long " + kname, long=True), _name("issuer " + kname, long=True),
             leaf_key, root_key, {"ca": False, "sans": tuple(f"h{i:03d}.example.test" for i in range(40))}),
        )
        for role, subject, issuer, key, signer, kw in chain:
            serial += 1
            out.append((f"{role}-{kname}", _cert(subject, issuer, key.public_key(), signer, serial, **kw)))
    # a big serial number (20 bytes) and a mixed chain (EC leaf signed by RSA)
    rk, ek = keys["rsa2048"], keys["p256"]
    out.append(("mixed-ec-by-rsa", _cert(_name("mixed"), _name("keypin fuzz root rsa2048"),
                                         ek.public_key(), rk, (1 << 159) - 12345, ca=False)))
    return out


def main(argv):
    if len(argv) != 2:
        print("usage: fuzz_seeds.py OUTDIR", file=sys.stderr)
        return 2
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    certs = make_certs()
    for name, der in certs:
        x509.load_der_x509_certificate(der)  # every seed is a valid certificate
        with open(os.path.join(outdir, name + ".der"), "wb") as f:
            f.write(der)
    print(f"fuzz_seeds: {len(certs)} certificates in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
