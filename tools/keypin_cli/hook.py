"""certbot --deploy-hook logic: allow a renewed certificate only if it kept a pinned key."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from .errors import CommandError

LINEAGE_ENV = "RENEWED_LINEAGE"


def lineage_cert(cert_arg: str | None, env: dict | None = None) -> Path:
    """--cert FILE, else $RENEWED_LINEAGE/cert.pem (or fullchain.pem, whose first block is the leaf)."""
    if cert_arg:
        return Path(cert_arg)
    env = os.environ if env is None else env
    lineage = env.get(LINEAGE_ENV)
    if not lineage:
        raise CommandError(f"{LINEAGE_ENV} is not set: run me as certbot --deploy-hook, or give --cert FILE")
    for name in ("cert.pem", "fullchain.pem"):
        p = Path(lineage) / name
        if p.is_file():
            return p
    raise CommandError(f"no cert.pem or fullchain.pem in {LINEAGE_ENV}={lineage}")


def cert_names(cert: x509.Certificate) -> list[str]:
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names += [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names


def covers(name: str, host: str) -> bool:
    """Does certificate name ``name`` (possibly ``*.example.com``) cover ``host``?"""
    if name == host:
        return True
    if name.startswith("*."):
        suffix = name[1:]
        return host.endswith(suffix) and "." not in host[: -len(suffix)] and len(host) > len(suffix)
    return False


def sets_for_names(doc: dict, names: list[str]) -> list[tuple[str, dict]]:
    return [(sn, s) for sn, s in doc["sets"].items() if any(covers(n, h) for n in names for h in s["hosts"])]


@dataclass
class Verdict:
    ok: bool
    lines: list[str]


def judge(pin: str, sets: list[tuple[str, dict]]) -> Verdict:
    ok, lines = True, []
    for name, s in sets:
        if pin == s["active"]:
            lines.append(f"set {name}: the certificate keeps the active key {pin}")
        elif pin in s["backups"]:
            k = s["backups"].index(pin) + 1
            lines.append(f"set {name}: the certificate uses backup {k} {pin}: devices will move to it and "
                         "retire the old active key")
        elif pin in s["retired"]:
            ok = False
            lines.append(f"set {name}: the certificate's key {pin} is RETIRED: devices will refuse it")
        else:
            ok = False
            backups = ", ".join(s["backups"]) or "none"
            lines.append(f"set {name}: the certificate's key {pin} is not pinned (active {s['active']}, "
                         f"backups: {backups})")
    return Verdict(ok, lines)


_PEM_END = b"-----END CERTIFICATE-----"


def leaf_pem(fullchain: bytes, where: str) -> bytes:
    """The first certificate of a fullchain PEM, verbatim: what a lean device listener serves."""
    start = fullchain.find(b"-----BEGIN CERTIFICATE-----")
    end = fullchain.find(_PEM_END, start)
    if start < 0 or end < 0:
        raise CommandError(f"--install: {where} holds no PEM certificate")
    block = fullchain[start:end + len(_PEM_END)] + b"\n"
    try:
        x509.load_pem_x509_certificate(block)
    except ValueError as e:
        raise CommandError(f"--install: the first certificate of {where} does not parse: {e}") from None
    return block


def install(cert_path: Path, dest: str) -> list[str]:
    """Copy fullchain.pem and privkey.pem next to cert_path into dest, and write leaf.pem (the
    first certificate of fullchain.pem alone, for a lean device listener), each by temp file + rename."""
    src = Path(cert_path).parent
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for name, mode in (("fullchain.pem", 0o644), ("privkey.pem", 0o600)):
        f = src / name
        if not f.is_file():
            raise CommandError(f"--install: {f} not found (certbot writes it beside cert.pem)")
        files.append((name, f.read_bytes(), mode))
    files.insert(1, ("leaf.pem", leaf_pem(files[0][1], str(src / "fullchain.pem")), 0o644))
    out = []
    for name, data, mode in files:
        tmp = d / (name + ".keypin-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as w:
            w.write(data)
            w.flush()
            os.fsync(w.fileno())
        os.replace(tmp, d / name)
        out.append(f"installed {d / name}")
    return out
