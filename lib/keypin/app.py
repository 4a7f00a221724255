# The device application: pinned MQTTS status + commands, HTTPS check-in on a schedule.
# main.py calls run(); tests call run(cycles=1). Every failure is one log line.
# The steps (mqtt_attempt, publish_status, poll, checkin, update_check) are small methods
# without any sleep, so that an asyncio runner can drive the same steps as tasks; only
# mqtt_connect (its retries) and run() wait.
import json
import os
import sys
import time

from micropython import const

import keypin
from keypin import tls

_boot = time.time()
_CMDMAX = 256  # the largest command message; anything larger is dropped unread
_UPMAX = const(8192)  # = keypin.update.MAX_SIZE, the largest signed update (tests/device/dev_applazy.py)


def log(*a):
    print("keypin:", *a)


def _drop(*names):
    # modules needed once (or rarely) leave the heap: their bytecode is most of their cost
    for n in names:
        if sys.modules.pop("keypin." + n, None) is not None and n in keypin.__dict__:
            delattr(keypin, n)


def _config(path):
    # config.json, checked; keypin.config is needed only for this and is dropped after
    from keypin import config
    try:
        return config.load(path)
    finally:
        _drop("config")


def _setup(path):
    # -> (config, pin store) for run() and keypin.aio_app; KeypinError when unusable
    cfg = _config(path)
    tls.resolve.update(cfg.get("hosts") or {})
    return cfg, keypin.use_store(cfg.get("pins", "pins.json"))


class _Updates:
    # stands for keypin.update.Updater: keypin.update (and keypin.ed25519, the document code)
    # are imported only when an update is offered or a newer version is announced, and dropped
    # after; the updater's state and this boot's count of refusal writes stay here
    def __init__(self, app, path):
        self.app = app
        self.path = path
        self.st = None  # (state, refusals) once an Updater ran
        try:  # the outcome saved last (status shows it); the Updater reads the file itself
            st = json.loads(app.store._fs.read(path))
        except (OSError, ValueError):
            st = None
        self._last = st.get("last") if isinstance(st, dict) else None

    @property
    def last(self):
        return self._last if self.st is None else self.st[0].get("last")

    def _run(self, f):
        from keypin.update import Updater
        a = self.app
        u = Updater(a.store, self.path, log=log, device_id=a.dev, hosts=a._hosts(), cadata=a.cadata is not None)
        if self.st is not None:
            u.state, u.refusals = self.st
        try:
            return f(u)
        finally:
            self.st = (u.state, u.refusals)
            _drop("update", "ed25519")

    def offer(self, data, via="?"):
        return self._run(lambda u: u.offer(data, via))

    def poll(self, url, **kw):
        # pinned HTTPS: GET url.version; keypin.update only when it is newer than the store's
        from keypin import https
        if https.version(url, **kw) <= self.app.store.doc["version"]:
            return "current"
        return self._run(lambda u: u.fetch(url, **kw))


def _one_line(e):
    return "%s: %s" % (type(e).__name__, str(e).split("\n")[0])


