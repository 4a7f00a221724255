"""Keys and pins: ``keypin pin``, ``keygen``, ``csr``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from .. import decide, material, pindoc
from ..errors import CommandError
from ..tlsprobe import fetch_chain
from ..util import add_json_arg, emit_json, is_ip, note, parse_hostport, progress, read_input
from .common import passphrase_arg, seconds, write_new

# ----------------------------------------------------------------------------------------- pin


def cmd_pin(a) -> int:
    if a.host:
        if a.files:
            raise CommandError("give FILEs or --host, not both")
        host, port = parse_hostport(a.host)
        ch = fetch_chain(host, port, a.sni, a.timeout)
        chain = decide.describe_chain(ch.certs)
        for n in ch.notes:
            note(n)
        if a.json:
            emit_json("pin", {"host": host, "port": port, "sni": a.sni, "complete": ch.complete,
                              "chain": decide.chain_json(chain)})
            return 0
        for line in decide.chain_lines(chain, subjects=not a.quiet):
            print(line)
        return 0
    if not a.files:
        raise CommandError("give one or more FILEs (or - for stdin), or --host HOST:PORT")
    pw = material.passphrase_from(a.passphrase)
    many = len(a.files) > 1
    found = []
    for f in a.files:
        where = "stdin" if f == "-" else f
        for item in material.load_items(read_input(f), where, pw):
            found.append({"pin": item.pin, "desc": item.desc, "file": where})
            if a.json:
                continue
            if a.quiet:
                print(item.pin)
            else:
                print(f"{item.pin} {item.desc}" + (f"  ({where})" if many else ""))
    if a.json:
        emit_json("pin", {"items": found})
    return 0


# -------------------------------------------------------------------------------------- keygen

KEY_TYPES = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
}



def cmd_keygen(a) -> int:
    if not 0 <= a.backups <= 99:
        raise CommandError("--backups must be 0..99")
    out = Path(a.out)
    names = ["primary"] + [f"backup{i}" for i in range(1, a.backups + 1)]
    targets = [out / (n + ext) for n in names for ext in (".key", ".pub")]
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} exists and is not a directory")
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing:
        raise CommandError("refusing to overwrite existing key files (nothing written): " + ", ".join(existing))
    if not out.exists():
        out.mkdir(mode=0o700, parents=True)
        os.chmod(out, 0o700)
    written: list[Path] = []
    try:
        for n in names:
            progress(f"generating {n} ({a.type})")
            key = KEY_TYPES[a.type]()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
            for path, data, mode in ((out / (n + ".key"), pem, 0o600), (out / (n + ".pub"), pub, 0o644)):
                write_new(path, data, mode)
                written.append(path)
            pin = material.pin_of_spki(material.spki_of_key(key.public_key()))
            print(f"{pin} {n} {out / (n + '.key')}")
    except FileExistsError as e:  # appeared meanwhile: undo our own files only
        for p in written:
            p.unlink()
        raise CommandError(f"refusing to overwrite {e.filename} (nothing kept)") from None
    progress(f"next: keypin csr --key {out / 'primary.key'} -d YOUR.DOMAIN, and keypin pinset new ... "
             f"--active-key {out / 'primary.pub'} --backup-key {out / 'backup1.pub'}")
    return 0


# ----------------------------------------------------------------------------------------- csr


def _domain(d: str) -> str:
    d = d.strip().rstrip(".")
    try:
        d = d.encode("ascii").decode().lower()
    except UnicodeEncodeError:
        d = d.encode("idna").decode().lower()
    if is_ip(d):
        return d
    pindoc.check_host(d.removeprefix("*."))
    return d


def cmd_csr(a) -> int:
    pw = material.passphrase_from(a.passphrase)
    key = material.load_private_key(read_input(a.key), a.key, pw)
    domains = []
    for d in a.domain:
        d = _domain(d)
        if d not in domains:
            domains.append(d)
    sans: list[x509.GeneralName] = []
    for d in domains:
        if is_ip(d):
            import ipaddress

            sans.append(x509.IPAddress(ipaddress.ip_address(d)))
        else:
            sans.append(x509.DNSName(d))
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, domains[0])] if len(domains[0]) <= 64 else []
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        algo = None
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        algo = hashes.SHA384() if key.curve.key_size <= 384 else hashes.SHA512()
    else:
        algo = hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name(subject))
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(key, algo))
    pem = csr.public_bytes(serialization.Encoding.PEM)
    pin = material.pin_of_spki(material.spki_of_key(key.public_key()))
    if a.out:
        out = Path(a.out)
        if out.exists() and not a.force:
            raise CommandError(f"{out} exists (use --force to replace it)")
        try:
            out.write_bytes(pem)
        except OSError as e:
            raise CommandError(f"cannot write {out}: {e.strerror or e}") from None
        print(f"{pin} CSR for {', '.join(domains)} -> {out}")
    else:
        sys.stdout.write(pem.decode())
        print(f"keypin: csr: {pin} CSR for {', '.join(domains)}", file=sys.stderr)
    return 0



def args_pin(p):
    p.add_argument("files", nargs="*", metavar="FILE", help="PEM/DER certificate, chain, key or CSR; - = stdin")
    p.add_argument("--host", metavar="HOST:PORT", help="read the chain a TLS server presents instead")
    p.add_argument("--sni", metavar="NAME", help="server name to send (default: HOST unless an IP)")
    p.add_argument("--timeout", type=seconds, default=10.0, metavar="S", help="connect/handshake timeout (s, > 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the pins only")
    add_json_arg(p)
    passphrase_arg(p)


def args_keygen(p):
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the keys (created 0700)")
    p.add_argument("--backups", type=int, default=2, metavar="N", help="number of backup keys (default 2)")
    p.add_argument("--type", choices=sorted(KEY_TYPES), default="ec-p256", help="key type (default ec-p256)")


def args_csr(p):
    p.add_argument("--key", required=True, metavar="KEY", help="private key (PEM/DER)")
    p.add_argument("-d", "--domain", action="append", required=True, metavar="DOMAIN",
                   help="a name for the certificate (repeat; the first is also the CN)")
    p.add_argument("--out", metavar="FILE", help="write the CSR here (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    passphrase_arg(p)
