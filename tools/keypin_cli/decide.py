"""The decision a device makes for a presented chain, and the OkHttp-style failure report."""
from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from .der import DerError, cert_spki
from .material import name_text
from .pins import pin_of_spki

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
            pin = "(malformed certificate: %s)" % e
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
    scope = chain[:1] if pinset.get("policy", "leaf") == "leaf" else chain
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


def failure_report(chain: list[ChainEntry], host: str, set_name: str, pinset: dict) -> str:
    lines = ["Certificate pinning failure!", "  Peer certificate chain:"]
    for e in chain:
        lines.append("    depth %d: %s %s" % (e.depth, e.pin, e.subject))
    lines.append("  Pinned certificates for %s (set %s):" % (host, set_name))
    lines.append("    active: %s" % pinset["active"])
    for i, p in enumerate(pinset["backups"], 1):
        lines.append("    backup %d: %s" % (i, p))
    for p in pinset["retired"]:
        lines.append("    retired: %s" % p)
    return "\n".join(lines)
