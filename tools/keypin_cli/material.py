"""Reading keys, certificates, chains and CSRs (PEM or DER) and computing their pins."""
from __future__ import annotations

import base64
import binascii
import os
import re
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from .der import DerError, cert_spki, csr_spki
from .errors import CommandError
from .pins import pin_of_spki

PASSPHRASE_ENV = "KEYPIN_PASSPHRASE"

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE"}
_CSR_LABELS = {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}
_PUB_LABELS = {"PUBLIC KEY", "RSA PUBLIC KEY"}
_PRIV_LABELS = {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY",
                "DSA PRIVATE KEY"}
_IGNORED_LABELS = {"EC PARAMETERS", "DH PARAMETERS"}


@dataclass
class Item:
    """One key found in an input: its pin and how to describe it."""

    pin: str
    desc: str  # subject for certificates/CSRs, kind for keys
    kind: str  # "cert", "csr", "public key", "private key"
    cert: x509.Certificate | None = None
    private_key: object = None
    der: bytes = b""


def key_kind(key) -> str:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"RSA-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        names = {"secp256r1": "EC P-256", "secp384r1": "EC P-384", "secp521r1": "EC P-521"}
        return names.get(key.curve.name, "EC " + key.curve.name)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "Ed25519"
    if isinstance(key, (ed448.Ed448PublicKey, ed448.Ed448PrivateKey)):
        return "Ed448"
    if isinstance(key, (dsa.DSAPublicKey, dsa.DSAPrivateKey)):
        return f"DSA-{key.key_size}"
    return type(key).__name__


