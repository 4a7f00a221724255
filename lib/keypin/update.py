# Signed pin-set updates v2 (docs/pin-document.md, "Signed updates"). Two lines:
#   {"format": "keypin-pins/2", "version": V, "signer": "ed25519/...", "audience": {"fleet": F,
#    "devices": [...]?}, "retired": [...], "sets": {...}}
#   ed25519:<base64 of the 64-byte signature over the exact bytes of line 1>
# The device's current signer must have signed it; V must be newer than the store's version; it
# must be for this device's fleet (and id); every set keeps a backup group; no retired pin comes
# back; no host the device must reach is left without a set. Applied with PinStore.replace (one
# power-safe write). The outcome goes to keypin-state.json (tmp + rename), only when it changes.
import hashlib
import json
import time
from binascii import a2b_base64, b2a_base64, hexlify

from micropython import const

from keypin import KeypinError

MAX_SIZE = const(8192)
_MAXREF = const(4)  # refusals written to flash per boot; the rest are counted in RAM
_TOP = ("format", "version", "signer", "audience", "retired", "sets")
STATE = "keypin-state.json"


class Refused(KeypinError):
    pass


def _now():
    # Unix time if the clock was set (NTP), else None
    t = time.time()
    if time.gmtime(0)[0] == 2000:
        t += 946684800
    return int(t) if t > 1700000000 else None


def signer_key(signer):
    # "ed25519/<base64>" -> 32 bytes; ValueError if not canonical or a weak (small-order) key
    if not isinstance(signer, str) or not signer.startswith("ed25519/"):
        raise ValueError("signer must be ed25519/<base64 of 32 bytes>")
    try:
        k = a2b_base64(signer[8:])
    except ValueError:
        k = b""
    if len(k) != 32 or b2a_base64(k)[:-1].decode() != signer[8:]:
        raise ValueError(f"signer {signer!r} is not a canonical 32-byte key")
    from keypin.ed25519 import check_key
    try:
        check_key(k)
    except ValueError as e:
        raise ValueError(f"signer {signer!r} refused: {e}")
    return k


def split(data):
    # -> (line 1 bytes, 64-byte signature)
    if len(data) > MAX_SIZE:
        raise Refused(f"malformed: larger than {MAX_SIZE} bytes")
    data = bytes(data)
    i = data.find(b"\n")
    sig = data[i + 1:]
    if sig.endswith(b"\n"):
        sig = sig[:-1]
    if i < 0 or not sig.startswith(b"ed25519:") or b"\n" in sig:
        raise Refused("malformed: want two lines, JSON then ed25519:<signature>")
    try:
        s = a2b_base64(sig[8:])
    except ValueError:
        s = b""
    if len(s) != 64:
        raise Refused("malformed: the signature is not 64 bytes of base64")
    return data[:i], s


def _audience(a):
    # the shape only (malformed otherwise)
    if not isinstance(a, dict) or not isinstance(a.get("fleet"), str) or any(k not in ("fleet", "devices") for k in a):
        return False
    d = a.get("devices", [])
    return isinstance(d, list) and all(isinstance(x, str) for x in d)


def check(store, data, device=None, hosts=(), cadata=False):
    # -> the new document; raises Refused(reason). Cheap checks before the signature.
    # device: this device's id; hosts: the hosts it is configured to reach (never stranded);
    # cadata: the app gives connections CA certificates (policy "any" works without "ca")
    line, sig = split(data)
    try:
        doc = json.loads(line)
    except ValueError:
        raise Refused("malformed: line 1 is not JSON")
    if not isinstance(doc, dict) or doc.get("format") != "keypin-pins/2" or sorted(doc) != sorted(_TOP) \
            or not _audience(doc["audience"]) or not isinstance(doc["retired"], list):
        raise Refused("malformed: want exactly format keypin-pins/2, version, signer, audience, retired, sets")
    v = doc["version"]
    have = store.doc["version"]
    if not isinstance(v, int) or isinstance(v, bool) or v <= have:
        raise Refused(f"version {v!r} is not newer than the device's {have} (replay?)")
    cur = store.doc.get("signer")
    if not cur:
        raise Refused("no signer provisioned on the device")
    from keypin.ed25519 import verify
    try:
        k = signer_key(cur)
    except ValueError as e:
        raise Refused(f"bad signer on the device: {e}")
    if not verify(k, line, sig):
        raise Refused(f"bad signature (not signed by {cur})")
    try:
        signer_key(doc["signer"])
    except ValueError as e:
        raise Refused(f"bad signer: {e}")
    a = doc.pop("audience")
    mine = store.doc.get("fleet")
    if a["fleet"] != mine:
        raise Refused("not for this device: fleet %r (device is in %s)" % (
            a["fleet"], "no fleet" if mine is None else repr(mine)))
    if "devices" in a and device not in a["devices"]:
        raise Refused(f"not for this device: device {device!r} is not in the update's devices")
    sets = doc["sets"]
    if not isinstance(sets, dict) or not sets:
        raise Refused("malformed: sets must be a non-empty object")
    retired = store.doc["retired"]
    from keypin.pindoc import set_pins
    from keypin.pindocx import ca_pins
    for n, s in sets.items():
        if not isinstance(s, dict) or any(not isinstance(s.get(k), list) for k in ("hosts", "active", "backups")) \
                or any(not isinstance(g, list) for g in s["backups"]):
            raise Refused(f"malformed: set {n!r}")
        if not s["backups"]:
            raise Refused(f"set {n!r} would have no backup group")
    for n, s in sets.items():
        try:
            ca = ca_pins(s)
        except (ValueError, KeypinError) as e:
            raise Refused(f"invalid: set {n!r}: {e}")
        for p in set_pins(s) + ca:
            if p in retired:
                raise Refused(f"pin {p} was retired on this device and never comes back (set {n!r})")
    for h in hosts:
        if not h:
            continue
        for n, s in sets.items():
            if h.lower() in s.get("hosts", ()):
                if s.get("policy") == "any" and not s.get("ca") and not cadata:
                    raise Refused(f"host {h!r} would be unconnectable: set {n!r} has policy 'any' "
                                  "without 'ca' and the app has no cadata")
                break
        else:
            raise Refused(f"host {h!r} would be in no pin set")
    doc["seq"] = store.doc["seq"]
    doc["fleet"] = mine
    for p in retired:
        if p not in doc["retired"]:
            doc["retired"].append(p)
    from keypin.pindoc import validate
    try:
        validate(doc)
    except (ValueError, KeypinError) as e:
        raise Refused(f"invalid: {e}")
    return doc


