"""Certificate vectors made at test time with `cryptography`.

write_vectors(dir) writes <name>.der for every vector, index.txt ("name pin" lines, pins
computed by cryptography), and malformed.bin: records of (u8 kind, u16 label length,
label, u32 length, data) for the malformed table. kind 1 = must be rejected, 0 = the two
implementations must only agree.
"""
import base64
import datetime
import hashlib
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def spki_pin(public_key):
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256/" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def name(cn, extra=0):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    for i in range(extra):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {i} " + "x" * 60))
    return x509.Name(attrs)


def make_key(kind):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    if kind.startswith("ec"):
        return ec.generate_private_key({"ec256": ec.SECP256R1(), "ec384": ec.SECP384R1(),
                                        "ec521": ec.SECP521R1()}[kind])
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(kind)


def make_cert(subject_key, subject, issuer_key=None, issuer=None, *, ca=False, hosts=(), version=3,
              days=3650, serial=None):
    issuer_key = issuer_key or subject_key
    issuer = issuer or subject
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(subject_key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1))
         .not_valid_after(NOW + datetime.timedelta(days=days)))
    if version == 3:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        if hosts:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(h) for h in hosts]), critical=False)
    algo = None if isinstance(issuer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) \
        else hashes.SHA256()
    cert = b.sign(issuer_key, algo)
    if version == 1:
        # cryptography only builds v3; rebuild a v1 TBS (no [0] version, no extensions) and
        # re-sign it so the certificate is valid DER X.509 v1.
        cert = _v1_from(cert, issuer_key)
    return cert


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag, body):
    return bytes([tag]) + _der_len(len(body)) + body


def _children(der):
    # top-level TLVs inside a constructed element's value
    out, p = [], 0
    while p < len(der):
        start = p
        p += 1
        ln = der[p]
        p += 1
        if ln & 0x80:
            k = ln & 0x7F
            ln = int.from_bytes(der[p:p + k], "big")
            p += k
        p += ln
        out.append(der[start:p])
    return out


def _value(tlv):
    ln = tlv[1]
    if ln & 0x80:
        return tlv[2 + (ln & 0x7F):]
    return tlv[2:]


def _v1_from(cert, key):
    tbs = _children(_value(cert.tbs_certificate_bytes))
    assert tbs[0][0] == 0xA0
    tbs_v1 = _tlv(0x30, b"".join(t for t in tbs[1:] if t[0] != 0xA3))
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding
        sig = key.sign(tbs_v1, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(tbs_v1, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(tbs_v1)
    sigalg = _children(_value(cert.public_bytes(serialization.Encoding.DER)))[1]
    der = _tlv(0x30, tbs_v1 + sigalg + _tlv(0x03, b"\x00" + sig))
    return x509.load_der_x509_certificate(der)


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def make_vectors():
    """-> list of (name, der_bytes, pin)."""
    out = []
    for kind in ("rsa2048", "rsa3072", "rsa4096", "ec256", "ec384", "ec521", "ed25519", "ed448"):
        k = make_key(kind)
        c = make_cert(k, name(f"{kind}.example.test"), hosts=[f"{kind}.example.test"])
        out.append((f"leaf_{kind}", der(c), spki_pin(k.public_key())))
    k = make_key("ec256")
    out.append(("v1_no_extensions", der(make_cert(k, name("v1.example.test"), version=1)),
                spki_pin(k.public_key())))
    k = make_key("ec256")
    out.append(("long_subject", der(make_cert(k, name("long.example.test", extra=40))),
                spki_pin(k.public_key())))
    rk, ik, lk = make_key("ec384"), make_key("rsa2048"), make_key("ec256")
    root = make_cert(rk, name("Vector Root CA"), ca=True)
    inter = make_cert(ik, name("Vector Intermediate CA"), rk, root.subject, ca=True)
    leaf = make_cert(lk, name("chain.example.test"), ik, inter.subject, hosts=["chain.example.test"])
    for n, c, k in (("chain_root", root, rk), ("chain_intermediate", inter, ik), ("chain_leaf", leaf, lk)):
        out.append((n, der(c), spki_pin(k.public_key())))
    return out


def _length_bytes(d, start=0, end=None, depth=0, path_depth_limit=64):
    """Yield (offset_of_length_byte, depth) for every definite length in a DER tree."""
    end = len(d) if end is None else end
    p = start
    while p < end:
        tag = d[p]
        lp = p + 1
        ln = d[lp]
        if ln & 0x80:
            k = ln & 0x7F
            n = int.from_bytes(d[lp + 1:lp + 1 + k], "big")
            for j in range(k):
                yield lp + 1 + j, depth
            vs = lp + 1 + k
        else:
            n = ln
            yield lp, depth
            vs = lp + 1
        if tag & 0x20 and depth < path_depth_limit:
            yield from _length_bytes(d, vs, vs + n, depth + 1)
        p = vs + n


def malformed(vectors):
    """-> list of (kind, label, data)."""
    rows = [(1, "empty", b""), (1, "not DER text", b"hello, world"),
            (1, "SEQUENCE of INTEGER", _tlv(0x30, _tlv(0x02, b"\x01"))),
            (1, "an SPKI, not a certificate", bytes.fromhex(
                "3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + bytes(64)),
            (1, "indefinite length", b"\x30\x80" + b"\x00" * 10 + b"\x00\x00"),
            (1, "length of 5 bytes", b"\x30\x85\x00\x00\x00\x01\x00\x00"),
            (1, "high-tag-number form", b"\x3f\x01\x00"),
            (1, "length beyond buffer", b"\x30\x84\x7f\xff\xff\xff\x30\x00")]
    by = {n: d for n, d, _ in vectors}
    for vname in ("leaf_ec256", "leaf_rsa2048", "v1_no_extensions"):
        d = by[vname]
        for i in range(len(d)):
            rows.append((1, f"{vname} truncated at {i}", d[:i]))
        rows.append((1, f"{vname} + trailing byte", d + b"\x00"))
        rows.append((1, f"{vname} + trailing garbage", d + b"garbage!"))
        rows.append((1, f"{vname} with indefinite outer length",
                     b"\x30\x80" + _value(d) + b"\x00\x00"))
        for off, depth in _length_bytes(d):
            for delta in (-1, 1):
                v = d[off] + delta
                if 0 <= v <= 255:
                    m = bytearray(d)
                    m[off] = v
                    # depth 0/1 lengths (certificate, tbs, signature fields) must be rejected;
                    # deeper ones need only agree (we don't parse inside extensions).
                    rows.append((1 if depth <= 1 else 0, f"{vname} length@{off} {delta:+d}", bytes(m)))
    return rows


def write_vectors(dirpath):
    vecs = make_vectors()
    lines = []
    for n, d, p in vecs:
        (dirpath / f"{n}.der").write_bytes(d)
        lines.append(f"{n} {p}")
    (dirpath / "index.txt").write_text("\n".join(lines) + "\n")
    with open(dirpath / "malformed.bin", "wb") as f:
        for kind, label, data in malformed(vecs):
            lb = label.encode()
            f.write(struct.pack(">BH", kind, len(lb)) + lb + struct.pack(">I", len(data)) + data)
    return vecs
