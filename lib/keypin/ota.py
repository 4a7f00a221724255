# Software updates over pinned HTTPS (docs/operations.md, "Software releases"); loaded only when
# config.json has "release": {"url": "https://host/rel/", "signer": "ed25519/...", "interval": s,
# "boots": 3}. `keypin release --publish` serves <url>release.version (an integer), then
#   <url>release.json   {"format": "keypin-release/1", "version": V, "min_version": M,
#                        "audience": {"fleet": F[, "devices": [ids]]}, "signer": "ed25519/<next>",
#                        "files": [{"path", "size", "sha256"}...], "firmware": {"size", "sha256"}|null}
#                       ed25519:<base64 signature over line 1>
#   <url>blobs/<sha256> every file and the firmware image.
# The signer is the one the running release named (its slot's release.json), or config's for the
# factory software. Files stream into the inactive slot (boot.py) with size and SHA-256 checked as
# they arrive; release.json is written last; one rename of slot.json switches; the new software
# commits after its pinned self-test (App hook after_cycle). The pin store is never touched.
import hashlib
import json
import os
import time
from binascii import hexlify

from micropython import const

import boot  # type: ignore[import-not-found]  # the slot pointer (the root boot.py)
from keypin import KeypinError, https
from keypin.store import _FS

FORMAT = "keypin-release/1"
STATE = "keypin-ota.json"
SLOTS = ("slot_a", "slot_b")
_TOP = ["audience", "files", "firmware", "format", "min_version", "signer", "version"]
_CHUNK = const(512)
_BLK = const(4096)  # esp32.Partition block
_PATHCH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/"


class Refused(KeypinError):
    pass


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