class App:
    update_max = _UPMAX  # the largest signed update (keypin.update.MAX_SIZE, not imported for it)
    log = staticmethod(log)  # for keypin.appx, which does not import this module
    one_line = staticmethod(_one_line)

    def __init__(self, cfg, store):
        self.cfg = cfg
        self.store = store
        self.dev = cfg.get("device_id") or "keypin-device"
        m = cfg.get("mqtt") or {}
        self.prefix = m.get("topic_prefix", "keypin")
        self.status_topic = "%s/%s/status" % (self.prefix, self.dev)
        self.cmd_topic = "%s/%s/cmd" % (self.prefix, self.dev)
        self.mq = None
        self.rotations = 0
        self.last_failure = None
        self.next_checkin = 0
        self.checkins = 0
        self.cadata = None
        if cfg.get("cadata"):
            with open(cfg["cadata"], "rb") as f:
                self.cadata = f.read()
        # signed pin-set updates (keypin.update) and pin-failure reports (keypin.report),
        # each imported only when configured
        u = cfg.get("update") or {}
        self.pins_topic = f"{self.prefix}/fleet/{u['fleet']}/pins" if u.get("fleet") else None
        if u.get("fleet") and store.doc["fleet"] is None:  # (a store migrated from v1 has none)
            try:
                store.set_fleet(u["fleet"])  # once: logged by the store
            except (OSError, keypin.StoreError) as e:
                log("update: fleet %r not stored: %s" % (u["fleet"], e))
        self.updater = None
        self.next_update = 0
        if u.get("url") or self.pins_topic:
            self.updater = _Updates(self, u.get("state", "keypin-state.json"))
        r = cfg.get("reports", {})
        self._ring = None
        self._hit = False  # a pin mismatch in this boot
        self._rcfg = None
        self.report_topic = f"{self.prefix}/{self.dev}/reports"
        if m and r is not False:
            self._rcfg = r if isinstance(r, dict) else {}
            tls.on_mismatch = self._mismatch  # type: ignore[assignment]
        self.ota = None  # software releases (keypin.ota), only when configured
        if cfg.get("release"):
            from keypin.ota import Ota
            self.ota = Ota(cfg["release"], store, self.dev, log=log)

    def _hosts(self):
        # every host this device must keep reaching: a signed update may not leave one without a pin set
        from keypin.wire import split
        c = self.cfg
        out = []
        if (c.get("mqtt") or {}).get("host"):
            out.append(c["mqtt"]["host"])
        for sec in ("https", "update", "release"):  # check-in, signed updates, software releases
            url = (c.get(sec) or {}).get("url")
            if url:
                out.append(split(url)[0])
        return out

    @property
    def reports(self):
        # keypin.report.Ring, made (and then kept) only when there is something to report: a
        # mismatch in this boot, a ring left on flash, a pin store fallback note
        r = self._rcfg
        if self._ring is None and r is not None and (self._hit or getattr(self.store, "notes", None) or _exists(
                r.get("path", "keypin-reports.json"))):
            from keypin.report import Ring
            self._ring = Ring(r.get("path", "keypin-reports.json"), self.store, r.get("size", 8),
                              r.get("min_interval", 300), r.get("max_writes", 4))
        return self._ring

    def _mismatch(self, e):
        # keypin.tls.on_mismatch
        self._hit = True
        self.reports.record(e)

    def _note(self, stream_verdict):
        if stream_verdict == "rotated":
            self.rotations += 1

    def _fail(self, what, e):
        if isinstance(e, keypin.PinMismatch):
            self.last_failure = {"host": e.host, "port": e.port, "set": e.pinset, "reason": e.reason,
                                 "chain": [p for _, p in e.chain], "t": time.time()}
        log("%s failed: %s" % (what, _one_line(e)))

    # ---- MQTT ----
    def _mqtt_kw(self, m):
        # what both MQTT clients (keypin.mqtt, keypin.aio_mqtt) take from config "mqtt"
        return {"user": m.get("user"), "password": m.get("password"), "keepalive": m.get("keepalive", 60),
                "store": self.store, "cadata": self.cadata, "log": log, "timeout": m.get("timeout", 10)}

    def mqtt_client(self):
        # the client, made once; every subscribed topic has a size limit (issue 12.7)
        m = self.cfg.get("mqtt")
        if not m:
            return None
        if self.mq is None:
            from keypin.mqtt import Client
            self.mq = Client(self.dev, m["host"], m.get("port", 8883), **self._mqtt_kw(m))
            self.mq.set_callback(self.on_cmd)
            self.mq.subscribe(self.cmd_topic, max_msg=_CMDMAX)
            if self.pins_topic:
                self.mq.subscribe(self.pins_topic, max_msg=_UPMAX)
        return self.mq

    def mqtt_attempt(self):
        # one connection attempt, no waiting: True when connected
        mq = self.mqtt_client()
        if mq is None:
            return False
        if mq.connected:
            return True
        m = self.cfg["mqtt"]
        try:
            mq.connect()
        except Exception as e:
            mq.connected = False
            mq.failures += 1
            self._fail("mqtt connect to %s" % m["host"], e)
            return False
        self._note(mq.verdict)
        log("mqtt: connected to %s:%d (%s)" % (m["host"], m.get("port", 8883), mq.verdict))
        return True

    def mqtt_connect(self):
        # the blocking app: up to config mqtt.tries attempts, with backoff between them
        mq = self.mqtt_client()
        if mq is None:
            return False
        tries = self.cfg["mqtt"].get("tries", 3)
        for i in range(tries):
            if self.mqtt_attempt():
                return True
            if i + 1 < tries:
                from keypin.mqtt import backoff
                time.sleep_ms(backoff(i))
        return False

    def status(self):
        sets = {}
        for n in self.store.names():
            s = self.store.get(n)
            sets[n] = {"active": s["active"], "backups": len(s["backups"]), "retired": len(self.store.doc["retired"])}
        return {"device": self.dev, "firmware": "%s %s" % (sys.implementation.name,
                ".".join(str(v) for v in sys.implementation.version[:3])),
                "platform": sys.platform, "keypin": keypin.VERSION, "seq": self.store.seq,
                "sets": sets, "rotations": self.rotations, "last_pin_failure": self.last_failure,
                "checkins": self.checkins, "uptime": time.time() - _boot, "version": self.store.doc["version"],
                "last_update": self.updater.last if self.updater else None,
                "messages": {"dropped": self.mq.dropped, "malformed": self.mq.malformed} if self.mq else None,
                "software": self.ota.status() if self.ota else None}

    def publish_status(self):
        mq = self.mq
        if mq is None:
            return False
        try:
            mq.publish(self.status_topic, json.dumps(self.status()), retain=True)
            log("mqtt: status published to", self.status_topic)
            return True
        except Exception as e:
            self._fail("mqtt publish", e)
            mq.close()
            return False

    # (the rarely used steps, commands and report publishing, live in keypin.appx: imported on first use)
    def publish_reports(self):
        # the failure reports, after a pinned connection; cleared once the broker has them (QoS 1)
        r, mq = self.reports, self.mq
        if r is None or mq is None or not r.pending():
            return
        from keypin.appx import publish_reports
        publish_reports(self, r, mq)

    def on_cmd(self, topic, msg):
        # called by keypin.mqtt for each message within its topic's limit; an exception here
        # (non-UTF-8, an unknown command) is counted there as malformed and ignored
        from keypin.appx import on_cmd
        on_cmd(self, topic, msg)

    def poll(self):
        mq = self.mq
        if mq is None:
            return
        try:
            mq.poll()
        except Exception as e:
            self._fail("mqtt poll", e)
            mq.close()

    # ---- HTTPS ----
    def checkin(self):
        h = self.cfg.get("https")
        if not h or time.time() < self.next_checkin:
            return None
        from keypin import https
        try:
            r = https.post(h["url"], json={"device": self.dev, "seq": self.store.seq},
                           store=self.store, timeout=h.get("timeout", 10), cadata=self.cadata)
            self._note(r.verdict)
            self.checkins += 1
            self.next_checkin = time.time() + h.get("interval", 300)
            log("https: check-in %s -> %d (%s)" % (h["url"], r.status, r.verdict))
            return r.status
        except Exception as e:
            self._fail("https check-in", e)
            self.next_checkin = time.time() + min(60, h.get("interval", 300))
            return False

    def update_check(self):
        # pinned HTTPS: GET <url>.version, then the signed update only when it is newer
        u = self.cfg.get("update") or {}
        if not self.updater or not u.get("url") or time.time() < self.next_update:
            return None
        self.next_update = time.time() + u.get("interval", 0)
        try:
            return self.updater.poll(u["url"], store=self.store, timeout=u.get("timeout", 10),
                                     cadata=self.cadata)
        except Exception as e:  # one log line, the device keeps running
            st = getattr(e, "status", None)
            if st in (404, 410):  # the pinned server answered: no update is published there
                log("update check: %s answered %d: no update published there" % (u["url"], st))
                return None
            self._fail("update check", e)
            return False

    def cycle(self):
        up = self.update_check()
        ok = self.mqtt_connect()
        if ok:
            ok = self.publish_status()
            if ok:
                self.publish_reports()
                self.poll()
        c = self.checkin()
        if self.reports:
            self.reports.flush()
        ok = ok and c is not False and up is not False
        if self.ota:  # commits a release on trial after this pinned cycle, or looks for a newer one
            self.ota.after_cycle(self, ok)
        else:  # (keypin.ota holds keypin.https itself) imported again at the next check-in or update check
            _drop("https", "httpsx", "wire", "wirex", "appx")  # (keypin.mqtt uses keypin.mqwire)
        return ok


