# Pin sets on flash: one document (docs/pin-document.md), written power-safely.
# Write: path.new, then path -> path.old, then path.new -> path (rename is atomic
# on LittleFS). Load: the valid copy with the highest seq among the three.
import hashlib
import json
import os
from binascii import hexlify

from keypin import PinFormatError, StoreError
from keypin.pins import parse_pin

FORMAT = "keypin-pins/1"
_NAMECH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
_HOWTO = "re-provision the pins: 'keypin provision --port PORT --pins pins.json' or ks.pins(...) at the REPL"


class _FS:
    # the file layer; tests swap in a fault-injecting one
    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def write(self, path, data):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()

    def rename(self, a, b):
        os.rename(a, b)

    def remove(self, path):
        os.remove(path)

    def exists(self, path):
        try:
            os.stat(path)
            return True
        except OSError:
            return False


def encode(doc):
    line = json.dumps(doc).encode()
    return line + b"\nsha256:" + hexlify(hashlib.sha256(line).digest()) + b"\n"


def decode(data):
    # -> doc; raises ValueError with the reason
    i = data.find(b"\n")
    if i < 0 or data[i + 1:i + 8] != b"sha256:" or not data.endswith(b"\n"):
        raise ValueError("not a keypin pin document (torn write?)")
    line = data[:i]
    if data[i + 8:-1] != hexlify(hashlib.sha256(line).digest()):
        raise ValueError("integrity check failed")
    doc = json.loads(line)
    validate(doc)
    return doc


def _pins(lst, what):
    if not isinstance(lst, list):
        raise ValueError("%s must be a list" % what)  # noqa: TRY004 (bad document data, not a caller's type)
    for p in lst:
        parse_pin(p)


def validate(doc):
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("format is not %s" % FORMAT)
    for k in ("seq", "version"):
        if not isinstance(doc.get(k), int) or doc[k] < 0:
            raise ValueError("bad %s" % k)
    sets = doc.get("sets")
    if not isinstance(sets, dict):
        raise ValueError("sets must be an object")  # noqa: TRY004 (bad document data, not a caller's type)
    seen: dict = {}
    for name, s in sets.items():
        check_name(name)
        try:
            validate_set(s)
        except PinFormatError as e:
            raise ValueError("set %r: %s" % (name, e))
        for h in s["hosts"]:
            if h in seen:
                raise ValueError("host %r is in sets %r and %r" % (h, seen[h], name))
            seen[h] = name


def check_name(name):
    if not isinstance(name, str) or not 0 < len(name) <= 32 or any(c not in _NAMECH for c in name):
        raise ValueError("bad set name %r: 1..32 of A-Z a-z 0-9 _ . -" % (name,))


def validate_set(s):
    if not isinstance(s, dict):
        raise ValueError("a pin set must be an object")  # noqa: TRY004 (bad document data, not a caller's type)
    hosts = s.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise ValueError("hosts must be a non-empty list")
    for h in hosts:
        if not isinstance(h, str) or not h or h != h.lower() or " " in h:
            raise ValueError("bad host %r (lower-case names only)" % (h,))
    parse_pin(s.get("active"))
    _pins(s.get("backups"), "backups")
    _pins(s.get("retired"), "retired")
    if s.get("policy") not in ("leaf", "any"):
        raise ValueError("policy must be 'leaf' or 'any'")
    allp = [s["active"]] + s["backups"] + s["retired"]
    if len(set(allp)) != len(allp):
        raise ValueError("a pin appears twice")
    if not s["backups"] and not s.get("allow_no_backup"):
        raise ValueError("no backup pin: one lost key would brick the device (allow_no_backup to insist)")