class Ota:
    def __init__(self, cfg, store, device_id, fs=None, log=print):
        self.url = cfg["url"].rstrip("/") + "/"
        self.cfg = cfg
        self.store = store
        self.dev = device_id
        self.fs = fs or FS()
        self.log = log
        self.next = 0
        self.writes = 0
        try:
            self.state = json.loads(self.fs.read(STATE))
        except (OSError, ValueError):
            self.state = {}

    # ---- what runs ----
    def signer(self, p):
        if p["slot"]:
            try:
                return json.loads(self.fs.read(p["slot"] + "/release.json").split(b"\n", 1)[0])["signer"]
            except (OSError, ValueError, KeyError):
                return None
        return self.cfg.get("signer")

    def status(self):
        p = boot.read()
        return {"version": p["version"], "slot": p["slot"] or "factory", "state": p.get("state"),
                "last": p.get("last"), "last_check": self.state.get("last")}

    # ---- checking a release: cheap things first, the signature, then what it asks for ----
    def verify(self, data, p):
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
        if v in (p.get("bad") or ()):
            raise Refused("version %d was rolled back on this device" % v)
        cur = self.signer(p)
        if not cur:
            raise Refused("no release signer on the device (config release.signer)")
        from keypin.ed25519 import verify
        if not verify(signer_key(cur), line, sig):
            raise Refused("bad signature (not signed by %s)" % cur)
        try:
            signer_key(m["signer"])
        except ValueError as e:
            raise Refused("bad signer: %s" % e)
        a, fleet = m["audience"], self.store.doc.get("fleet")
        if not isinstance(a, dict) or not isinstance(a.get("fleet"), str) or any(k not in ("fleet", "devices") for k in a):
            raise Refused("malformed: audience")
        if a["fleet"] != fleet:
            raise Refused("not for this device: fleet %r (device is in %r)" % (a["fleet"], fleet))
        d = a.get("devices")
        if d is not None and (not isinstance(d, list) or self.dev not in d):
            raise Refused("not for this device: device %r is not in the release's devices" % self.dev)
        fl = m["files"]
        if not isinstance(fl, list) or not fl:
            raise Refused("malformed: files")
        seen = set()
        bs, free = self.fs.free(".")
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
        free += self._du(self._other(p))
        if need > free:
            raise Refused("not enough free flash: need %d bytes, %d free" % (need, free))
        return m, part

    def _other(self, p):
        return SLOTS[1] if p["slot"] == SLOTS[0] else SLOTS[0]

    def _du(self, d):
        try:
            return sum(self._du(d + "/" + n) if isdir else sz for n, isdir, sz in self.fs.ls(d))
        except OSError:
            return 0

    def _clean(self, d):
        try:
            items = self.fs.ls(d)
        except OSError:
            return
        for n, isdir, _ in items:
            if isdir:
                self._clean(d + "/" + n)
            else:
                self.fs.remove(d + "/" + n)
        self.fs.rmdir(d)

    # ---- installing ----
    def _fetch(self, sha, size, sink, what, kw):
        r = https.get(self.url + "blobs/" + sha, stream=True, **kw)
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

    def install(self, m, part, data, p, **kw):
        fs, slot = self.fs, self._other(p)
        self._clean(slot)
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
                self._fetch(f["sha256"], f["size"], fs.open(slot + "/" + path), path, kw)
            if part is not None:
                self._fetch(m["firmware"]["sha256"], m["firmware"]["size"], _Part(part), "firmware", kw)
            fs.write(slot + "/release.json", bytes(data))
        except (OSError, KeypinError) as e:  # nothing switched: the inactive slot goes, the reason stays
            self._clean(slot)
            raise e if isinstance(e, Refused) else Refused("download failed: %s: %s" % (type(e).__name__, e))
        v = m["version"]
        boot.write({"slot": slot, "version": v, "state": "trial", "boots": 0, "max": self.cfg.get("boots", 3),
                    "prev": {"slot": p["slot"], "version": p["version"]}, "fw": part and part.info()[4],
                    "bad": p.get("bad") or [],
                    "last": {"version": v, "ok": True, "reason": "installed in %s, on trial" % slot}}, fs)
        if part is not None:
            part.set_boot()  # after the switch: boot.py rolls a slot back whose firmware did not boot
        self.log("ota: release %d installed in %s (%d files); rebooting into it" % (v, slot, len(m["files"])))

    def check(self, **kw):
        # -> "current", "installed" (reboot now) or "refused"; transport errors raise
        p = boot.read()
        r = https.get(self.url + "release.version", max_body=32, **kw)
        if r.status != 200:
            raise KeypinError("ota: %srelease.version answered %d" % (self.url, r.status))
        try:
            if int(r.content.strip()) <= p["version"]:
                return "current"
        except ValueError:
            raise KeypinError("ota: release.version is not an integer")
        r = https.get(self.url + "release.json", max_body=8192, **kw)
        if r.status != 200:
            raise KeypinError("ota: %srelease.json answered %d" % (self.url, r.status))
        data = r.content
        try:
            m, part = self.verify(data, p)
            self.install(m, part, data, p, **kw)
        except Refused as e:
            self._refused(str(e), data)
            return "refused"
        return "installed"

    def _refused(self, why, data):
        try:
            v = json.loads(bytes(data).split(b"\n", 1)[0]).get("version")
        except (ValueError, AttributeError):
            v = None
        self.log("ota: refused release %s: %s" % (v, why))
        last = self.state.get("last") or {}
        st = {"refused": self.state.get("refused", 0) + 1, "last": {"version": v, "ok": False, "reason": why}}
        self.state = st
        if last.get("version") == v and last.get("reason") == why or self.writes >= 4:
            return  # flash only for a new reason, at most 4 times per boot
        self.writes += 1
        try:
            self.fs.write(STATE + ".new", json.dumps(st).encode())
            self.fs.rename(STATE + ".new", STATE)
        except OSError as e:
            self.log("ota: state not saved: %s" % e)

    # ---- after the reboot: the new software proves itself, then commits ----
    def commit(self):
        p = boot.read()
        if p.get("state") != "trial":
            return False
        if p.get("fw"):
            from esp32 import Partition
            Partition.mark_app_valid_cancel_rollback()  # firmware first: a cut here re-tests, never mixes
        p["state"] = "ok"
        p["last"] = {"version": p["version"], "ok": True, "reason": "committed after the pinned self-test"}
        boot.write(p, self.fs)
        self.log("ota: release %d committed in %s" % (p["version"], p["slot"]))
        return True

    def selftest(self, app):
        # a pinned connection and a genuine reply from every configured server
        c = app.cfg
        if c.get("mqtt") and not (app.mq and app.mq.connected):
            return False
        if c.get("https") and not app.checkins:
            return False
        r = https.get(self.url + "release.version", max_body=32, store=app.store, cadata=app.cadata,
                      timeout=self.cfg.get("timeout", 10))
        return r.status == 200

    def after_cycle(self, app, ok):
        # the App hook, after each cycle: commit a trial, or look for a newer release
        p = boot.read()
        if p.get("state") == "trial":
            try:
                ok = ok and self.selftest(app)
            except Exception as e:
                self.log("ota: self-test failed: %s" % e)
                ok = False
            if not ok:
                boot.reset("release %d failed its pinned self-test (boot %d of %d)"
                           % (p["version"], p.get("boots", 0), p.get("max", 3)))
            self.commit()
            app.publish_status()
            return True
        if time.time() < self.next:
            return None
        self.next = time.time() + self.cfg.get("interval", 3600)
        try:
            r = self.check(store=app.store, cadata=app.cadata, timeout=self.cfg.get("timeout", 10))
        except Exception as e:
            app._fail("release check", e)
            return False
        if r != "current":
            app.publish_status()
        if r == "installed":
            boot.reset("release installed")
        return True
