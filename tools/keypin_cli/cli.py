"""keypin: the host CLI. A table of subcommands; one CommandError; ``keypin: <command>: <message>``."""
from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import ssl
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from . import __version__, board, decide, flash, hook, image, material, mqttsub, pindoc, reports, signed
from .errors import CommandError
from .pins import parse_pin
from .tlsprobe import fetch_chain
from .util import atomic_write, is_ip, note, parse_hostport, progress, read_input

PROG = "keypin"


class _UsageError(CommandError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1 too: exit 2 means "backup matched" for check
        raise _UsageError(f"{message}\n{self.format_usage().rstrip()}")


def _fmt():
    return argparse.RawDescriptionHelpFormatter


# ----------------------------------------------------------------------------------------- pin


def cmd_pin(a) -> int:
    if a.host:
        if a.files:
            raise CommandError("give FILEs or --host, not both")
        host, port = parse_hostport(a.host)
        ch = fetch_chain(host, port, a.sni, a.timeout)
        for e in decide.describe_chain(ch.certs):
            print(f"depth {e.depth} {e.pin}" if a.quiet else f"depth {e.depth} {e.pin} {e.subject}")
        for n in ch.notes:
            note(n)
        return 0
    if not a.files:
        raise CommandError("give one or more FILEs (or - for stdin), or --host HOST:PORT")
    pw = material.passphrase_from(a.passphrase)
    many = len(a.files) > 1
    for f in a.files:
        where = "stdin" if f == "-" else f
        for item in material.load_items(read_input(f), where, pw):
            if a.quiet:
                print(item.pin)
            else:
                print(f"{item.pin} {item.desc}" + (f"  ({where})" if many else ""))
    return 0


# -------------------------------------------------------------------------------------- keygen

KEY_TYPES = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
}


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


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
                _write_new(path, data, mode)
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
        out.write_bytes(pem)
        print(f"{pin} CSR for {', '.join(domains)} -> {out}")
    else:
        sys.stdout.write(pem.decode())
        print(f"keypin: csr: {pin} CSR for {', '.join(domains)}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------------- pinset


class _OrderedPins(argparse.Action):
    """--backup PIN and --backup-key FILE go into one ordered list of (kind, value)."""

    def __call__(self, parser, ns, values, option_string=None):
        lst = list(getattr(ns, self.dest) or [])
        lst.append(("key" if option_string.endswith("-key") else "pin", values))
        setattr(ns, self.dest, lst)


def _resolve_pin(kind: str, value: str, pw) -> str:
    if kind == "pin":
        parse_pin(value)
        return value
    return material.load_one(read_input(value), value, pw).pin


def _print_set(name: str, s: dict) -> None:
    flag = ", allow_no_backup" if s.get("allow_no_backup") else ""
    print(f"set {name} (policy {s.get('policy', 'leaf')}{flag})")
    print("  hosts: " + ", ".join(s["hosts"]))
    print("  active: " + s["active"])
    for i, p in enumerate(s["backups"], 1):
        print(f"  backup {i}: {p}")
    for p in s["retired"]:
        print(f"  retired: {p}")


def _save(path: str, doc: dict) -> None:
    pindoc.save(path, doc)
    for w in pindoc.warnings_for(doc):
        note(w)
    print(f"wrote {path} (seq {doc['seq']})")


def cmd_pinset_new(a) -> int:
    pw = material.passphrase_from(a.passphrase)
    doc = pindoc.load(a.file) if os.path.exists(a.file) else pindoc.new_doc()
    name = pindoc.check_name(a.name)
    if name in doc["sets"]:
        raise CommandError(f"set {name} already exists in {a.file}")
    hosts = []
    for h in a.host:
        h = pindoc.normalize_host(h)
        if h not in hosts:
            hosts.append(h)
        other = pindoc.set_for_host(doc, h)
        if other:
            raise CommandError(f"host {h} is already in set {other[0]} (a host is in at most one set)")
    active = _resolve_pin("key" if a.active_key else "pin", a.active_key or a.active, pw)
    backups = [_resolve_pin(k, v, pw) for k, v in (a.backups or [])]
    if not backups and not a.allow_no_backup:
        raise CommandError("a set without a backup pin cannot survive a lost or compromised key: give "
                           "--backup PIN or --backup-key FILE (or --allow-no-backup)")
    allp = [active] + backups
    if len(set(allp)) != len(allp):
        raise CommandError("the same pin is given twice")
    s = {"hosts": hosts, "active": active, "backups": backups, "retired": [], "policy": a.policy}
    if not backups:
        s["allow_no_backup"] = True
    doc["sets"][name] = s
    _save(a.file, doc)
    _print_set(name, s)
    return 0


def _set_and_pin(a):
    """-> (document, the named set, the pin given as PIN or --key FILE) for add-backup/retire."""
    pw = material.passphrase_from(a.passphrase)
    doc = pindoc.load(a.file)
    s = pindoc.get_set(doc, a.set)
    if bool(a.pin) == bool(a.key):
        raise CommandError("give exactly one of PIN or --key FILE")
    return doc, s, _resolve_pin("key" if a.key else "pin", a.key or a.pin, pw)


def cmd_pinset_add_backup(a) -> int:
    doc, s, pin = _set_and_pin(a)
    if pin in s["retired"]:
        raise CommandError(f"{pin} is retired in set {a.set}: a retired key is never trusted again")
    if pin == s["active"] or pin in s["backups"]:
        raise CommandError(f"{pin} is already in set {a.set}")
    s["backups"].append(pin)
    _save(a.file, doc)
    _print_set(a.set, s)
    return 0


def cmd_pinset_retire(a) -> int:
    doc, s, pin = _set_and_pin(a)
    if pin in s["retired"]:
        raise CommandError(f"{pin} is already retired in set {a.set}")
    if pin == s["active"]:
        if not s["backups"]:
            raise CommandError(f"{pin} is the only key of set {a.set}: add a backup first")
        s["active"] = s["backups"].pop(0)
        note(f"backup 1 {s['active']} is now the active pin of set {a.set}")
    elif pin in s["backups"]:
        s["backups"].remove(pin)
    else:
        raise CommandError(f"{pin} is not in set {a.set}")
    if not s["backups"]:
        if not a.force:
            raise CommandError(f"retiring {pin} would leave set {a.set} without a backup pin (nothing written; add a "
                               "backup first, or --force)")
        s["allow_no_backup"] = True
    s["retired"].append(pin)
    _save(a.file, doc)
    _print_set(a.set, s)
    return 0


def cmd_pinset_show(a) -> int:
    doc = pindoc.load(a.file)
    print(f"{a.file}: {doc['format']} seq {doc['seq']} version {doc['version']} signer {doc['signer'] or 'none'}")
    names = [a.set] if a.set else sorted(doc["sets"])
    for n in names:
        _print_set(n, pindoc.get_set(doc, n))
    for w in pindoc.warnings_for(doc):
        note(w)
    return 0


def cmd_pinset_list(a) -> int:
    doc = pindoc.load(a.file)
    for n in sorted(doc["sets"]):
        s = doc["sets"][n]
        nb = len(s["backups"])
        print(f"{n} {','.join(s['hosts'])} (policy {s.get('policy', 'leaf')}, {nb} backup{'' if nb == 1 else 's'}, "
              f"{len(s['retired'])} retired)")
    return 0


# ------------------------------------------------------------------------ signed updates, signer


def cmd_signer_keygen(a) -> int:
    out = Path(a.out)
    if out.exists() or out.is_symlink():
        raise CommandError(f"refusing to overwrite {out} (nothing written)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        _write_new(out, pem, 0o600)
    except FileExistsError:
        raise CommandError(f"refusing to overwrite {out} (nothing written)") from None
    print(signed.signer_text(key.public_key()))
    progress(f"keep {out} offline; next: keypin pinset set-signer --file pins.json --key {out}")
    return 0


def cmd_signer_show(a) -> int:
    print(signed.resolve_signer(a.key, material.passphrase_from(a.passphrase)))
    return 0


def cmd_pinset_set_signer(a) -> int:
    pw = material.passphrase_from(a.passphrase)
    if bool(a.signer) == bool(a.key):
        raise CommandError("give exactly one of --signer ed25519/... or --key FILE")
    signer = signed.resolve_signer(a.signer or a.key, pw)
    doc = pindoc.load(a.file)
    if doc["signer"] == signer:
        print(f"{a.file}: signer already {signer}")
        return 0
    if doc["signer"] and not a.force:
        raise CommandError(f"{a.file} already names signer {doc['signer']}; devices provisioned with it only "
                           "change signer through an update it signs (keypin pinset sign --new-signer ...). "
                           "Give --force to change the document anyway (for devices provisioned from now on)")
    doc["signer"] = signer
    _save(a.file, doc)
    print(f"signer {signer}")
    return 0


def cmd_pinset_sign(a) -> int:
    pw = material.passphrase_from(a.passphrase)
    doc = pindoc.load(a.file)
    key = signed.load_private(a.key, pw)
    new_signer = signed.resolve_signer(a.new_signer, pw) if a.new_signer else None
    data = signed.make_update(doc, a.version, key, new_signer)
    out = Path(a.out)
    for p in (out, Path(str(out) + ".version")):
        if p.exists() and not a.force:
            raise CommandError(f"{p} exists (use --force to replace it)")
    atomic_write(str(out), data, 0o644)
    atomic_write(str(out) + ".version", f"{a.version}\n".encode(), 0o644)
    # the document now says what the devices will have: the next update needs a newer version
    doc["version"] = a.version
    if new_signer:
        doc["signer"] = new_signer
    _save(a.file, doc)
    print(f"signed update version {a.version} ({len(data)} bytes, {len(doc['sets'])} set"
          f"{'' if len(doc['sets']) == 1 else 's'}) -> {out}, {out}.version")
    if new_signer:
        print(f"devices that apply it trust only the new signer {new_signer} from then on")
    return 0


def cmd_reports(a) -> int:
    ctx = None
    if a.tls or a.cafile or a.insecure:
        ctx = ssl.create_default_context(cafile=a.cafile)
        if a.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    topic = a.topic or f"{a.prefix}/+/reports"
    try:
        sub = mqttsub.Subscriber(a.host, a.port, user=a.user, password=a.password, tls=ctx,
                                 timeout=a.connect_timeout)
        try:
            sub.subscribe(topic, a.connect_timeout)
            progress(f"subscribed to {topic} on {a.host}:{a.port}")
            n = 0
            for t, payload, retained in sub.messages(a.count, a.timeout):
                print(reports.format_message(t, payload, retained), flush=True)
                n += 1
        finally:
            sub.close()
    except TimeoutError:
        raise CommandError(f"{a.host}:{a.port} did not answer within {a.connect_timeout:g} s") from None
    except OSError as e:
        raise CommandError(f"{a.host}:{a.port}: {e.strerror or e}") from None
    if a.count and n < a.count:
        note(f"{n} of {a.count} report message(s) within {a.timeout:g} s")
    return 0


# --------------------------------------------------------------------------------------- check


def cmd_check(a) -> int:
    doc = pindoc.load(a.pinset)
    host, port = parse_hostport(a.host)
    if a.set:
        name, s = a.set, pindoc.get_set(doc, a.set)
    else:
        found = pindoc.set_for_host(doc, host) or (a.sni and pindoc.set_for_host(doc, a.sni))
        if not found:
            raise CommandError(f"no pin set covers {host} in {a.pinset} (give --set NAME)")
        name, s = found
    if s["policy"] == "any":
        note(f"set {name} has policy any: devices connect only in CA+pin mode (config \"cadata\"), "
             "where mbedTLS verifies the chain up to the pinned key; this check does not verify signatures")
    ch = fetch_chain(host, port, a.sni, a.timeout)
    chain = decide.describe_chain(ch.certs)
    for n in ch.notes:
        note(n)
    d = decide.decide(chain, s)
    if d.outcome == decide.ACTIVE:
        for e in chain:
            print(f"depth {e.depth}: {e.pin} {e.subject}")
        print(f"OK: depth {d.depth} matches the active pin of set {name}")
        return 0
    if d.outcome == decide.BACKUP:
        for e in chain:
            print(f"depth {e.depth}: {e.pin} {e.subject}")
        more = "" if d.backup_index == 1 else f" and backups 1..{d.backup_index - 1}"
        print(f"ROTATION: depth {d.depth} matches backup {d.backup_index} {d.pin} of set {name}: a device accepts "
              f"it and, after the first good response, makes it the active pin and retires {s['active']}{more}")
        return 2
    report = decide.failure_report(chain, host, port, name, s, d.outcome)
    if d.outcome == decide.RETIRED:
        report += f"\n  (depth {d.depth} presents the RETIRED key {d.pin}: never trusted again)"
    raise CommandError(report)


# --------------------------------------------------------------------------------------- image


def cmd_image(a) -> int:
    out = Path(a.out)
    res = image.build_image(out, Path(a.src) if a.src else image.repo_root(), a.arch,
                            Path(a.config) if a.config else None, Path(a.pins) if a.pins else None,
                            a.force)
    for n in res.notes:
        note(n)
    w = max(len(p) for p, _ in res.files)
    for p, n in res.files:
        print(f"  {p:<{w}} {n:7d}")
    impl = "native" if res.native else "pure-Python fallback"
    print(f"{out}: {len(res.files)} files, {res.total} bytes ({a.arch}, SPKI {impl}) + MANIFEST")
    return 0


# ------------------------------------------------------------------------------ board commands


def deploy_plan(img: Path, manifest: list[tuple[str, str]], remote: dict[str, str | None],
                data: set[str] | frozenset[str] = frozenset(image.DATA_FILES)):
    """-> (files to copy [(local, device, sha)], kept data files, unchanged files).

    Data files (config.json, the pin document) already on the board are kept: the board may have
    rotated its pins since; `keypin provision` replaces them on purpose."""
    copy, kept, same = [], [], []
    for rel, sha in manifest:
        dev = board.device_path(rel)
        have = remote.get(dev)
        if rel in data and have is not None:
            if have != sha:
                kept.append(dev)
            else:
                same.append(dev)
            continue
        if have == sha:
            same.append(dev)
        else:
            copy.append((str(img / rel), dev, sha))
    return copy, kept, same


def cmd_deploy(a) -> int:
    img = Path(a.image)
    manifest = image.read_manifest(img)
    remote = board.remote_hashes(a.port, [board.device_path(r) for r, _ in manifest])
    copy, kept, same = deploy_plan(img, manifest, remote, image.data_files(img))
    stale = [p for p in board.shadowing_sources([d for _, d, _ in copy] + same) if remote.get(p, 1) is not None]
    board.push_and_verify(a.port, copy, stale)
    for d in kept:
        note(f"kept the board's {d} (it may hold rotations); replace it with keypin provision")
    print(f"deployed {img} to {a.port}: {len(copy)} copied, {len(same)} unchanged, {len(kept)} kept; "
          "all verified by SHA-256")
    print(f"reset the board to run it (mpremote connect {a.port} reset)")
    return 0


def provision_files(config: Path, pins: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """-> ([(local, device path, sha256)], device files to remove first).

    The pin document goes where config.json says ("pins", default pins.json); the store's older and
    half-written generations (.old, .new) are removed, else a higher seq there would win on the board."""
    cdata, pdata = read_input(str(config)), read_input(str(pins))
    cfg = image.validate_config(cdata, str(config))
    pindoc.parse(pdata, str(pins))
    dev_pins = board.device_path(image.pins_path(cfg, str(config)))
    files = [(str(config), board.device_path(board.DEVICE_CONFIG), hashlib.sha256(cdata).hexdigest()),
             (str(pins), dev_pins, hashlib.sha256(pdata).hexdigest())]
    return files, [dev_pins + ".old", dev_pins + ".new"]


def cmd_provision(a) -> int:
    files, remove = provision_files(Path(a.config), Path(a.pins))
    board.push_and_verify(a.port, files, remove)
    print(f"provisioned {a.port}: {files[0][1]}, {files[1][1]} (verified by SHA-256; older pin generations "
          "removed)")
    return 0


def cmd_status(a) -> int:
    argv = board.exec_command(a.port, board.STATUS_CODE)
    r = subprocess.run(argv, check=False)
    if r.returncode != 0:
        raise CommandError(f"mpremote failed on {a.port} (exit status {r.returncode})")
    return 0


def cmd_flash(a) -> int:
    fw = Path(a.firmware)
    if not fw.is_file():
        raise CommandError(f"{fw}: no such firmware file")
    chip = flash.detect_chip(a.port) if a.chip == "auto" else a.chip
    chip, offset, _ = flash.plan(fw, chip, a.offset)
    for argv in flash.flash_commands(a.port, chip, str(fw), offset, a.baud, erase=not a.no_erase):
        flash.run_esptool(argv)
    print(f"flashed {fw} ({chip}) at 0x{offset:x} on {a.port}")
    return 0


# -------------------------------------------------------------------------------- certbot-hook


def cmd_certbot_hook(a) -> int:
    path = hook.lineage_cert(a.cert)
    items = material.load_items(read_input(str(path)), str(path))
    leaf = items[0]
    if leaf.cert is None:
        raise CommandError(f"{path}: the first PEM block is not a certificate")
    doc = pindoc.load(a.pinset)
    names = hook.cert_names(leaf.cert)
    if a.set:
        sets = [(a.set, pindoc.get_set(doc, a.set))]
    else:
        sets = hook.sets_for_names(doc, names)
        if not sets:
            raise CommandError(f"no pin set in {a.pinset} covers {', '.join(names)} (give --set NAME)")
    v = hook.judge(leaf.pin, sets)
    for line in v.lines:
        print(line)
    if not v.ok:
        raise CommandError(f"NOT reloading: this renewal changed the server key ({leaf.pin}) and devices would refuse "
                           "it. You probably forgot --reuse-key: renew again with the pinned key "
                           "(certbot certonly --csr CSR, or certbot renew --reuse-key after restoring the "
                           "key), or add the new pin to the devices first")
    if a.install:
        for line in hook.install(path, a.install):
            print(line)
    for cmd in a.reload or []:
        argv = shlex.split(cmd)
        if not argv:
            continue
        print(f"reload: {cmd}")
        try:
            r = subprocess.run(argv, check=False)
        except OSError as e:
            raise CommandError(f"reload command {cmd!r} failed: {e.strerror or e}") from None
        if r.returncode != 0:
            raise CommandError(f"reload command {cmd!r} exited with {r.returncode}")
    return 0


# ------------------------------------------------------------------------------------- parsers


def _passphrase(p):
    p.add_argument("--passphrase", help=f"passphrase of an encrypted private key (or env {material.PASSPHRASE_ENV})")


def _args_pin(p):
    p.add_argument("files", nargs="*", metavar="FILE", help="PEM/DER certificate, chain, key or CSR; - = stdin")
    p.add_argument("--host", metavar="HOST:PORT", help="read the chain a TLS server presents instead")
    p.add_argument("--sni", metavar="NAME", help="server name to send (default: HOST unless an IP)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="connect/handshake timeout")
    p.add_argument("-q", "--quiet", action="store_true", help="print the pins only")
    _passphrase(p)


def _args_keygen(p):
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the keys (created 0700)")
    p.add_argument("--backups", type=int, default=2, metavar="N", help="number of backup keys (default 2)")
    p.add_argument("--type", choices=sorted(KEY_TYPES), default="ec-p256", help="key type (default ec-p256)")


def _args_csr(p):
    p.add_argument("--key", required=True, metavar="KEY", help="private key (PEM/DER)")
    p.add_argument("-d", "--domain", action="append", required=True, metavar="DOMAIN",
                   help="a name for the certificate (repeat; the first is also the CN)")
    p.add_argument("--out", metavar="FILE", help="write the CSR here (default: stdout)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    _passphrase(p)


def _file_arg(p):
    p.add_argument("--file", default="pins.json", metavar="FILE", help="pin document (default pins.json)")


def _args_pinset(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    sub.required = True
    for name, fn, helptext, epilog, adder in _PINSET_ACTIONS:
        sp = sub.add_parser(name, help=helptext, description=helptext, epilog=epilog,
                            formatter_class=_fmt())
        _file_arg(sp)
        adder(sp)
        sp.set_defaults(func=fn)


def _args_pinset_new(p):
    p.add_argument("--name", required=True, help="set name: 1..32 of [A-Za-z0-9_.-]")
    p.add_argument("--host", action="append", required=True, metavar="H", help="host this set covers (repeat)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--active", metavar="PIN", help="the active pin")
    g.add_argument("--active-key", metavar="FILE", help="take the active pin from a key/cert/CSR")
    p.add_argument("--backup", dest="backups", action=_OrderedPins, metavar="PIN", help="a backup pin (repeat)")
    p.add_argument("--backup-key", dest="backups", action=_OrderedPins, metavar="FILE",
                   help="a backup pin from a key/cert/CSR (repeat; order is kept with --backup)")
    p.add_argument("--policy", choices=pindoc.POLICIES, default="leaf",
                   help="leaf: the server's own key (default); any: a key anywhere in the chain")
    p.add_argument("--allow-no-backup", action="store_true", help="accept a set without backups")
    _passphrase(p)


def _args_pin_or_key(p):
    p.add_argument("--set", required=True, metavar="NAME", help="the set to edit")
    p.add_argument("pin", nargs="?", metavar="PIN", help="the pin")
    p.add_argument("--key", metavar="FILE", help="take the pin from a key/cert/CSR instead")
    _passphrase(p)


def _args_retire(p):
    _args_pin_or_key(p)
    p.add_argument("--force", action="store_true", help="allow leaving the set without a backup")


def _args_show(p):
    p.add_argument("--set", metavar="NAME", help="show this set only")


def _args_none(p):
    pass


def _args_check(p):
    p.add_argument("--host", required=True, metavar="HOST:PORT", help="server to check")
    p.add_argument("--pinset", required=True, metavar="FILE", help="pin document")
    p.add_argument("--set", metavar="NAME", help="pin set to use (default: the set covering HOST)")
    p.add_argument("--sni", metavar="NAME", help="server name to send (default: HOST unless an IP)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="connect/handshake timeout")


def _args_image(p):
    p.add_argument("--out", required=True, metavar="DIR", help="image directory (must be empty or absent)")
    p.add_argument("--arch", choices=image.ARCHES, default="xtensawin",
                   help="mpy-cross arch: xtensawin = ESP32/S2/S3, x64 = Unix port (default xtensawin)")
    p.add_argument("--config", metavar="FILE", help="config.json to include")
    p.add_argument("--pins", metavar="FILE", help="pin document to include as pins.json (validated)")
    p.add_argument("--force", action="store_true", help="replace an existing image in --out")
    p.add_argument("--src", metavar="DIR", help="keypin source tree (default: this checkout)")


def _port(p):
    p.add_argument("--port", required=True, metavar="PORT", help="serial port of the board, e.g. /dev/ttyUSB0")


def _args_deploy(p):
    _port(p)
    p.add_argument("--image", default="build/image-xtensawin", metavar="DIR",
                   help="image directory (default build/image-xtensawin, what make build writes)")


def _args_provision(p):
    _port(p)
    p.add_argument("--config", required=True, metavar="FILE", help="config.json")
    p.add_argument("--pins", required=True, metavar="FILE", help="pin document")


def _args_flash(p):
    _port(p)
    p.add_argument("--firmware", required=True, metavar="FILE.bin", help="MicroPython firmware for the chip")
    p.add_argument("--chip", choices=["auto"] + sorted(flash.OFFSETS), default="auto",
                   help="chip (default: detect)")
    p.add_argument("--offset", type=lambda s: int(s, 0), metavar="ADDR",
                   help="override the write offset (default: by chip)")
    p.add_argument("--baud", type=int, default=460800, help="baud rate for writing (default 460800)")
    p.add_argument("--no-erase", action="store_true", help="do not erase the whole flash first")


def _args_certbot_hook(p):
    p.add_argument("--pinset", required=True, metavar="FILE", help="pin document of the fleet")
    p.add_argument("--set", metavar="NAME", help="pin set (default: the sets covering the cert's names)")
    p.add_argument("--reload", action="append", metavar="CMD",
                   help="command to run when the key is pinned (repeat), e.g. 'systemctl reload nginx'")
    p.add_argument("--cert", metavar="FILE", help="certificate to check instead of $RENEWED_LINEAGE/cert.pem")
    p.add_argument("--install", metavar="DIR",
                   help="when the key is pinned, copy fullchain.pem and privkey.pem from the lineage into DIR "
                        "(atomically) before reloading; point the servers at DIR so a refused renewal is "
                        "never served, not even after a restart")


def _args_signer(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    sub.required = True
    for name, fn, helptext, epilog, adder in _SIGNER_ACTIONS:
        sp = sub.add_parser(name, help=helptext, description=helptext, epilog=epilog, formatter_class=_fmt())
        adder(sp)
        sp.set_defaults(func=fn)


def _args_signer_keygen(p):
    p.add_argument("--out", required=True, metavar="FILE", help="the private key (PKCS8 PEM, mode 0600)")


def _args_signer_show(p):
    p.add_argument("--key", required=True, metavar="FILE", help="Ed25519 private or public key")
    _passphrase(p)


def _args_sign(p):
    p.add_argument("--key", required=True, metavar="FILE", help="the current signer's private key")
    p.add_argument("--version", required=True, type=int, metavar="V",
                   help="the update's version: newer than the document's (devices refuse older or equal)")
    p.add_argument("--new-signer", metavar="SIGNER",
                   help="rotate the signer: ed25519/<base64> or a key file; later updates need that key")
    p.add_argument("--out", required=True, metavar="FILE", help="the signed update (and FILE.version)")
    p.add_argument("--force", action="store_true", help="replace existing --out files")
    _passphrase(p)


def _args_set_signer(p):
    p.add_argument("--signer", metavar="SIGNER", help="ed25519/<base64> (what keypin signer keygen printed)")
    p.add_argument("--key", metavar="FILE", help="take it from an Ed25519 private or public key file")
    p.add_argument("--force", action="store_true", help="replace a signer the document already names")
    _passphrase(p)


def _args_reports(p):
    p.add_argument("--host", required=True, help="MQTT broker")
    p.add_argument("--port", type=int, default=1883, help="broker port (default 1883; 8883 with --tls)")
    p.add_argument("--user", help="broker user name")
    p.add_argument("--password", help="broker password")
    p.add_argument("--tls", action="store_true", help="TLS, verified against the system CAs (or --cafile)")
    p.add_argument("--cafile", metavar="FILE", help="CA certificates for TLS (implies --tls)")
    p.add_argument("--insecure", action="store_true", help="TLS without verification (implies --tls)")
    p.add_argument("--prefix", default="keypin", help="the devices' topic_prefix (default keypin)")
    p.add_argument("--topic", help="subscribe to this topic instead of PREFIX/+/reports")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N messages (default: no limit)")
    p.add_argument("--timeout", type=float, default=0, metavar="S", help="stop after S seconds (default: never)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help=argparse.SUPPRESS)


_SIGNER_ACTIONS = [
    ("keygen", cmd_signer_keygen, "make the offline Ed25519 key that signs pin-set updates; prints its signer",
     "example:\n  keypin signer keygen --out /media/offline/signer.key", _args_signer_keygen),
    ("show", cmd_signer_show, "print the signer (ed25519/<base64>) of a key file",
     "example:\n  keypin signer show --key /media/offline/signer.key", _args_signer_show),
]

_PINSET_ACTIONS = [
    ("new", cmd_pinset_new, "create a pin set (and the document if missing)",
     ("example:\n  keypin pinset new --file pins.json --name api --host api.example.com \\\n"
     "      --active-key keys/primary.pub --backup-key keys/backup1.pub --backup-key keys/backup2.pub"),
     _args_pinset_new),
    ("add-backup", cmd_pinset_add_backup, "append a backup pin to a set",
     "example:\n  keypin pinset add-backup --file pins.json --set api --key keys/backup3.pub", _args_pin_or_key),
    ("retire", cmd_pinset_retire, "retire a pin (retiring the active pin promotes backup 1)",
     "example:\n  keypin pinset retire --file pins.json --set api sha256/AAAA...=", _args_retire),
    ("show", cmd_pinset_show, "print the document or one set",
     "example:\n  keypin pinset show --file pins.json --set api", _args_show),
    ("list", cmd_pinset_list, "one line per set",
     "example:\n  keypin pinset list --file pins.json", _args_none),
    ("set-signer", cmd_pinset_set_signer, "name the signer whose updates devices provisioned with this file accept",
     "example:\n  keypin pinset set-signer --file pins.json --key /media/offline/signer.key", _args_set_signer),
    ("sign", cmd_pinset_sign, "sign the document's sets as a pin-set update (two lines) for the devices",
     ("example:\n  keypin pinset sign --file pins.json --key /media/offline/signer.key --version 2 "
      "--out update.txt"), _args_sign),
]

COMMANDS = [
    ("pin", cmd_pin, "print the SPKI pins of certificates, keys, CSRs, or a server's chain",
     ("examples:\n  keypin pin fullchain.pem\n  keypin pin keys/*.pub\n  openssl s_client ... | keypin pin -\n"
     "  keypin pin --host api.example.com:443"), _args_pin),
    ("keygen", cmd_keygen, "generate the primary key and N backup keys (PKCS8 PEM, mode 0600)",
     "example:\n  keypin keygen --out keys --backups 2 --type ec-p256", _args_keygen),
    ("csr", cmd_csr, "make a CSR for a fixed key (for certbot certonly --csr)",
     "example:\n  keypin csr --key keys/primary.key -d api.example.com -d www.example.com --out api.csr",
     _args_csr),
    ("pinset", None, "edit the pin document: new, add-backup, retire, show, list, set-signer, sign",
     "example:\n  keypin pinset list --file pins.json", _args_pinset),
    ("check", cmd_check, "decide like a device: exit 0 active, 2 backup (rotation), 1 mismatch/retired",
     "example:\n  keypin check --host api.example.com:443 --pinset pins.json", _args_check),
    ("image", cmd_image, "assemble the device filesystem (boot.py, main.py, lib/*.mpy, data, MANIFEST)",
     "example:\n  keypin image --out build/image-xtensawin --arch xtensawin --config config.json --pins pins.json",
     _args_image),
    ("deploy", cmd_deploy, "copy an image to a board with mpremote and verify every file (needs a board)",
     "example:\n  keypin deploy --port /dev/ttyUSB0 --image build/image-xtensawin", _args_deploy),
    ("provision", cmd_provision, "copy config.json and pins.json to a board and verify (needs a board)",
     "example:\n  keypin provision --port /dev/ttyUSB0 --config config.json --pins pins.json", _args_provision),
    ("status", cmd_status, "show the board's keypin state: keypin.setup.show() (needs a board)",
     "example:\n  keypin status --port /dev/ttyUSB0", _port),
    ("flash", cmd_flash, "erase and flash MicroPython firmware with esptool (needs a board)",
     "example:\n  keypin flash --port /dev/ttyUSB0 --firmware ESP32_GENERIC-20250415-v1.25.0.bin", _args_flash),
    ("certbot-hook", cmd_certbot_hook, "certbot --deploy-hook: reload only if the renewed cert kept a pinned key",
     ("example:\n  certbot renew --reuse-key --deploy-hook \\\n"
     "      'keypin certbot-hook --pinset /etc/keypin/pins.json --reload \"systemctl reload nginx\"'"),
     _args_certbot_hook),
    ("signer", None, "the offline Ed25519 key for signed pin-set updates: keygen, show",
     "example:\n  keypin signer keygen --out /media/offline/signer.key", _args_signer),
    ("reports", cmd_reports, "subscribe to the devices' pin-failure reports (MQTT) and print them",
     "example:\n  keypin reports --host mqtt.example.com --port 8883 --tls --user ops --password ...",
     _args_reports),
]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, formatter_class=_fmt(),
                description="keypin: TLS server key pins (sha256/<base64> of the SPKI) for MicroPython devices.",
                epilog="examples:\n  keypin pin cert.pem\n  keypin keygen --out keys --backups 2\n"
                       "  keypin check --host api.example.com:443 --pinset pins.json\n\n"
                       "keypin COMMAND --help shows each command's options and an example.")
    p.add_argument("--version", action="version", version="keypin " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, fn, helptext, epilog, adder in COMMANDS:
        sp = sub.add_parser(name, help=helptext, description=helptext, epilog=epilog, formatter_class=_fmt())
        adder(sp)
        if fn is not None:
            sp.set_defaults(func=fn)
    return p


def _command_of(argv: list[str]) -> str:
    names = {c[0] for c in COMMANDS}
    for a in argv:
        if a in names:
            return a
    return ""


def run(argv) -> int:
    argv = list(argv)
    cmd = _command_of(argv)
    prefix = f"{PROG}: {cmd}: " if cmd else f"{PROG}: "
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except CommandError as e:
        print(prefix + str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(prefix + "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
