"""Pin documents and signed updates: ``keypin pinset ACTION``, ``keypin signer ACTION``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .. import material, pindoc, signed
from ..errors import CommandError
from ..pins import parse_pin
from ..util import atomic_write, note, progress, read_input
from .common import add_actions, passphrase_arg, write_new

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
        write_new(out, pem, 0o600)
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



def _file_arg(p):
    p.add_argument("--file", default="pins.json", metavar="FILE", help="pin document (default pins.json)")


def args_pinset(p):
    add_actions(p, PINSET_ACTIONS, _file_arg)


def args_pinset_new(p):
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
    passphrase_arg(p)


def args_pin_or_key(p):
    p.add_argument("--set", required=True, metavar="NAME", help="the set to edit")
    p.add_argument("pin", nargs="?", metavar="PIN", help="the pin")
    p.add_argument("--key", metavar="FILE", help="take the pin from a key/cert/CSR instead")
    passphrase_arg(p)


def args_retire(p):
    args_pin_or_key(p)
    p.add_argument("--force", action="store_true", help="allow leaving the set without a backup")


def args_show(p):
    p.add_argument("--set", metavar="NAME", help="show this set only")


def args_none(p):
    pass

def args_signer(p):
    add_actions(p, SIGNER_ACTIONS)


def args_signer_keygen(p):
    p.add_argument("--out", required=True, metavar="FILE", help="the private key (PKCS8 PEM, mode 0600)")


def args_signer_show(p):
    p.add_argument("--key", required=True, metavar="FILE", help="Ed25519 private or public key")
    passphrase_arg(p)


def args_sign(p):
    p.add_argument("--key", required=True, metavar="FILE", help="the current signer's private key")
    p.add_argument("--version", required=True, type=int, metavar="V",
                   help="the update's version: newer than the document's (devices refuse older or equal)")
    p.add_argument("--new-signer", metavar="SIGNER",
                   help="rotate the signer: ed25519/<base64> or a key file; later updates need that key")
    p.add_argument("--out", required=True, metavar="FILE", help="the signed update (and FILE.version)")
    p.add_argument("--force", action="store_true", help="replace existing --out files")
    passphrase_arg(p)


def args_set_signer(p):
    p.add_argument("--signer", metavar="SIGNER", help="ed25519/<base64> (what keypin signer keygen printed)")
    p.add_argument("--key", metavar="FILE", help="take it from an Ed25519 private or public key file")
    p.add_argument("--force", action="store_true", help="replace a signer the document already names")
    passphrase_arg(p)


SIGNER_ACTIONS = [
    ("keygen", cmd_signer_keygen, "make the offline Ed25519 key that signs pin-set updates; prints its signer",
     "example:\n  keypin signer keygen --out /media/offline/signer.key", args_signer_keygen),
    ("show", cmd_signer_show, "print the signer (ed25519/<base64>) of a key file",
     "example:\n  keypin signer show --key /media/offline/signer.key", args_signer_show),
]

PINSET_ACTIONS = [
    ("new", cmd_pinset_new, "create a pin set (and the document if missing)",
     ("example:\n  keypin pinset new --file pins.json --name api --host api.example.com \\\n"
     "      --active-key keys/primary.pub --backup-key keys/backup1.pub --backup-key keys/backup2.pub"),
     args_pinset_new),
    ("add-backup", cmd_pinset_add_backup, "append a backup pin to a set",
     "example:\n  keypin pinset add-backup --file pins.json --set api --key keys/backup3.pub", args_pin_or_key),
    ("retire", cmd_pinset_retire, "retire a pin (retiring the active pin promotes backup 1)",
     "example:\n  keypin pinset retire --file pins.json --set api sha256/AAAA...=", args_retire),
    ("show", cmd_pinset_show, "print the document or one set",
     "example:\n  keypin pinset show --file pins.json --set api", args_show),
    ("list", cmd_pinset_list, "one line per set",
     "example:\n  keypin pinset list --file pins.json", args_none),
    ("set-signer", cmd_pinset_set_signer, "name the signer whose updates devices provisioned with this file accept",
     "example:\n  keypin pinset set-signer --file pins.json --key /media/offline/signer.key", args_set_signer),
    ("sign", cmd_pinset_sign, "sign the document's sets as a pin-set update (two lines) for the devices",
     ("example:\n  keypin pinset sign --file pins.json --key /media/offline/signer.key --version 2 "
      "--out update.txt"), args_sign),
]

