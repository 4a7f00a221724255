# The device app on asyncio: status, check-in, commands and signed updates as tasks of one
# loop, so that an application adds its own tasks beside them (docs/asyncio.md). main.py runs
# it when config.json has "asyncio": true. Reuses keypin.app.App (config, topics, status,
# commands, reports, updates); the network goes through keypin.aio_mqtt and keypin.aio_https.
#   app = aio_app.start()                       # inside a coroutine: the tasks are running
#   asyncio.create_task(my_sensor(app))         # app.publish("temp", b"21.5") -> <prefix>/<dev>/temp
#   await app.wait()                            # forever, or config "cycles" status rounds
import asyncio
import json
import time

import keypin
from keypin.app import _CMDMAX, App, _one_line, _setup, log


class AioApp(App):
    def __init__(self, cfg, store):
        super().__init__(cfg, store)
        self.tasks: list = []
        self.rounds = 0
        self.good = 0
        self._done = asyncio.Event()
        self._up = None  # the last check-in / update outcome (False: failed)

    def topic(self, name):
        return "%s/%s/%s" % (self.prefix, self.dev, name)

    # ---- MQTT: one client, its own task keeps it connected ----
    def mqtt_client(self):
        m = self.cfg.get("mqtt")
        if not m:
            return None
        if self.mq is None:
            from keypin.aio_mqtt import Client
            self.mq = Client(self.dev, m["host"], m.get("port", 8883), will=(self.topic("online"), b"0", True, 1),
                             max_msg=_CMDMAX, **self._mqtt_kw(m))
            self.mq.on_message = self.on_cmd
        return self.mq

    async def publish(self, name, msg, retain=False, qos=0, timeout=None):
        # an application message on <prefix>/<device>/<name> over the pinned connection
        mq = self.mq
        if mq is None:
            raise OSError(107, "no MQTT in config.json")
        await mq.publish(self.topic(name), msg, retain, qos, timeout)

    def publish_status(self):
        # App.on_cmd("status") and the release hook call this: publish from a task
        if self.mq is None:
            return False
        asyncio.create_task(self.astatus())
        return True

    async def astatus(self):
        mq = self.mq
        if mq is None:
            return False
        try:
            await mq.publish(self.status_topic, json.dumps(self.status()), retain=True, timeout=mq.timeout)
            log("mqtt: status published to", self.status_topic)
        except Exception as e:
            self._fail("mqtt publish", e)
            return False
        r = self.reports
        if r is not None and r.pending():
            n = len(r.items)
            try:
                await mq.publish(self.report_topic, r.payload(self.dev), retain=True, qos=1)
                r.clear()
                log("mqtt: %d pin-failure report(s) published to %s and cleared" % (n, self.report_topic))
            except Exception as e:
                self._fail("mqtt report publish", e)
        return True

    # ---- HTTPS ----
    async def acheckin(self):
        h = self.cfg.get("https")
        if not h or time.time() < self.next_checkin:
            return None
        from keypin import aio_https
        try:
            r = await aio_https.post(h["url"], json={"device": self.dev, "seq": self.store.seq},
                                     store=self.store, timeout=h.get("timeout", 10), cadata=self.cadata)
        except Exception as e:
            self._fail("https check-in", e)
            self.next_checkin = time.time() + min(60, h.get("interval", 300))
            return False
        self._note(r.verdict)
        self.checkins += 1
        self.next_checkin = time.time() + h.get("interval", 300)
        log("https: check-in %s -> %d (%s)" % (h["url"], r.status, r.verdict))
        return r.status

    async def aupdate(self):
        # GET <url>.version over pinned HTTPS, then the signed update only when it is newer
        u = self.cfg.get("update") or {}
        if not self.updater or not u.get("url") or time.time() < self.next_update:
            return None
        self.next_update = time.time() + u.get("interval", 0)
        from keypin import aio_https
        kw = {"store": self.store, "timeout": u.get("timeout", 10), "cadata": self.cadata}
        url = u["url"]
        try:
            r = await aio_https.get(url + ".version", max_body=32, **kw)
            if r.status in (404, 410):
                log("update check: %s answered %d: no update published there" % (url, r.status))
                return None
            if r.status != 200 or not r.content.strip().isdigit():
                raise keypin.KeypinError("update: %s.version answered %d %r" % (url, r.status, r.content[:20]))
            if int(r.content) <= self.store.doc["version"]:
                return "current"
            r = await aio_https.get(url, max_body=self.update_max, **kw)
            if r.status != 200:
                raise keypin.KeypinError("update: %s answered %d" % (url, r.status))
            return self.updater.offer(r.content, "https")
        except Exception as e:
            self._fail("update check", e)
            return False

    # ---- the tasks ----
    async def _status_task(self, period, cycles):
        mq = self.mq
        while cycles is None or self.rounds < cycles:
            self.rounds += 1
            ok = True
            if mq is not None:
                try:
                    await mq.wait_connected()
                    await mq.publish(self.topic("online"), b"1", retain=True)
                    ok = await self.astatus()
                except Exception as e:
                    self._fail("mqtt", e)
                    ok = False
            ok = ok and self._up is not False
            if ok:
                self.good += 1
            if self.reports:
                self.reports.flush()
            if self.ota:  # keypin.ota is blocking: the loop waits while it checks or downloads
                self.ota.after_cycle(self, ok)
            if cycles is not None and self.rounds >= cycles:
                break
            await asyncio.sleep(period)
        self._done.set()

    async def _https_task(self):
        while True:
            c = await self.acheckin()
            u = await self.aupdate()
            if c is not None or u is not None:
                self._up = c is not False and u is not False
            await asyncio.sleep(1)

    def start(self, cycles=None):
        mq = self.mqtt_client()
        if mq is not None:
            mq.subs.append((self.cmd_topic.encode(), 0))
            mq.limits[self.cmd_topic.encode()] = _CMDMAX
            if self.pins_topic:
                mq.subs.append((self.pins_topic.encode(), 0))
                mq.limits[self.pins_topic.encode()] = self.update_max
            self.tasks.append(mq.start())
        if self.cfg.get("https") or (self.cfg.get("update") or {}).get("url"):
            self.tasks.append(asyncio.create_task(self._https_task()))
        self.tasks.append(asyncio.create_task(self._status_task(self.cfg.get("period", 30), cycles)))
        return self

    async def wait(self):
        # until the status task has done its rounds (forever without "cycles"); then stop
        await self._done.wait()
        await self.stop()
        return self.good

    async def stop(self):
        for t in self.tasks:
            t.cancel()
        if self.mq is not None:
            await self.mq.disconnect()
        self.tasks = []
        log("done: %d/%d cycles ok" % (self.good, self.rounds))


def start(config_path="config.json", cycles=None):
    # the app's tasks in the running loop; None when it cannot start (config or pin store)
    try:
        cfg, store = _setup(config_path)  # keypin.config is dropped after
    except keypin.KeypinError as e:
        log("not started:", _one_line(e))
        return None
    return AioApp(cfg, store).start(cfg.get("cycles") if cycles is None else cycles)


def run(cycles=None, config_path="config.json"):
    # main.py with "asyncio": true: the app alone in a loop; returns the good rounds (None: not started)
    async def main():
        app = start(config_path, cycles)
        return None if app is None else await app.wait()
    return asyncio.run(main())
