# The heavy half of keypin.ota, loaded only when a newer release is announced: the checks of
# release.json (cheap things first, the signature, then what it asks for: audience, paths, the
# flash space) and the install into the inactive slot, every file streamed with its size and
# SHA-256 checked as it arrives, release.json written last, then one rename of slot.json.
import hashlib
import json
import os
from binascii import hexlify

from micropython import const

import boot  # type: ignore[import-not-found]  # the slot pointer (the root boot.py)
from keypin import KeypinError, https
from keypin.store import _FS

FORMAT = "keypin-release/1"
SLOTS = ("slot_a", "slot_b")


class Refused(KeypinError):
    pass


_TOP = ["audience", "files", "firmware", "format", "min_version", "signer", "version"]
_CHUNK = const(512)
_BLK = const(4096)  # esp32.Partition block
_PATHCH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/"


class FS(_FS):
    # the store's file layer plus streaming writes and directories; tests swap in a faulty one
    def open(self, path):
        return open(path, "wb")

    def mkdir(self, path):
        os.mkdir(path)

    def rmdir(self, path):
        os.rmdir(path)

    def ls(self, path):
        # -> [(name, is_dir, size)]
        return [(e[0], e[1] == 0x4000, os.stat(path + "/" + e[0])[6]) for e in os.ilistdir(path)]

    def free(self, path):
        # -> (block size, free bytes)
        s = os.statvfs(path)
        return s[0], s[0] * s[4]


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _hex(s):
    return isinstance(s, str) and len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def _path(p):
    if not isinstance(p, str) or not 0 < len(p) <= 80 or p[0] == "/" or p == "release.json" \
            or any(c not in _PATHCH for c in p) or any(x in ("", ".", "..") for x in p.split("/")):
        raise Refused("malformed: bad file path %r" % (p,))


def _fw(m):
    # the running firmware's next OTA partition, only when the release carries an image
    if not m:
        return None
    try:
        from esp32 import Partition
        return Partition(Partition.RUNNING).get_next_update()  # type: ignore[arg-type]
    except (ImportError, OSError) as e:
        raise Refused("a firmware image, but no OTA partition on this board (%r)" % e)


class _Part:
    # a sink writing a firmware image block by block into an esp32.Partition
    def __init__(self, part):
        self.p = part
        self.buf = bytearray(_BLK)
        self.n = 0
        self.blk = 0

    def write(self, d):
        i = 0
        while i < len(d):
            k = min(_BLK - self.n, len(d) - i)
            self.buf[self.n:self.n + k] = d[i:i + k]
            self.n += k
            i += k
            if self.n == _BLK:
                self._out()

    def _out(self):
        for j in range(self.n, _BLK):
            self.buf[j] = 0xFF
        self.p.writeblocks(self.blk, self.buf)
        self.blk += 1
        self.n = 0

    def close(self):
        if self.n:
            self._out()


def verify(o, data, p):
    from keypin.update import Refused as _R
    from keypin.update import signer_key, split
    try:
        line, sig = split(data)
    except _R as e:
        raise Refused(str(e))
    try:
        m = json.loads(line)
    except ValueError:
        raise Refused("malformed: line 1 is not JSON")
    if not isinstance(m, dict) or m.get("format") != FORMAT or sorted(m) != _TOP:
        raise Refused("malformed: want exactly " + ", ".join(_TOP))
    v, have, low = m["version"], p["version"], m["min_version"]
    if not _int(v) or v <= have:
        raise Refused("version %r is not newer than the installed %d (replay?)" % (v, have))
    if not _int(low) or have < low:
        raise Refused("version %d updates only from version %r or later (device has %d)" % (v, low, have))
    if (p.get("bad") or []).count(v) >= 2:
        raise Refused("version %d was rolled back on this device" % v)
    cur = o.signer(p)
    if not cur:
        raise Refused("no release signer on the device (config release.signer)")
    from keypin.ed25519 import verify
    if not verify(signer_key(cur), line, sig):
        raise Refused("bad signature (not signed by %s)" % cur)
    try:
        signer_key(m["signer"])
    except ValueError as e:
        raise Refused("bad signer: %s" % e)
    a, fleet = m["audience"], o.store.doc.get("fleet")
    if not isinstance(a, dict) or not isinstance(a.get("fleet"), str) or any(k not in ("fleet", "devices") for k in a):
        raise Refused("malformed: audience")
    if a["fleet"] != fleet:
        raise Refused("not for this device: fleet %r (device is in %r)" % (a["fleet"], fleet))
    d = a.get("devices")
    if d is not None and (not isinstance(d, list) or o.dev not in d):
        raise Refused("not for this device: device %r is not in the release's devices" % o.dev)
    fl = m["files"]
    if not isinstance(fl, list) or not fl:
        raise Refused("malformed: files")
    seen = set()
    bs, free = o.fs.free(".")
    need = 4 * bs
    for f in fl:
        if not isinstance(f, dict) or sorted(f) != ["path", "sha256", "size"] or not _int(f["size"]) \
                or not _hex(f["sha256"]):
            raise Refused("malformed: file entry %r" % (f,))
        _path(f["path"])
        if f["path"] in seen:
            raise Refused("malformed: %s twice" % f["path"])
        seen.add(f["path"])
        need += (f["size"] + 2 * bs - 1) // bs * bs
    if "main.py" not in seen:
        raise Refused("malformed: no main.py")
    fw = m["firmware"]
    if fw is not None and (not isinstance(fw, dict) or sorted(fw) != ["sha256", "size"] or not _int(fw["size"])
                           or not _hex(fw["sha256"])):
        raise Refused("malformed: firmware")
    part = _fw(fw)
    if fw and part is not None and fw["size"] > part.ioctl(4, 0) * part.ioctl(5, 0):
        raise Refused("firmware image of %d bytes does not fit partition %s" % (fw["size"], part.info()[4]))
    free += _du(o, _other(p))
    if need > free:
        raise Refused("not enough free flash: need %d bytes, %d free" % (need, free))
    return m, part


