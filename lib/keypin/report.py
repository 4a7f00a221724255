# Pin-failure reports, in the spirit of HPKP's report-uri and TrustKit. Ring.record is the
# keypin.tls.on_mismatch hook: each mismatch goes into a bounded ring in RAM; the ring is
# written to flash (keypin-reports.json, tmp + rename) at most once per `min_interval` seconds
# and at most `max_writes` times per boot, so a flood of attacker handshakes cannot wear the
# flash out. Reports beyond the bound are counted in "dropped". The app publishes the ring
# after a pinned MQTT connection and then clears it (one remove). A pin store fallback (a bad
# copy of the pin document, keypin.store's `notes`) is recorded as a report too (reason "store: ...").
import json
import sys
import time

from keypin import VERSION

PATH = "keypin-reports.json"


def _now():
    # Unix time if the clock was set (NTP), else None
    t = time.time()
    if time.gmtime(0)[0] == 2000:
        t += 946684800
    return int(t) if t > 1700000000 else None


def firmware():
    v = ".".join(str(x) for x in sys.implementation.version[:3])
    return f"{sys.implementation.name} {v}, keypin {VERSION}"


class Ring:
    def __init__(self, path=PATH, store=None, size=8, min_interval=300, max_writes=4, fs=None):
        if fs is None:
            from keypin.store import _FS
            fs = _FS()
        self.path = path
        self.store = store
        self.size = size
        self.min_ms = min_interval * 1000
        self.max_writes = max_writes
        self._fs = fs
        self.writes = 0  # flash writes in this boot
        self._last = None  # ticks_ms of the last write
        self.unsaved = 0  # reports in RAM, not yet in flash
        self.items = []
        self.dropped = 0
        self._nn = 0  # store notes already recorded
        self.on_flash = fs.exists(path)
        if self.on_flash:
            try:
                d = json.loads(fs.read(path))
                self.items = d["reports"][-size:]
                self.dropped = d["dropped"]
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a torn ring is not worth failing for: start empty

    def record(self, e):
        # e: keypin.PinMismatch (.host .port .pinset .reason .chain)
        r = {"t": _now(), "host": e.host, "port": e.port, "set": e.pinset, "reason": e.reason,
             "chain": [[d, p] for d, p in e.chain], "fw": firmware()}
        s = self.store and self.store.doc["sets"].get(e.pinset)
        if s:
            r["pins"] = {"active": s["active"], "backups": s["backups"]}
        self._add(r)
        self.flush()

    def notes(self):
        # the store's fallback notes not yet recorded -> reports; True if there were any
        n = getattr(self.store, "notes", None) or ()
        new = self._nn < len(n)
        while self._nn < len(n):
            self._add({"t": _now(), "host": None, "port": None, "set": None, "reason": n[self._nn],
                       "chain": [], "fw": firmware()})
            self._nn += 1
        return new

    def _add(self, r):
        self.items.append(r)
        if len(self.items) > self.size:
            self.items.pop(0)
            self.dropped += 1
        self.unsaved += 1

    def flush(self):
        # write the ring if something is unsaved and the rate limit allows it; -> True if written
        self.notes()
        if not self.unsaved or self.writes >= self.max_writes:
            return False
        now = time.ticks_ms()
        if self._last is not None and time.ticks_diff(now, self._last) < self.min_ms:
            return False
        fs = self._fs
        fs.write(self.path + ".new", json.dumps({"reports": self.items, "dropped": self.dropped}).encode())
        fs.rename(self.path + ".new", self.path)
        self.on_flash = True
        self.writes += 1
        self._last = now
        self.unsaved = 0
        return True

    def pending(self):
        self.notes()
        return bool(self.items or self.dropped)

    def payload(self, device):
        return json.dumps({"device": device, "reports": self.items, "dropped": self.dropped})

    def clear(self):
        # after a successful publish: one remove, and only if the ring reached the flash
        self.items = []
        self.dropped = 0
        self.unsaved = 0
        if self.on_flash:
            self._fs.remove(self.path)
            self.on_flash = False