def _wdt(cfg):
    ms = cfg.get("wdt_ms")
    if not ms or sys.platform == "linux":
        return None
    from keypin.appx import wdt
    return wdt(ms, log)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def run(cycles=None, config_path="config.json"):
    # cycles=None: forever (or config "cycles"). Returns the number of good cycles, or None
    # when the app could not start (config or pin store unusable: main.py exits 1).
    try:
        cfg, store = _setup(config_path)
    except keypin.KeypinError as e:
        log("not started:", _one_line(e))
        return None
    if cycles is None:
        cycles = cfg.get("cycles")
    app = App(cfg, store)
    wdt = _wdt(cfg)
    period = cfg.get("period", 30)
    n = good = 0
    while cycles is None or n < cycles:
        n += 1
        try:
            if app.cycle():
                good += 1
        except Exception as e:  # never let one bad cycle stop the device
            log("cycle failed:", _one_line(e))
        if wdt:
            wdt.feed()
        if cycles is not None and n >= cycles:
            break
        t_end = time.time() + period
        while time.time() < t_end:
            if app.mq and app.mq.connected:
                app.poll()
            if wdt:
                wdt.feed()
            time.sleep(1)
    if app.mq:
        app.mq.disconnect()
    log("done: %d/%d cycles ok" % (good, n))
    return good