class Updater:
    def __init__(self, store, path=STATE, log=print, device_id=None, hosts=(), cadata=False):
        # device_id: this device's id (an update naming devices must name it); hosts: every host
        # the device must keep reaching (MQTT, HTTPS check-in, update URL), never stranded;
        # cadata: True when the app connects with CA certificates (config "cadata")
        self.store = store
        self.cadata = bool(cadata)
        self.device_id = device_id
        self.hosts = tuple(hosts)
        self.path = path
        self.log = log
        self._fs = store._fs
        self.refusals = 0  # flash writes of refusals in this boot
        try:
            self.state = json.loads(self._fs.read(path))
        except (OSError, ValueError):  # none yet, or torn: the store's version is what counts
            self.state = {}
        if not isinstance(self.state, dict):
            self.state = {}

    @property
    def last(self):
        return self.state.get("last")

    def _save(self, st):
        fs = self._fs
        fs.write(self.path + ".new", json.dumps(st).encode())
        fs.rename(self.path + ".new", self.path)

    def offer(self, data, via="?"):
        # -> "applied", "current" (this very update is installed) or "refused"
        if not data:
            return "current"  # an empty retained message: nothing offered
        sha = hexlify(hashlib.sha256(bytes(data).split(b"\n", 1)[0]).digest()).decode()
        st = self.state
        if sha == st.get("sha") and st.get("version") == self.store.doc["version"]:
            return "current"
        try:
            doc = check(self.store, data, self.device_id, self.hosts, self.cadata)
        except Refused as e:
            return self._refused(str(e), data, via)
        finally:
            from keypin.store import _drop
            _drop()  # the document code check() imported (a refusal writes no store)
        old = self.store.doc.get("signer")
        self.store.replace(doc)
        new = {"version": doc["version"], "sha": sha, "refused": st.get("refused", 0),
               "last": {"version": doc["version"], "ok": True, "reason": "applied", "via": via, "t": _now()}}
        try:
            self._save(new)
        except OSError as e:  # the store already holds the update; the state is advisory
            self.log(f"update: state not saved: {e}")
        self.state = new
        new_signer = "" if doc["signer"] == old else ", signer is now " + doc["signer"]
        self.log(f"update: applied version {doc['version']} via {via} (seq {self.store.seq}){new_signer}")
        return "applied"

    def _refused(self, why, data, via):
        try:
            v = json.loads(bytes(data).split(b"\n", 1)[0]).get("version")
        except (ValueError, AttributeError):
            v = None
        self.log(f"update: refused{'' if v is None else ' version ' + str(v)} via {via}: {why}")
        st = dict(self.state)
        st["refused"] = st.get("refused", 0) + 1
        last = st.get("last") or {}
        st["last"] = {"version": v, "ok": False, "reason": why, "via": via, "t": _now()}
        # flash only when the reason is new, and at most _MAXREF times per boot
        if (last.get("ok") is False and last.get("version") == v and last.get("reason") == why) \
                or self.refusals >= _MAXREF:
            self.state = st
            return "refused"
        self.refusals += 1
        try:
            self._save(st)
        except OSError as e:
            self.log(f"update: state not saved: {e}")
        self.state = st
        return "refused"

    def poll(self, url, **kw):
        # pinned HTTPS: GET url.version (an integer), then url only if it is newer
        from keypin import https
        if https.version(url, **kw) <= self.store.doc["version"]:
            return "current"
        return self.fetch(url, **kw)

    def fetch(self, url, **kw):
        # the signed update at url over pinned HTTPS, offered (keypin.app: after its own url.version)
        from keypin import https
        r = https.get(url, max_body=MAX_SIZE, **kw)
        if r.status != 200:
            raise https.StatusError(r.status, f"update: {url} answered {r.status}")
        return self.offer(r.content, "https")
