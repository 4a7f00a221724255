# The device application: pinned MQTTS status + commands, HTTPS check-in on a schedule.
# main.py calls run(); tests call run(cycles=1). Every failure is one log line.
import json
import sys
import time

import keypin
from keypin import config, tls

_boot = time.time()


def log(*a):
    print("keypin:", *a)


def _one_line(e):
    return "%s: %s" % (type(e).__name__, str(e).split("\n")[0])


class App:
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
        self.updater = None
        self.next_update = 0
        if u.get("url") or self.pins_topic:
            from keypin.update import Updater
            self.updater = Updater(store, u.get("state", "keypin-state.json"), log=log)
        r = cfg.get("reports", {})
        self.reports = None
        self.report_topic = f"{self.prefix}/{self.dev}/reports"
        if m and r is not False:
            from keypin.report import Ring
            r = r if isinstance(r, dict) else {}
            self.reports = Ring(r.get("path", "keypin-reports.json"), store, r.get("size", 8),
                                r.get("min_interval", 300), r.get("max_writes", 4))
            tls.on_mismatch = self.reports.record  # type: ignore[assignment]

    def _note(self, stream_verdict):
        if stream_verdict == "rotated":
            self.rotations += 1

    def _fail(self, what, e):
        if isinstance(e, keypin.PinMismatch):
            self.last_failure = {"host": e.host, "port": e.port, "set": e.pinset, "reason": e.reason,
                                 "chain": [p for _, p in e.chain], "t": time.time()}
        log("%s failed: %s" % (what, _one_line(e)))

    # ---- MQTT ----
    def mqtt_connect(self):
        m = self.cfg.get("mqtt")
        if not m:
            return False
        from keypin.mqtt import Client
        if self.mq is None:
            self.mq = Client(self.dev, m["host"], m.get("port", 8883), user=m.get("user"),
                             password=m.get("password"), keepalive=m.get("keepalive", 60),
                             store=self.store, cadata=self.cadata, log=log)
            self.mq.set_callback(self.on_cmd)
            self.mq.subscribe(self.cmd_topic)
            if self.pins_topic:
                self.mq.subscribe(self.pins_topic)
        if not self.mq.connected:
            try:
                self.mq.ensure(tries=m.get("tries", 3))
            except Exception as e:
                self._fail("mqtt connect to %s" % m["host"], e)
                return False
            self._note(self.mq.verdict)
            log("mqtt: connected to %s:%d (%s)" % (m["host"], m.get("port", 8883), self.mq.verdict))
        return True

    def status(self):
        sets = {}
        for n in self.store.names():
            s = self.store.get(n)
            sets[n] = {"active": s["active"], "backups": len(s["backups"]), "retired": len(s["retired"])}
        return {"device": self.dev, "firmware": "%s %s" % (sys.implementation.name,
                ".".join(str(v) for v in sys.implementation.version[:3])),
                "platform": sys.platform, "keypin": keypin.VERSION, "seq": self.store.seq,
                "sets": sets, "rotations": self.rotations, "last_pin_failure": self.last_failure,
                "checkins": self.checkins, "uptime": time.time() - _boot, "version": self.store.doc["version"],
                "last_update": self.updater.last if self.updater else None}

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

    def publish_reports(self):
        # the failure reports, after a pinned connection; cleared once the broker has them (QoS 1)
        r, mq = self.reports, self.mq
        if r is None or mq is None or not r.pending():
            return
        n = len(r.items)
        try:
            mq.publish(self.report_topic, r.payload(self.dev), retain=True, qos=1)
            r.clear()
        except Exception as e:  # one log line, the device keeps running
            self._fail("mqtt report publish", e)
            mq.close()
            return
        log(f"mqtt: {n} pin-failure report(s) published to {self.report_topic} and cleared")

    def on_cmd(self, topic, msg):
        if self.updater and self.pins_topic and topic == self.pins_topic.encode():
            try:
                self.updater.offer(msg, "mqtt")
            except Exception as e:  # inside umqtt's callback: never raise
                log("update via mqtt failed:", _one_line(e))
            return
        cmd = msg.decode().strip()
        log("command:", cmd)
        if cmd == "status":
            self.publish_status()
        elif cmd == "checkin":
            self.next_checkin = 0
        else:
            log("unknown command %r" % cmd)

    def poll(self):
        mq = self.mq
        if mq is None:
            return
        try:
            mq.check_msg()
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
        return ok and c is not False and up is not False


def _wdt(cfg):
    ms = cfg.get("wdt_ms")
    if not ms or sys.platform == "linux":
        return None
    try:
        from machine import WDT
        return WDT(timeout=ms)
    except Exception as e:
        log("watchdog not started:", _one_line(e))
        return None


def run(cycles=None, config_path=config.PATH):
    # cycles=None: forever (or config "cycles"). Returns the number of good cycles.
    try:
        cfg = config.load(config_path)
        tls.resolve.update(cfg.get("hosts") or {})
        store = keypin.use_store(cfg.get("pins", "pins.json"))
    except keypin.KeypinError as e:
        log("not started:", _one_line(e))
        return 0
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
