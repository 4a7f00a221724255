"""Keys, certificates and pin documents for tests (cryptography)."""
import datetime
import hashlib
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers.vectors import make_cert, name, spki_pin


def key_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def cert_pem(c):
    return c.public_bytes(serialization.Encoding.PEM)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


class CA:
    """A root + intermediate CA that signs leaves for given keys."""

    def __init__(self, label="Test"):
        self.root_key = new_key()
        self.root = make_cert(self.root_key, name(f"{label} Root CA"), ca=True)
        self.int_key = new_key()
        self.inter = make_cert(self.int_key, name(f"{label} Intermediate CA"), self.root_key,
                               self.root.subject, ca=True)

    def leaf(self, key, host):
        return make_cert(key, name(host), self.int_key, self.inter.subject, hosts=[host], days=90)

    def write_chain(self, d, stem, key, host):
        """Write stem.crt (leaf + intermediate) and stem.key; return (crt, key) paths."""
        leaf = self.leaf(key, host)
        crt, kp = d / f"{stem}.crt", d / f"{stem}.key"
        crt.write_bytes(cert_pem(leaf) + cert_pem(self.inter))
        kp.write_bytes(key_pem(key))
        return crt, kp

    def root_pem(self):
        return cert_pem(self.root)


def pin(k):
    return spki_pin(k.public_key())


def pin_document(sets, seq=1, version=0, signer=None):
    doc = {"format": "keypin-pins/1", "seq": seq, "version": version, "signer": signer, "sets": sets}
    line = json.dumps(doc).encode()
    return line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"


def pin_document2(sets, seq=1, version=0, signer=None, fleet=None, retired=()):
    """A keypin-pins/2 document (docs/pin-document.md): sets with active lists and backup groups."""
    doc = {"format": "keypin-pins/2", "seq": seq, "version": version, "signer": signer, "fleet": fleet,
           "retired": list(retired), "sets": sets}
    line = json.dumps(doc).encode()
    return line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"


def read_document(path):
    with open(path, "rb") as f:
        data = f.read()
    line, tail = data.split(b"\n", 1)
    assert tail == b"sha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"
    return json.loads(line)


__all__ = ["CA", "cert_pem", "datetime", "key_pem", "new_key", "pin", "pin_document", "pin_document2",
           "read_document",
           "x509"]
