"""Pin documents and signed updates: ``keypin pinset ACTION``, ``keypin signer ACTION``."""
from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .. import material, pindoc, signed
from ..errors import CommandError
from ..pins import parse_pin
from ..util import add_json_arg, atomic_write, emit_json, note, progress, read_input
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
    ca = f", {len(s['ca'])} CA certificate{'' if len(s['ca']) == 1 else 's'}" if s.get("ca") else ""
    print(f"set {name} (policy {s.get('policy', 'leaf')}{flag}{ca})")
    print("  hosts: " + ", ".join(s["hosts"]))
    for p in s["active"]:
        print("  active: " + p)
    for i, g in enumerate(s["backups"], 1):
        print(f"  backup {i}: {', '.join(g)}")


def _save(path: str, doc: dict) -> None:
    pindoc.save(path, doc)
    for w in pindoc.warnings_for(doc):
        note(w)
    print(f"wrote {path} (seq {doc['seq']})")


def _fresh_pin(doc: dict, pin: str, name: str | None = None) -> str:
    if pin in doc["retired"]:
        raise CommandError(f"{pin} is retired: a retired key is never trusted again, in any set")
    if name is not None and pin in pindoc.set_pins(doc["sets"][name]):
        raise CommandError(f"{pin} is already in set {name}")
    return pin


def cmd_pinset_new(a) -> int:
    pw = material.passphrase_from(a.passphrase)
    doc = pindoc.load(a.file) if os.path.exists(a.file) else pindoc.new_doc(a.fleet)
    if a.fleet is not None and doc["fleet"] != a.fleet:
        if doc["fleet"] is not None:
            raise CommandError(f"{a.file} is for fleet {doc['fleet']!r}, not {a.fleet!r} (one document, one fleet)")
        doc["fleet"] = pindoc.check_fleet(a.fleet)
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
    if not a.actives:
        raise CommandError("give the key(s) in service: --active PIN or --active-key FILE (repeat for several)")
    active = [_resolve_pin(k, v, pw) for k, v in a.actives]
    backups = [_resolve_pin(k, v, pw) for k, v in (a.backups or [])]
    if not backups and not a.allow_no_backup:
        raise CommandError("a set without a backup pin cannot survive a lost or compromised key: give "
                           "--backup PIN or --backup-key FILE (or --allow-no-backup)")
    allp = active + backups
    if len(set(allp)) != len(allp):
        raise CommandError("the same pin is given twice")
    if len(active) > pindoc.MAX_ACTIVE:
        raise CommandError(f"at most {pindoc.MAX_ACTIVE} pins in service per set")
    for p in allp:
        _fresh_pin(doc, p)
    s: dict = {"hosts": hosts, "active": active, "backups": [[p] for p in backups], "policy": a.policy}
    if not backups:
        s["allow_no_backup"] = True
    doc["sets"][name] = s
    _save(a.file, doc)
    _print_set(name, s)
    return 0


def _set_and_pin(a):
    """-> (document, the named set, the pin given as PIN or --key FILE) for add-active/add-backup/retire."""
    pw = material.passphrase_from(a.passphrase)
    doc = pindoc.load(a.file)
    s = pindoc.get_set(doc, a.set)
    if bool(a.pin) == bool(a.key):
        raise CommandError("give exactly one of PIN or --key FILE")
    return doc, s, _resolve_pin("key" if a.key else "pin", a.key or a.pin, pw)


def cmd_pinset_add_active(a) -> int:
    doc, s, pin = _set_and_pin(a)
    _fresh_pin(doc, pin, a.set)
    if len(s["active"]) >= pindoc.MAX_ACTIVE:
        raise CommandError(f"set {a.set} already has {pindoc.MAX_ACTIVE} pins in service")
    s["active"].append(pin)
    _save(a.file, doc)
    _print_set(a.set, s)
    note(f"devices accept {pin} once they have this document (keypin pinset sign ... for the fleet); "
         "move servers to the new key only after that")
    return 0


def cmd_pinset_add_backup(a) -> int:
    doc, s, pin = _set_and_pin(a)
    _fresh_pin(doc, pin, a.set)
    if a.group is None:
        s["backups"].append([pin])
    elif 1 <= a.group <= len(s["backups"]):
        s["backups"][a.group - 1].append(pin)
    else:
        raise CommandError(f"set {a.set} has no backup group {a.group} (it has {len(s['backups'])}; groups count "
                           "from 1, as show prints them)")
    _save(a.file, doc)
    _print_set(a.set, s)
    return 0


