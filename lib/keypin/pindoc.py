# The pin document v2 (docs/pin-document.md): encode, decode, validate. Shared by keypin.store,
# keypin.storeedit and keypin.update (none of them imports another); the v1 migration, the CA
# anchors and the purge of retired pins live in keypin.pindocx, loaded only when needed.
import hashlib
import json
from binascii import hexlify

from micropython import const

from keypin import PinFormatError
from keypin.pins import parse_pin

FORMAT = "keypin-pins/2"
FORMAT1 = "keypin-pins/1"
_MAXACT = const(8)
_NAMECH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
_TOP = ("format", "seq", "version", "signer", "fleet", "retired", "sets")
_SETK = ("hosts", "active", "backups", "policy", "ca", "allow_no_backup")


def empty():
    return {"format": FORMAT, "seq": 0, "version": 0, "signer": None, "fleet": None, "retired": [], "sets": {}}


def encode(doc):
    line = json.dumps(doc).encode()
    return line + b"\nsha256:" + hexlify(hashlib.sha256(line).digest()) + b"\n"


def parse(data):
    # -> the JSON object of line 1 after the integrity check; raises ValueError with the reason
    i = data.find(b"\n")
    if i < 0 or data[i + 1:i + 8] != b"sha256:" or not data.endswith(b"\n"):
        raise ValueError("not a keypin pin document (torn write?)")
    line = data[:i]
    if data[i + 8:-1] != hexlify(hashlib.sha256(line).digest()):
        raise ValueError("integrity check failed")
    try:
        return json.loads(line)
    except ValueError:
        raise ValueError("line 1 is not JSON")


def decode(data):
    # -> v2 doc (a v1 document is migrated); raises ValueError with the reason
    doc = upgrade(parse(data))
    validate(doc)
    return doc


def upgrade(doc):
    # a keypin-pins/1 document -> v2 (keypin.pindocx, loaded only for one); anything else as is
    if isinstance(doc, dict) and doc.get("format") == FORMAT1:
        from keypin.pindocx import migrate
        return migrate(doc)
    return doc


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _pinlist(lst, what):
    if not isinstance(lst, list):
        raise ValueError("%s must be a list" % what)  # noqa: TRY004 (bad document data)
    for p in lst:
        parse_pin(p)
    return lst


def check_name(name):
    if not isinstance(name, str) or not 0 < len(name) <= 32 or any(c not in _NAMECH for c in name):
        raise ValueError("bad set name %r: 1..32 of A-Z a-z 0-9 _ . -" % (name,))


def set_pins(s):
    # every pin of a set: active, then the backup groups in order
    out = list(s["active"])
    for g in s["backups"]:
        out += g
    return out


def validate_set(s):
    if not isinstance(s, dict):
        raise ValueError("a pin set must be an object")  # noqa: TRY004 (bad document data)
    for k in s:
        if k not in _SETK:
            raise ValueError("unknown field %r" % (k,))
    hosts = s.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise ValueError("hosts must be a non-empty list")
    for h in hosts:
        if not isinstance(h, str) or not h or h != h.lower() or " " in h:
            raise ValueError("bad host %r (lower-case names only)" % (h,))
    if len(set(hosts)) != len(hosts):
        raise ValueError("a host is listed twice")
    a = _pinlist(s.get("active"), "active")
    if len(a) > _MAXACT:
        raise ValueError("active must list at most %d pins" % _MAXACT)
    b = s.get("backups")
    if not isinstance(b, list):
        raise ValueError("backups must be a list of groups")  # noqa: TRY004 (bad document data)
    for g in b:
        if not _pinlist(g, "a backup group"):
            raise ValueError("a backup group is empty")
    if s.get("policy") not in ("leaf", "any"):
        raise ValueError("policy must be 'leaf' or 'any'")
    if "allow_no_backup" in s and s["allow_no_backup"] is not True:
        raise ValueError("allow_no_backup must be true")
    if "ca" in s:
        ca = s["ca"]
        if not isinstance(ca, list) or not ca or any(not isinstance(c, str) or not c for c in ca):
            raise ValueError("ca must be a non-empty list of base64 DER certificates")
    allp = set_pins(s)
    if len(set(allp)) != len(allp):
        raise ValueError("a pin appears twice")
    if not b and not s.get("allow_no_backup"):
        raise ValueError("no backup pin: one lost key would brick the device (allow_no_backup to insist)")
    if not a and not b and not s.get("allow_no_backup"):
        raise ValueError("no pin in service and no backup group")


def validate(doc):
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("format is not %s" % FORMAT)
    for k in doc:
        if k not in _TOP:
            raise ValueError("unknown field %r" % (k,))
    for k in ("seq", "version"):
        if not _int(doc.get(k)):
            raise ValueError("bad %s" % k)
    sg = doc.get("signer")
    if sg is not None and not isinstance(sg, str):
        raise ValueError("bad signer")
    f = doc.get("fleet")
    if f is not None and (not isinstance(f, str) or not 0 < len(f) <= 64 or "/" in f or "+" in f or "#" in f):
        raise ValueError("bad fleet %r: null or 1..64 characters without / + #" % (f,))
    ret = _pinlist(doc.get("retired"), "retired")
    sets = doc.get("sets")
    if not isinstance(sets, dict):
        raise ValueError("sets must be an object")  # noqa: TRY004 (bad document data)
    seen: dict = {}
    if len(set(ret)) != len(ret):
        raise ValueError("a pin is retired twice")
    for name, s in sets.items():
        check_name(name)
        try:
            validate_set(s)
            for p in set_pins(s):
                if p in ret:
                    raise ValueError("pin %s is retired and never trusted again" % p)
            if "ca" in s:
                from keypin.pindocx import ca_pins
                for p in ca_pins(s):
                    if p in ret:
                        raise ValueError("a ca certificate's key %s is retired" % p)
        except (ValueError, PinFormatError) as e:
            raise ValueError("set %r: %s" % (name, e))
        for h in s["hosts"]:
            if h in seen:
                raise ValueError("host %r is in sets %r and %r" % (h, seen[h], name))
            seen[h] = name
