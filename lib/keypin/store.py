# Pin sets on flash: the pin document v2 (keypin.pindoc, docs/pin-document.md), kept in two
# current copies P and P.2. A write of seq n+1: P.new, P.2.new, rename P.new -> P, rename
# P.2.new -> P.2 (rename is atomic on LittleFS), so the newest fully written document is always
# in two files. Load: the valid copy with the highest seq among P, P.2, P.new, P.2.new (and a
# v1 P.old, migration only); a fallback is logged, noted in `notes` and repaired before use.
# Resident: load, find, get, digests. The document code (keypin.pindoc, .pindocx) and the writes
# (keypin.storeedit: edits, rotation, signed-update replace) are imported for a load or a write
# and dropped again (_drop), so that steady state holds none of their bytecode.
import os
import sys

import keypin
from keypin import StoreError
from keypin.pins import parse_pin

_open = open
_HOWTO = "re-provision the pins: 'keypin provision --port PORT --pins pins.json' or ks.pins(...) at the REPL"
_stores: dict = {}
_LAZY = ("pindoc", "pindocx", "storeedit")


def _drop():
    # let the GC have the document code and the edits until the next load or write
    for n in _LAZY:
        if sys.modules.pop("keypin." + n, None) is not None and n in keypin.__dict__:
            delattr(keypin, n)


def _norm(path):
    # one key per file: absolute, without "", "." and ".." parts ("./p", "a//p", "x/../p" -> "/cwd/p")
    if not path.startswith("/"):
        path = os.getcwd() + "/" + path
    out: list = []
    for c in path.split("/"):
        if c == "..":
            if out:
                out.pop()
        elif c and c != ".":
            out.append(c)
    return "/" + "/".join(out)


def open(path, fs=None):
    k = _norm(path)
    st = _stores.get(k)
    if st is None:
        st = _stores[k] = PinStore(path, fs)
    return st


class _FS:
    # the file layer; tests swap in a fault-injecting one
    def read(self, path):
        with _open(path, "rb") as f:
            return f.read()

    def write(self, path, data):
        with _open(path, "wb") as f:
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


COPIES = ("", ".2", ".new", ".2.new")