def cmd_pinset_retire(a) -> int:
    doc, s, pin = _set_and_pin(a)
    if pin in doc["retired"]:
        raise CommandError(f"{pin} is already retired")
    g = s["backups"]
    if pin in s["active"]:
        if not a.force:
            raise CommandError(f"{pin} is in service in set {a.set}: a live server still uses this key, and once "
                               "retired devices refuse it forever (nothing written; give --force to retire it "
                               "anyway, e.g. after a compromise)")
        s["active"].remove(pin)
        if not s["active"]:
            if not g:
                raise CommandError(f"{pin} is the only key of set {a.set}: add a backup first")
            s["active"] = g.pop(0)
            note(f"backup 1 ({', '.join(s['active'])}) is now in service in set {a.set}")
    else:
        for grp in g:
            if pin in grp:
                grp.remove(pin)
                if not grp:
                    g.remove(grp)
                break
        else:
            raise CommandError(f"{pin} is not in set {a.set}")
    if not g and not s.get("allow_no_backup"):
        if not a.force:
            raise CommandError(f"retiring {pin} would leave set {a.set} without a backup pin (nothing written; add a "
                               "backup first, or --force)")
        s["allow_no_backup"] = True
    doc["retired"].append(pin)
    others = [n for n in pindoc.sets_with(doc, pin) if n != a.set]
    hurt = [h for h in pindoc.purge(doc, [pin]) if h[0] != a.set]  # retired device-wide: it leaves every set
    if hurt and not a.force:
        raise CommandError(f"retiring {pin} would leave set {hurt[0][0]} {hurt[0][1]} (nothing written; --force "
                           "to insist)")
    if others:
        note(f"{pin} also leaves set{'s' if len(others) > 1 else ''} {', '.join(others)} (retired device-wide)")
    _save(a.file, doc)
    _print_set(a.set, s)
    return 0


def cmd_pinset_show(a) -> int:
    doc = pindoc.load(a.file)
    names = [a.set] if a.set else sorted(doc["sets"])
    sets = {n: pindoc.get_set(doc, n) for n in names}
    warnings = pindoc.warnings_for({**doc, "sets": sets})
    if a.json:
        emit_json("pinset show", {"file": a.file, "format": doc["format"], "seq": doc["seq"],
                                  "version": doc["version"], "signer": doc["signer"], "fleet": doc["fleet"],
                                  "retired": doc["retired"], "sets": {n: pindoc._set_out(s) for n, s in sets.items()},
                                  "warnings": warnings})
        return 0
    print(f"{a.file}: {doc['format']} seq {doc['seq']} version {doc['version']} signer {doc['signer'] or 'none'} "
          f"fleet {doc['fleet'] or 'none'}")
    for n, s in sets.items():
        _print_set(n, s)
    for p in doc["retired"]:
        print(f"retired: {p}")
    for w in warnings:
        note(w)
    return 0


def cmd_pinset_list(a) -> int:
    doc = pindoc.load(a.file)
    for n in sorted(doc["sets"]):
        s = doc["sets"][n]
        nb = len(s["backups"])
        print(f"{n} {','.join(s['hosts'])} (policy {s.get('policy', 'leaf')}, {len(s['active'])} in service, "
              f"{nb} backup group{'' if nb == 1 else 's'})")
    print(f"{len(doc['retired'])} retired pin{'' if len(doc['retired']) == 1 else 's'} (device-wide)")
    return 0


def cmd_pinset_set_ca(a) -> int:
    """The set's CA certificates (trust anchors for CA+pin mode), or none with --clear."""
    doc = pindoc.load(a.file)
    s = pindoc.get_set(doc, a.set)
    if bool(a.ca) == bool(a.clear):
        raise CommandError("give --ca FILE (repeat) or --clear")
    if a.clear:
        s.pop("ca", None)
    else:
        ders = []
        for f in a.ca:
            for item in material.load_items(read_input(f), f):
                if item.cert is None or item.kind != "cert":
                    raise CommandError(f"{f}: not a certificate ({item.kind})")
                if item.pin in doc["retired"]:
                    raise CommandError(f"{f}: the key of {item.desc} is retired ({item.pin}): never trusted again")
                ders.append(base64.b64encode(item.cert.public_bytes(serialization.Encoding.DER)).decode())
        s["ca"] = list(dict.fromkeys(ders))
    _save(a.file, doc)
    _print_set(a.set, s)
    return 0


def _set_field(a, field: str, value: str, why_kept: str) -> int:
    """Name the document's fleet or signer: a no-op when it is already that, --force to replace one."""
    doc = pindoc.load(a.file)
    if doc[field] == value:
        print(f"{a.file}: {field} already {value}")
        return 0
    if doc[field] is not None and not a.force:
        raise CommandError(f"{a.file} already names {field} {doc[field]!r}; {why_kept}. "
                           "Give --force to change the document anyway (for devices provisioned from now on)")
    doc[field] = value
    _save(a.file, doc)
    print(f"{field} {value}")
    return 0


