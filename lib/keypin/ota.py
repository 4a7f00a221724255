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
# This half (always loaded when configured) polls the version, commits and reports; the checks
# and the install live in keypin.ota_get, loaded only when a newer version is announced.
import json
import time

import boot  # type: ignore[import-not-found]  # the slot pointer (the root boot.py)
from keypin import KeypinError, https
from keypin.store import _FS

STATE = "keypin-ota.json"


class Ota:
    def __init__(self, cfg, store, device_id, fs=None, log=print):
        self.url = cfg["url"].rstrip("/") + "/"
        self.cfg = cfg
        self.store = store
        self.dev = device_id
        self.fs = fs or _FS()
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
        from keypin.ota_get import Refused, fetch
        try:
            fetch(self, data, p, kw)
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