def _other(p):
    return SLOTS[1] if p["slot"] == SLOTS[0] else SLOTS[0]


def _du(o, d):
    try:
        return sum(_du(o, d + "/" + n) if isdir else sz for n, isdir, sz in o.fs.ls(d))
    except OSError:
        return 0


def _clean(o, d):
    try:
        items = o.fs.ls(d)
    except OSError:
        return
    for n, isdir, _ in items:
        if isdir:
            _clean(o, d + "/" + n)
        else:
            o.fs.remove(d + "/" + n)
    o.fs.rmdir(d)


# ---- installing ----
def _fetch(o, sha, size, sink, what, kw):
    r = https.get(o.url + "blobs/" + sha, stream=True, **kw)
    try:
        if r.status != 200:
            raise Refused("%s: server answered %d" % (what, r.status))
        if r.headers.get("content-length") != str(size):
            raise Refused("%s: Content-Length %s, the release says %d" % (what, r.headers.get("content-length"), size))
        h = hashlib.sha256()
        n = 0
        for d in r.iter_content(_CHUNK):
            n += len(d)
            if n > size:
                raise Refused("%s: longer than %d bytes" % (what, size))
            h.update(d)
            sink.write(d)
        if n != size:
            raise Refused("%s: truncated, %d of %d bytes" % (what, n, size))
        if hexlify(h.digest()).decode() != sha:
            raise Refused("%s: SHA-256 does not match the release" % what)
    finally:
        r.close()
        sink.close()


def install(o, m, part, data, p, kw):
    fs, slot = o.fs, _other(p)
    _clean(o, slot)
    try:
        fs.mkdir(slot)
        for f in m["files"]:
            path = f["path"]
            d = slot
            for x in path.split("/")[:-1]:
                d += "/" + x
                try:
                    fs.mkdir(d)
                except OSError:  # there already
                    pass
            _fetch(o, f["sha256"], f["size"], fs.open(slot + "/" + path), path, kw)
        if part is not None:
            _fetch(o, m["firmware"]["sha256"], m["firmware"]["size"], _Part(part), "firmware", kw)
        fs.write(slot + "/release.json", bytes(data))
    except (OSError, KeypinError) as e:  # nothing switched: the inactive slot goes, the reason stays
        _clean(o, slot)
        raise e if isinstance(e, Refused) else Refused("download failed: %s: %s" % (type(e).__name__, e))
    v = m["version"]
    boot.write({"slot": slot, "version": v, "state": "trial", "boots": 0, "max": o.cfg.get("boots", 3),
                "prev": {"slot": p["slot"], "version": p["version"]}, "fw": part and part.info()[4],
                "bad": p.get("bad") or [],
                "last": {"version": v, "ok": True, "reason": "installed in %s, on trial" % slot}}, fs)
    if part is not None:
        part.set_boot()  # after the switch: boot.py rolls a slot back whose firmware did not boot
    o.log("ota: release %d installed in %s (%d files); rebooting into it" % (v, slot, len(m["files"])))


def fetch(o, data, p, kw):
    # verify release.json (bytes) against the running release p, then install it
    if not isinstance(o.fs, FS):  # the store's file layer, without streaming and directories
        o.fs = FS()
    m, part = verify(o, data, p)
    install(o, m, part, data, p, kw)
