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