def spki_of_key(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


UNPARSABLE = "(unparsable subject)"
# what cryptography raises for a certificate it will not load or format (InvalidVersion is no ValueError)
_CERT_ERRORS = (ValueError, UnsupportedAlgorithm, x509.InvalidVersion)


def name_text(name: x509.Name) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Attribute's length must be >= 2 and <= 2" (country)
            s = name.rfc4514_string()
    except ValueError:
        return UNPARSABLE
    return s if s else "(empty subject)"


def subject_of_der(der: bytes) -> str:
    """The subject of a certificate as text, or ``(unparsable subject)``: never raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return name_text(x509.load_der_x509_certificate(der).subject)
    except _CERT_ERRORS:
        return UNPARSABLE


def raw_cert_item(der: bytes) -> Item | None:
    """A certificate cryptography refuses, pinned the way the device does (its DER walk to the SPKI)."""
    try:
        spki = cert_spki(der)
    except DerError:
        return None
    return Item(pin_of_spki(spki), UNPARSABLE, "cert", der=der)


def passphrase_from(arg: str | None) -> bytes | None:
    if arg is not None:
        return arg.encode()
    env = os.environ.get(PASSPHRASE_ENV)
    return env.encode() if env else None


def _encrypted(loader, data: bytes) -> bool:
    """An encrypted private key, whatever a wrong passphrase made of it: a wrong key decrypts to
    garbage whose padding is right about one time in 256, and cryptography then reports a
    malformed key instead of a failed decryption."""
    try:
        loader(data, password=None)
    except TypeError as e:
        return "encrypted" in str(e) and "not encrypted" not in str(e)
    except (ValueError, UnsupportedAlgorithm):
        return False
    return False


def _private(loader, data: bytes, password: bytes | None, where: str):
    try:
        return loader(data, password=password)
    except TypeError as e:
        msg = str(e)
        if "encrypted" in msg and password is None:
            raise CommandError(f"{where}: the private key is encrypted: give --passphrase or set {PASSPHRASE_ENV}") from None
        if "not encrypted" in msg:
            return loader(data, password=None)
        raise CommandError(f"{where}: {msg}") from None
    except ValueError as e:
        if password is not None and _encrypted(loader, data):
            raise CommandError(f"{where}: wrong passphrase for the encrypted private key") from None
        raise CommandError(f"{where}: cannot read the private key: {e}") from None
    except UnsupportedAlgorithm as e:
        raise CommandError(f"{where}: unsupported key: {e}") from None


def _cert_item(cert: x509.Certificate) -> Item:
    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        spki = cert_spki(der)
    except DerError:  # cannot happen for a certificate cryptography parsed; be safe anyway
        spki = spki_of_key(cert.public_key())
    return Item(pin_of_spki(spki), name_text(cert.subject), "cert", cert=cert, der=der)


def _csr_item(csr: x509.CertificateSigningRequest) -> Item:
    der = csr.public_bytes(serialization.Encoding.DER)
    try:
        spki = csr_spki(der)
    except DerError:
        spki = spki_of_key(csr.public_key())
    return Item(pin_of_spki(spki), "CSR " + name_text(csr.subject), "csr", der=der)


def _pub_item(pub) -> Item:
    return Item(pin_of_spki(spki_of_key(pub)), key_kind(pub) + " public key", "public key")


def _priv_item(key) -> Item:
    return Item(pin_of_spki(spki_of_key(key.public_key())), key_kind(key) + " private key",
                "private key", private_key=key)


def _pem_der(block: bytes) -> bytes:
    body = b"".join(line for line in block.splitlines() if line and not line.startswith(b"-----"))
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _pem_block(label: str, block: bytes, password: bytes | None, where: str) -> Item | None:
    try:
        if label in _CERT_LABELS:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return _cert_item(x509.load_pem_x509_certificate(block))
            except _CERT_ERRORS:
                item = raw_cert_item(_pem_der(block))
                if item is None:
                    raise
                return item
        if label in _CSR_LABELS:
            return _csr_item(x509.load_pem_x509_csr(block))
        if label in _PUB_LABELS:
            return _pub_item(serialization.load_pem_public_key(block))
    except _CERT_ERRORS as e:
        raise CommandError(f"{where}: bad {label}: {e}") from None
    if label in _PRIV_LABELS:
        return _priv_item(_private(serialization.load_pem_private_key, block, password, where))
    if label == "OPENSSH PRIVATE KEY":
        return _priv_item(_private(serialization.load_ssh_private_key, block, password, where))
    if label in _IGNORED_LABELS:
        return None
    raise CommandError(f"{where}: unsupported PEM block {label!r}")


def _der(data: bytes, password: bytes | None, where: str) -> Item:
    for fn, make in ((x509.load_der_x509_certificate, _cert_item),
                     (x509.load_der_x509_csr, _csr_item),
                     (serialization.load_der_public_key, _pub_item)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return make(fn(data))
        except _CERT_ERRORS:
            pass
    raw = raw_cert_item(data)  # a certificate only the device's DER walk reads
    if raw is not None:
        return raw
    try:
        key = serialization.load_der_private_key(data, password=password)
    except TypeError as e:
        if "encrypted" in str(e) and password is None:
            raise CommandError(f"{where}: the private key is encrypted: give --passphrase or set {PASSPHRASE_ENV}") from None
        if "not encrypted" in str(e):
            return _priv_item(serialization.load_der_private_key(data, password=None))
        raise CommandError(f"{where}: {e}") from None
    except ValueError:
        if password is not None and _encrypted(serialization.load_der_private_key, data):
            raise CommandError(f"{where}: wrong passphrase for the encrypted private key") from None
        raise CommandError(f"{where}: not a certificate, chain, public key, private key or CSR "
                           "(PEM or DER)") from None
    except UnsupportedAlgorithm as e:
        raise CommandError(f"{where}: unsupported key: {e}") from None
    return _priv_item(key)


def load_items(data: bytes, where: str, password: bytes | None = None) -> list[Item]:
    """Every key in ``data`` (PEM with any number of blocks, or one DER object), in order."""
    if b"-----BEGIN " in data:
        items = []
        for m in _PEM.finditer(data):
            label = m.group(1).decode("ascii")
            item = _pem_block(label, m.group(0), password, where)
            if item is not None:
                items.append(item)
        if not items:
            raise CommandError(f"{where}: no certificate, key or CSR in this PEM file")
        return items
    if not data.strip():
        raise CommandError(f"{where}: empty input")
    return [_der(data, password, where)]


def load_one(data: bytes, where: str, password: bytes | None = None) -> Item:
    """Exactly one key (a chain file is refused: say which certificate you mean)."""
    items = load_items(data, where, password)
    pins = {i.pin for i in items}
    if len(pins) != 1:
        raise CommandError(f"{where} holds {len(pins)} different keys; give a file with exactly one")
    return items[0]


def load_private_key(data: bytes, where: str, password: bytes | None = None):
    for item in load_items(data, where, password):
        if item.private_key is not None:
            return item.private_key
    raise CommandError(f"{where}: no private key in this file")
