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
    retired: bool = False  # the key is retired in some set: compromised or withdrawn, never again


def judge(pin: str, sets: list[tuple[str, dict]]) -> Verdict:
    ok, lines, retired = True, [], False
    for name, s in sets:
        groups = [i for i, g in enumerate(s["backups"], 1) if pin in g]
        if pin in s["active"]:
            lines.append(f"set {name}: the certificate keeps the active key {pin}")
        elif groups:
            k = groups[0]
            lines.append(f"set {name}: the certificate uses backup {k} {pin}: devices will move to it and "
                         "retire the old active key")
        elif pin in s.get("retired", ()):
            ok, retired = False, True
            lines.append(f"set {name}: the certificate's key {pin} is RETIRED: devices will refuse it")
        else:
            ok = False
            backups = "; ".join(", ".join(g) for g in s["backups"]) or "none"
            lines.append(f"set {name}: the certificate's key {pin} is not pinned (active {', '.join(s['active'])}, "
                         f"backups: {backups})")
    return Verdict(ok, lines, retired)


def refusal(pin: str, v: Verdict) -> str:
    """Why the hook does not reload, and what to do: a retired key is not a forgotten --reuse-key."""
    if v.retired:
        return (f"NOT reloading: the renewed certificate carries the RETIRED key {pin}: retired keys are treated as "
                "compromised, and devices never trust one again. Do not renew with this key: get a certificate for a "
                "backup key (keypin csr --key keys/backupN.key -d NAME --out api.csr; certbot certonly --csr api.csr), "
                "and keep the retired key's servers off the air")
    return (f"NOT reloading: this renewal changed the server key ({pin}) and devices would refuse it. You probably "
            "forgot --reuse-key: renew again with the pinned key (certbot certonly --csr CSR, or certbot renew "
            "--reuse-key after restoring the key), or add the new pin to the devices first")


def check_private_key(cert_path: Path, cert_pin: str, required: bool) -> None:
    """The lineage's privkey.pem (beside cert.pem) must hold the certificate's key: a server given a
    pair that does not match fails every handshake. Missing is an error only when it is to be installed."""
    from . import material

    kp = Path(cert_path).parent / "privkey.pem"
    if not kp.is_file():
        if required:
            raise CommandError(f"--install: {kp} not found (certbot writes it beside cert.pem)")
        return
    try:
        key = material.load_private_key(kp.read_bytes(), str(kp), material.passphrase_from(None))
    except OSError as e:
        raise CommandError(f"NOT reloading: cannot read {kp}: {e.strerror or e}") from None
    except CommandError as e:
        raise CommandError(f"NOT reloading: {kp}: {e}") from None
    pin = material.pin_of_spki(material.spki_of_key(key.public_key()))
    if pin != cert_pin:
        raise CommandError(f"NOT reloading: {kp} does not match the certificate (key {pin}, certificate {cert_pin}): "
                           "a server given this pair fails every handshake. Find the matching key (certbot keeps "
                           "them in archive/ as privkeyN.pem) or renew again")


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
    try:
        return _install(Path(cert_path).parent, Path(dest))
    except OSError as e:
        raise CommandError(f"--install {dest}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")) \
            from None


def _install(src: Path, d: Path) -> list[str]:
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
