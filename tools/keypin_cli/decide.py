"""The decision a device makes for a presented chain, and the OkHttp-style failure report."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .der import DerError, cert_spki
from .material import subject_of_der
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
        subject = subject_of_der(der)
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
        if e.pin in pinset.get("retired", ()):  # device-wide retired (pindoc.view)
            return Decision(RETIRED, pin=e.pin, depth=e.depth)
    for e in scope:
        if e.pin in pinset["active"]:  # any pin in service (pin document v2)
            return Decision(ACTIVE, pin=e.pin, depth=e.depth)
    best = None
    for e in scope:
        for k, group in enumerate(pinset["backups"], 1):  # backup groups, the lowest matching one
            if e.pin in group and (best is None or k < best.backup_index):
                best = Decision(BACKUP, backup_index=k, pin=e.pin, depth=e.depth)
    return best or Decision(UNKNOWN)


WHY = {UNKNOWN: "unknown key", RETIRED: "retired key"}


def chain_lines(chain: list[ChainEntry], indent: str = "", subjects: bool = True) -> list[str]:
    """The one chain format, shared with the device's PinMismatch text: top of the chain first
    (the order the device's verify callback sees), ``depth N: <pin>``, then the subject."""
    return [f"{indent}depth {e.depth}: {e.pin}" + (f" {e.subject}" if subjects else "")
            for e in sorted(chain, key=lambda e: -e.depth)]


def chain_json(chain: list[ChainEntry]) -> list[dict]:
    """--json form of a chain, top first like the text."""
    return [{"depth": e.depth, "pin": e.pin, "subject": e.subject} for e in sorted(chain, key=lambda e: -e.depth)]


def failure_report(chain: list[ChainEntry], host: str, port: int, set_name: str, pinset: dict,
                   outcome: str = UNKNOWN, sni: str | None = None) -> str:
    """Same shape as the device library's PinMismatch text (keypin.tlsx.mismatch); the pinned host is
    the name the set was found by: the SNI name when one was sent."""
    via = f" (SNI {sni})" if sni and sni != host else ""
    lines = [f"Certificate pinning failure! ({WHY.get(outcome, outcome)})",
             f"  Peer certificate chain for {host}:{port}{via}:"]
    lines += chain_lines(chain, "    ")
    lines.append(f"  Pinned keys for {sni or host} (set {set_name!r}, policy {pinset['policy']}):")
    lines += ["    active: " + p for p in pinset["active"]]
    for i, g in enumerate(pinset["backups"], 1):
        lines.append(f"    backup {i}: {', '.join(g)}")
    for p in pinset.get("retired", ()):
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

    def as_json(self) -> dict:
        return {"kind": "leaf-only" if self.lean else "full-chain", "certificates": self.certificates,
                "certificate_message_bytes": self.message_bytes, "link_signatures": self.links}

    def text(self, pinset: dict | None = None) -> str:
        """One line for the operator; pinset: the set the devices use (policy any, or a CA anchor,
        means its devices verify the chain and need the full one)."""
        chained = bool(pinset) and (pinset.get("policy") == "any" or bool(pinset.get("ca")))
        size = f"{self.message_bytes:,}-byte Certificate message"
        if self.lean:
            line = f"listener: leaf only (a lean device listener): 1 certificate, {size}; devices verify no chain signatures"
            if chained:
                line += ("; but this set's devices verify the chain (policy any or a CA anchor): they are refused "
                         "here, serve them the full chain")
            return line
        line = f"listener: full chain: {self.certificates} certificates, {size}"
        if self.links:
            kinds = ", ".join(f"{self.links.count(k)} {k}" for k in sorted(set(self.links)))
            n = len(self.links)
            line += f"; a device's mbedTLS checks {n} link signature{'s' if n > 1 else ''} ({kinds}) at every handshake"
        if not chained:
            line += "; devices pin the leaf key only: give them a lean listener (the leaf alone, docs/operations.md)"
        return line


def listener(certs: list[bytes]) -> Listener:
    return Listener(len(certs) == 1, len(certs), certificate_message_bytes(certs), chain_links(certs))