class PinStore:
    def __init__(self, path, fs=None):
        self.path = path
        self._fs = fs or _FS()
        self._dig: dict = {}
        self.doc: dict = {}
        self.notes: list = []  # fallbacks seen by load() (keypin.report records them)
        # The device-wide retired digests: ONE list object, updated in place at every load and
        # write, shared by every Checker (also one built before the change, or whose handshake is
        # still running): a key retired now is refused by every handshake from now on.
        self.retired: list = []
        self.gen = 0  # grows at every load and write: streams recheck their key when it moved
        self.load()

    def adopt(self, doc):
        # doc is now the store's state (after a load or a write)
        self.doc = doc
        self._dig = {}
        self.retired[:] = [parse_pin(p) for p in doc["retired"]]
        self.gen += 1

    # ---- persistence ----
    def _scan(self):
        # -> (best doc or None, its bytes, {suffix: bytes or None}, [(suffix, error)], best is v1)
        from keypin.pindoc import parse, upgrade, validate
        fs, p = self._fs, self.path
        raw: dict = {}
        errs = []
        best = bdata = None
        v1 = False
        sfx: tuple = COPIES
        if not (fs.exists(p) or fs.exists(p + ".2") or fs.exists(p + ".2.new")):
            # a keypin-pins/1 store's previous generation: only while P is missing (a v1 write cut
            # between its renames); P present but invalid never falls back to it (it may hold a
            # key retired since): StoreError
            sfx = COPIES + (".old",)
        for x in sfx:
            if not fs.exists(p + x):
                raw[x] = None
                continue
            try:
                data = raw[x] = fs.read(p + x)
                o = parse(data)
                d = upgrade(o)
                validate(d)
            except Exception as e:
                errs.append((x, str(e)))
                continue
            if best is None or d["seq"] > best["seq"]:
                best, bdata, v1 = d, data, d is not o
        return best, bdata, raw, errs, v1

    def load(self):
        try:
            self._load()
        finally:
            _drop()

    def _load(self):
        best, bdata, raw, errs, v1 = self._scan()
        p = self.path
        if best is None:
            # first boot, or a torn very first write (only temporaries exist): the empty store
            if raw.get("") is not None or raw.get(".2") is not None or raw.get(".old") is not None:
                raise StoreError("pin store %s unreadable (%s); %s" % (
                    p, "; ".join("%s: %s" % (p + x, e) for x, e in errs), _HOWTO))
            from keypin.pindoc import empty
            best = empty()
        elif raw[""] != bdata or raw[".2"] != bdata or v1:
            # (a keypin-pins/1 document is migrated and stored as two v2 copies at once; P.old goes)
            from keypin.pindoc import encode
            from keypin.pindocx import repair
            repair(self, best, bdata, raw, errs, v1, encode(best) if v1 else bdata)
        self.adopt(best)

    def _write(self, data, raw=None):
        fs, p = self._fs, self.path
        new = []
        try:
            for x in (".new", ".2.new"):
                if raw is None or raw.get(x) != data:
                    new.append(x)
                    fs.write(p + x, data)
            fs.rename(p + ".new", p)
        except OSError:
            # (ENOSPC, I/O error) a write reported as failed must not be applied by a later load:
            # the temporaries it made go (best effort; a repair keeps the copies it found)
            for x in new:
                try:
                    fs.remove(p + x)
                except OSError:
                    pass
            raise
        try:
            fs.rename(p + ".2.new", p + ".2")
        except OSError as e:
            # P holds the new document and P.2.new its second copy: written; the next load repairs P.2
            print("keypin: store: %s.2: %s (the next load repairs it)" % (p, e))
        if fs.exists(p + ".old"):
            fs.remove(p + ".old")  # a keypin-pins/1 leftover: the two copies replace it

    def _copy(self):
        import json
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
        # -> (active, backups, groups, retired): 32-byte digests of the active pins, of every backup
        # pin (flat), the group index of each backup pin, and the device-wide retired pins.
        # Cached; a new tuple after every load or write (the TLS context cache compares identity).
        d = self._dig.get(name)
        if d is None:
            s = self.get(name)
            r = self.retired
            b = []
            g = []
            for i, grp in enumerate(s["backups"]):
                for p in grp:
                    b.append(parse_pin(p))
                    g.append(i)
            d = ([parse_pin(p) for p in s["active"]], b, g, r)
            self._dig[name] = d
        return d

    def ca_ders(self, name):
        # the set's CA certificates (DER bytes) for CA+pin mode, or None; cached like digests
        k = "ca:" + name
        if k not in self._dig:
            s = self.get(name)
            if "ca" in s:
                from keypin.pindocx import ca_ders
                self._dig[k] = ca_ders(s)
                _drop()
            else:
                self._dig[k] = None
        return self._dig[k]

    # ---- writes: edits from the REPL or the CLI, and the device's own (keypin.storeedit) ----
    def _edit(self, fn, *a):
        import keypin.storeedit
        try:
            return getattr(keypin.storeedit, fn)(self, *a)
        finally:
            _drop()

    def put(self, name, hosts, active, backups, *, policy="leaf", allow_no_backup=False, ca=None):
        self._edit("put", name, hosts, active, backups, policy, allow_no_backup, ca)

    def add_active(self, name, pin):
        self._edit("add_active", name, pin)

    def add_backup(self, name, pin, group=None):
        # group None: a new group at the end; k: join backup group k (0 = the next one)
        self._edit("add_backup", name, pin, group)

    def retire(self, name, pin, force=False):
        self._edit("retire", name, pin, force)

    def set_fleet(self, fleet, force=False):
        # the fleet signed updates must name: sets a null fleet; changing one needs force
        self._edit("set_fleet", fleet, force)

    def rotate(self, name, k, pin):
        # commit a confirmed move to backup group k (pin: the pin the server presented): the
        # active pins and the groups before k are retired. Re-applied to the flash's state if
        # that is newer. Returns False if the store already moved on.
        return self._edit("rotate", name, k, pin)

    def replace(self, doc):
        # a whole new document (signed update, keypin.update): retired pins are never dropped,
        # the fleet stays; version and signer come from doc, seq from the store. One power-safe write.
        self._edit("replace", doc)