class PinStore:
    def __init__(self, path, fs=None):
        self.path = path
        self._fs = fs or _FS()
        self._dig = {}
        self.doc: dict = {}
        self.load()

    # ---- persistence ----
    def load(self):
        best: dict | None = None
        errs = []
        present = 0
        for p in (self.path, self.path + ".old", self.path + ".new"):
            if not self._fs.exists(p):
                continue
            present += 1
            try:
                d = decode(self._fs.read(p))
            except Exception as e:
                errs.append("%s: %s" % (p, e))
                continue
            if best is None or d["seq"] > best["seq"]:
                best = d
        if best is None:
            # a torn very first write (only .new exists) is the empty old state
            if present and (present > 1 or not self._fs.exists(self.path + ".new")):
                raise StoreError("pin store %s unreadable (%s); %s" % (self.path, "; ".join(errs), _HOWTO))
            best = {"format": FORMAT, "seq": 0, "version": 0, "signer": None, "sets": {}}
        self.doc = best
        self._dig = {}

    def _commit(self, doc):
        validate(doc)
        doc["seq"] = self.doc["seq"] + 1
        data = encode(doc)
        fs, p = self._fs, self.path
        fs.write(p + ".new", data)
        if fs.exists(p):
            if fs.exists(p + ".old"):
                fs.remove(p + ".old")
            fs.rename(p, p + ".old")
        fs.rename(p + ".new", p)
        self.doc = doc
        self._dig = {}

    def _copy(self):
        return json.loads(json.dumps(self.doc))

    # ---- queries ----
    @property
    def seq(self):
        return self.doc["seq"]

    def names(self):
        return sorted(self.doc["sets"])

    def get(self, name):
        s = self.doc["sets"].get(name)
        if s is None:
            raise StoreError("no pin set %r (have: %s)" % (name, ", ".join(self.names()) or "none"))
        return s

    def find(self, host):
        # -> set name covering host, or None
        host = host.lower()
        for n, s in self.doc["sets"].items():
            if host in s["hosts"]:
                return n
        return None

    def digests(self, name):
        # -> (active, [backups], [retired]) as 32-byte digests, cached
        d = self._dig.get(name)
        if d is None:
            s = self.get(name)
            d = (parse_pin(s["active"]), [parse_pin(p) for p in s["backups"]],
                 [parse_pin(p) for p in s["retired"]])
            self._dig[name] = d
        return d

    # ---- mutations (each one atomic document replace) ----
    # ---- edits from the REPL or the CLI: the code lives in keypin.storeedit, loaded on use ----
    def put(self, name, hosts, active, backups, *, policy="leaf", allow_no_backup=False):
        from keypin.storeedit import put
        put(self, name, hosts, active, backups, policy, allow_no_backup)

    def add_backup(self, name, pin):
        from keypin.storeedit import add_backup
        add_backup(self, name, pin)

    def retire(self, name, pin, force=False):
        from keypin.storeedit import retire
        retire(self, name, pin, force)

    # ---- mutations the device makes itself (each one atomic document replace) ----
    def rotate(self, name, k, pin):
        # commit a confirmed move to backup k (whose pin is `pin`): the old active and
        # backups before k are retired. Returns False if the store already moved on.
        doc = self._copy()
        s = self._set(doc, name)
        if s["active"] == pin:
            return False
        if k >= len(s["backups"]) or s["backups"][k] != pin:
            raise StoreError("set %r changed during the connection; rotation to %s not applied" % (name, pin))
        old = s["active"]
        s["retired"] += [old] + s["backups"][:k]
        s["active"] = pin
        s["backups"] = s["backups"][k + 1:]
        if not s["backups"]:
            s["allow_no_backup"] = True  # the device must keep working; the status reports it
        self._try(doc)
        print("keypin: rotated set %r: %s -> %s (seq %d)" % (name, old, pin, self.seq))
        return True

    def replace(self, doc):
        # a whole new document (signed update, keypin.update): retired pins are never dropped;
        # version and signer come from doc, seq from the store. One power-safe write.
        doc.setdefault("seq", self.doc["seq"])
        for n, s in self.doc["sets"].items():
            ns = doc["sets"].get(n)
            if ns is not None:
                for p in s["retired"]:
                    if p not in ns["retired"]:
                        ns["retired"].append(p)
        self._try(doc)

    def _set(self, doc, name):
        s = doc["sets"].get(name)
        if s is None:
            raise StoreError("no pin set %r (have: %s)" % (name, ", ".join(self.names()) or "none"))
        return s

    def _try(self, doc):
        try:
            validate(doc)
        except (ValueError, PinFormatError) as e:
            raise StoreError(str(e))
        self._commit(doc)