def cmd_pinset_set_fleet(a) -> int:
    return _set_field(a, "fleet", pindoc.check_fleet(a.fleet),
                      "devices provisioned with it keep that fleet (an update cannot change it)")


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
    return _set_field(a, "signer", signed.resolve_signer(a.signer or a.key, pw),
                      "devices provisioned with it only change signer through an update it signs "
                      "(keypin pinset sign --new-signer ...)")


def cmd_pinset_sign(a) -> int:
    pw = material.passphrase_from(a.passphrase)
    doc = pindoc.load(a.file)
    key = signed.load_private(a.key, pw)
    new_signer = signed.resolve_signer(a.new_signer, pw) if a.new_signer else None
    data = signed.make_update(doc, a.version, key, new_signer, a.fleet, a.device)
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
    aud = f"fleet {a.fleet or doc['fleet']}" + (f", devices {', '.join(a.device)}" if a.device else "")
    print(f"signed update version {a.version} ({len(data)} bytes, {len(doc['sets'])} set"
          f"{'' if len(doc['sets']) == 1 else 's'}, for {aud}) -> {out}, {out}.version")
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
    p.add_argument("--active", dest="actives", action=_OrderedPins, metavar="PIN",
                   help="a pin in service (repeat for several: dual RSA/ECDSA certificates, cluster nodes)")
    p.add_argument("--active-key", dest="actives", action=_OrderedPins, metavar="FILE",
                   help="a pin in service from a key/cert/CSR (repeat)")
    p.add_argument("--fleet", metavar="F", help="the fleet the devices provisioned with this document belong to "
                   "(signed updates name their fleet; devices of another fleet refuse them)")
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


def args_add_backup(p):
    args_pin_or_key(p)
    p.add_argument("--group", type=int, metavar="K",
                   help="join backup group K (from 1; staged together, e.g. the RSA and ECDSA backup keys) "
                        "instead of adding a new group")


def args_retire(p):
    args_pin_or_key(p)
    p.add_argument("--force", action="store_true",
                   help="retire a pin in service (a live server's key) or leave the set without a backup")


def args_show(p):
    p.add_argument("--set", metavar="NAME", help="show this set only")
    add_json_arg(p)


def args_set_ca(p):
    p.add_argument("--set", required=True, metavar="NAME", help="the set")
    p.add_argument("--ca", action="append", metavar="FILE", help="CA certificate(s), PEM or DER (repeat)")
    p.add_argument("--clear", action="store_true", help="remove the set's CA certificates (pin-only mode)")


def args_set_fleet(p):
    p.add_argument("--fleet", required=True, metavar="F", help="the devices' fleet")
    p.add_argument("--force", action="store_true", help="replace a fleet the document already names")


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
    p.add_argument("--fleet", metavar="F", help="the audience: this fleet's devices (default: the document's fleet)")
    p.add_argument("--device", action="append", metavar="ID",
                   help="only these device ids of the fleet (repeat); others refuse the update")
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
    ("add-active", cmd_pinset_add_active, "put one more key in service (step 1 of a rolling key change)",
     "example:\n  keypin pinset add-active --file pins.json --set api --key keys/node-new.pub", args_pin_or_key),
    ("add-backup", cmd_pinset_add_backup, "add a backup group to a set, or join group K (--group K)",
     "example:\n  keypin pinset add-backup --file pins.json --set api --key keys/backup3.pub", args_add_backup),
    ("retire", cmd_pinset_retire, "retire a pin device-wide (a pin in service needs --force)",
     "example:\n  keypin pinset retire --file pins.json --set api sha256/AAAA...=", args_retire),
    ("show", cmd_pinset_show, "print the document or one set",
     "example:\n  keypin pinset show --file pins.json --set api", args_show),
    ("list", cmd_pinset_list, "one line per set",
     "example:\n  keypin pinset list --file pins.json", args_none),
    ("set-ca", cmd_pinset_set_ca, "the set's CA certificates for CA+pin mode (sent with the next signed update)",
     "example:\n  keypin pinset set-ca --file pins.json --set api --ca isrg-root-x1.pem", args_set_ca),
    ("set-fleet", cmd_pinset_set_fleet, "name the fleet of the devices provisioned with this file",
     "example:\n  keypin pinset set-fleet --file pins.json --fleet plant-a", args_set_fleet),
    ("set-signer", cmd_pinset_set_signer, "name the signer whose updates devices provisioned with this file accept",
     "example:\n  keypin pinset set-signer --file pins.json --key /media/offline/signer.key", args_set_signer),
    ("sign", cmd_pinset_sign, "sign the document's sets as a pin-set update (two lines) for the devices",
     ("example:\n  keypin pinset sign --file pins.json --key /media/offline/signer.key --version 2 "
      "--fleet plant-a --out update.txt"), args_sign),
]

