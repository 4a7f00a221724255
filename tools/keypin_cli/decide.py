"""The decision a device makes for a presented chain, and the OkHttp-style failure report."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .der import DerError, cert_spki
from .material import name_text
from .pins import pin_of_spki
from .tlsprobe import certificate_message_bytes

ACTIVE, BACKUP, RETIRED, UNKNOWN = "active", "backup", "retired", "unknown"


@dataclass
class ChainEntry:
    depth: int
    pin: str
    subject: str


def describe_chain(certs: list[bytes]) -> list[ChainEntry]:
    out = []
    for depth, der in enumerate(certs):
        try:
            pin = pin_of_spki(cert_spki(der))
        except DerError as e:
            pin = f"(malformed certificate: {e})"
        try:
            subject = name_text(x509.load_der_x509_certificate(der).subject)
        except ValueError:
            subject = "(unparsable certificate)"
        out.append(ChainEntry(depth, pin, subject))
    return out


@dataclass
class Decision:
    outcome: str  # ACTIVE, BACKUP, RETIRED, UNKNOWN
    backup_index: int = 0  # 1-based, for BACKUP
    pin: str = ""
    depth: int = 0


def decide(chain: list[ChainEntry], pinset: dict) -> Decision:
    """policy leaf: the depth-0 key decides. policy any: any presented certificate's key;
    a retired key anywhere in scope fails, then the active pin, then the first matching backup."""
    scope = chain[:1] if pinset["policy"] == "leaf" else chain
    for e in scope:
        if e.pin in pinset["retired"]:
            return Decision(RETIRED, pin=e.pin, depth=e.depth)
    for e in scope:
        if e.pin == pinset["active"]:
            return Decision(ACTIVE, pin=e.pin, depth=e.depth)
    best = None
    for e in scope:
        if e.pin in pinset["backups"]:
            k = pinset["backups"].index(e.pin) + 1
            if best is None or k < best.backup_index:
                best = Decision(BACKUP, backup_index=k, pin=e.pin, depth=e.depth)
    return best or Decision(UNKNOWN)


WHY = {UNKNOWN: "unknown key", RETIRED: "retired key"}


def failure_report(chain: list[ChainEntry], host: str, port: int, set_name: str, pinset: dict,
                   outcome: str = UNKNOWN) -> str:
    """Same shape as the device library's PinMismatch text (keypin.tls.mismatch)."""
    lines = [f"Certificate pinning failure! ({WHY.get(outcome, outcome)})",
             f"  Peer certificate chain for {host}:{port}:"]
    for e in chain:
        lines.append(f"    depth {e.depth}: {e.pin} {e.subject}")
    lines.append(f"  Pinned certificates for {host} (set {set_name}, policy {pinset['policy']}):")
    lines.append("    active: " + pinset["active"])
    for i, p in enumerate(pinset["backups"], 1):
        lines.append(f"    backup {i}: {p}")
    for p in pinset["retired"]:
        lines.append("    retired: " + p)
    return "\n".join(lines)


def _key_text(cert: x509.Certificate) -> str:
    k = cert.public_key()
    if isinstance(k, ec.EllipticCurvePublicKey):
        return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(k.curve.name, k.curve.name)
    if isinstance(k, rsa.RSAPublicKey):
        return f"RSA-{k.key_size}"
    return type(k).__name__.replace("PublicKey", "").lstrip("_")


def chain_links(certs: list[bytes]) -> list[str]:
    """The child -> parent links inside the presented chain, each named by the parent's key
    ("P-384", "RSA-4096"): the signatures mbedTLS checks while it builds the chain, also in
    pin-only (CERT_OPTIONAL) mode. A certificate whose issuer is not the next one ends the walk."""
    try:
        parsed = [x509.load_der_x509_certificate(c) for c in certs]
    except ValueError:
        return []
    out = []
    for child, parent in pairwise(parsed):
        if child.issuer != parent.subject:
            break
        out.append(_key_text(parent))
    return out


@dataclass
class Listener:
    lean: bool  # the leaf alone
    certificates: int
    message_bytes: int  # TLS 1.2 Certificate message
    links: list[str]

    def text(self, policy: str = "leaf") -> str:
        size = f"{self.message_bytes:,}-byte Certificate message"
        if self.lean:
            return (f"listener: leaf only (a lean device listener): 1 certificate, {size}; devices verify "
                    "no chain signatures")
        line = f"listener: full chain: {self.certificates} certificates, {size}"
        if self.links:
            kinds = ", ".join(f"{self.links.count(k)} {k}" for k in sorted(set(self.links)))
            line += f"; a device's mbedTLS checks {len(self.links)} link signatures ({kinds}) at every handshake"
        if policy == "leaf":
            line += "; devices pin the leaf key only: give them a lean listener (the leaf alone, docs/operations.md)"
        return line


def listener(certs: list[bytes]) -> Listener:
    return Listener(len(certs) == 1, len(certs), certificate_message_bytes(certs), chain_links(certs))
