# A small MQTT 3.1.1 client for asyncio over pinned TLS (keypin.aio). The server's key is
# checked inside the handshake, before CONNECT (and the password) is written; a pending
# rotation is confirmed only after CONNACK with return code 0.
#   c = Client("dev-1", "broker.example.com", user="u", password="p", will=("t/status", b"gone", True, 1))
#   c.on_message = f            # f(topic: bytes, msg: bytes), plain function or coroutine
#   await c.subscribe("t/cmd", qos=1, max_msg=256)
#   c.start()                   # a task: connect, keepalive, reconnect with backoff + jitter
#   await c.publish("t/status", b"up", retain=True, qos=1)
# Limits (on purpose, to stay small): QoS 0 and 1 only (no QoS 2); clean sessions only;
# a QoS 1 publish that is not acknowledged before the connection drops raises, it is not
# resent after the reconnect; incoming messages larger than their topic's limit (subscribe's
# max_msg, else the client's) or with topics longer than max_topic are skipped without
# allocating them, acknowledged and counted in .dropped; malformed
# packets whose length is known are skipped and counted in .malformed (a broken length ends
# the connection); an exception in on_message is counted in .malformed too and the client
# carries on. No MQTT 5, no websockets, no persistence across reboots.
import asyncio
import time

from micropython import const

from keypin import aio
from keypin import mqwire as wire  # MQTT's half of keypin.wire (no HTTP parsers)
from keypin.mqwire import MQTTError, backoff

_SKIP = const(64)


def _b(x):
    return x.encode() if isinstance(x, str) else x


def _str(b):
    return len(b).to_bytes(2, "big") + b


_RC = ("", "unacceptable protocol version", "identifier rejected", "server unavailable",
       "bad user name or password", "not authorised")


class Client:
    def __init__(self, client_id, host, port=8883, *, user=None, password=None, keepalive=60, will=None,
                 store=None, cadata=None, addr=None, timeout=10, max_msg=4096, max_topic=128, log=print):
        self.id = _b(client_id)
        self.host = host
        self.port = port
        self.user = _b(user) if user is not None else None
        self.password = _b(password) if password is not None else None
        self.keepalive = keepalive
        self.will = will  # (topic, msg, retain, qos) or None
        self.store = store
        self.cadata = cadata
        self.addr = addr
        self.timeout = timeout
        self.max_msg = max_msg
        self.max_topic = max_topic
        self.log = log
        self.on_message = None
        self.subs: list = []  # [(topic bytes, qos)]
        self.limits: dict = {}  # topic bytes -> the largest message taken on it
        self.s = None
        self.verdict = None
        self.failures = 0  # failed connection attempts in a row
        self.connects = 0
        self.received = 0
        self.malformed = 0
        self.dropped = 0
        self._pid = 0
        self._acks: dict = {}  # packet id -> asyncio.Event (PUBACK, SUBACK)
        self._up = asyncio.Event()
        self._wl = asyncio.Lock()
        self._task = None
        self._stop = False
        self._rx = time.ticks_ms()

    @property
    def connected(self):
        return self.s is not None

    def _next(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _send(self, pkt, more=None):
        s = self.s
        if s is None:
            raise OSError(107, "mqtt: not connected")
        async with self._wl:
            s.write(pkt)
            if more:
                s.write(more)
            await s.drain()

    # ---- one connection ----
    async def connect(self):
        # one attempt, within self.timeout: pinned TLS, CONNECT, CONNACK rc 0, subscriptions
        await aio.within(self._connect(), None if self.timeout is None else int(self.timeout * 1000),
                         "MQTT connect to %s:%d" % (self.host, self.port))

    async def _connect(self):
        self._drop()
        s = await aio.connect(self.host, self.port, store=self.store, cadata=self.cadata, addr=self.addr,
                              timeout=None)
        try:
            fl = 2  # clean session
            pay = _str(self.id)
            if self.will:
                t, m, r, q = self.will
                fl |= 4 | (q & 1) << 3 | (0x20 if r else 0)
                pay += _str(_b(t)) + _str(_b(m))
            if self.user is not None:
                fl |= 0x80
                pay += _str(self.user)
                if self.password is not None:
                    fl |= 0x40
                    pay += _str(self.password)
            body = b"\x00\x04MQTT\x04" + bytes([fl]) + self.keepalive.to_bytes(2, "big") + pay
            s.write(b"\x10" + wire.enclen(len(body)) + body)
            await s.drain()
            a = await s.readexactly(4)
            if a[0] != 0x20 or a[1] != 2:
                raise MQTTError("not a CONNACK: %r" % a)
            if a[3]:
                raise MQTTError("broker refused the connection: CONNACK rc %d (%s)"
                                % (a[3], _RC[a[3]] if a[3] < len(_RC) else "?"))
        except BaseException:
            s.close()
            raise
        # a genuine acceptance from the pinned broker: commit a pending rotation
        try:
            self.verdict = s.confirm()
        except BaseException:  # the key was retired meanwhile: socket released
            s.close()
            raise
        self.s = s
        self.connects += 1
        self.failures = 0
        self._rx = time.ticks_ms()
        for t, q in self.subs:
            await self._sub(t, q)
        self._up.set()
        self.log("mqtt: connected to %s:%d (%s)" % (self.host, self.port, self.verdict))

    def _drop(self):
        self._up.clear()
        s, self.s = self.s, None
        if s is not None:
            s.close()
        for v in self._acks.values():
            v[0].set()  # wake the waiters: they find no ack and raise
        self._acks = {}

    async def _sub(self, t, q):
        p = self._next()
        body = p.to_bytes(2, "big") + _str(t) + bytes([q])
        await self._send(b"\x82" + wire.enclen(len(body)) + body)

    # ---- incoming ----
    async def _skip(self, s, n):
        buf = bytearray(_SKIP)
        mv = memoryview(buf)
        while n:
            k = await s.readinto(mv[:min(n, _SKIP)])
            if not k:
                raise EOFError
            n -= k

    async def _packet(self, s):
        h = (await s.readexactly(1))[0]
        n = i = 0
        while True:
            n, more = wire.remlen(n, i, (await s.readexactly(1))[0])
            if not more:
                break
            i += 1
        self._rx = time.ticks_ms()
        t = h & 0xF0
        if t == 0x30:
            return await self._publish_in(s, h & 15, n)
        if t in (0x40, 0x90, 0xB0) and 2 <= n <= 8:  # PUBACK, SUBACK, UNSUBACK
            d = await s.readexactly(n)
            if t == 0x90 and (n < 3 or d[2] & 0x80):
                self.log("mqtt: subscription refused by the broker (SUBACK 0x80)")
            v = self._acks.pop(int.from_bytes(d[:2], "big"), None)
            if v is not None:
                v[1] = True
                v[0].set()
            return
        if t == 0xD0 and not n:  # PINGRESP
            return
        if n > 4 * self.max_msg:  # an unexpected packet we would have to read through
            raise MQTTError("unexpected packet 0x%02x of %d bytes" % (h, n))
        self.malformed += 1
        await self._skip(s, n)

    async def _publish_in(self, s, fl, n):
        if n < 2:
            self.malformed += 1
            return await self._skip(s, n)
        tl = int.from_bytes(await s.readexactly(2), "big")
        try:
            p = wire.publish_sizes(fl, n, tl, self.max_topic, wire.MAXREM)
        except MQTTError:
            self.malformed += 1
            return await self._skip(s, n - 2)
        q = (fl >> 1) & 3
        topic = None
        if p < 0:  # a topic longer than max_topic: not even that is allocated
            await self._skip(s, tl)
        else:
            topic = await s.readexactly(tl)
        pid = await s.readexactly(2) if q else None
        if topic is None or p > self.limits.get(topic, self.max_msg):
            # too large: skipped without allocating it, acknowledged, counted
            self.dropped += 1
            await self._skip(s, n - 2 - tl - (2 if q else 0))
            msg = None
        else:
            msg = await s.readexactly(p)
        if pid is not None:
            await self._send(b"\x40\x02" + pid)
        if msg is None or topic is None:
            return
        self.received += 1
        f = self.on_message
        if f is None:
            return
        try:
            r = f(topic, msg)
            if r is not None and hasattr(r, "send"):
                await r
        except Exception as e:  # a message the app cannot take is ignored, the client goes on
            self.malformed += 1
            self.log("mqtt: message on %r ignored: %s: %s" % (topic[:40], type(e).__name__, e))

    async def _pinger(self):
        ka = self.keepalive * 1000
        while True:
            await asyncio.sleep_ms(ka // 2)
            if time.ticks_diff(time.ticks_ms(), self._rx) > ka + ka // 2:
                self.log("mqtt: no answer from %s for %d s: reconnecting" % (self.host, ka * 3 // 2000))
                self._drop()  # the reader then fails and the supervisor reconnects
                return
            try:
                await self._send(b"\xc0\x00")
            except OSError:  # the connection is gone: the reader sees it too
                return

    async def serve(self):
        # read until the connection fails (keepalive pings meanwhile)
        s = self.s
        pt = asyncio.create_task(self._pinger()) if self.keepalive else None
        try:
            while self.s is s:
                await self._packet(s)
        finally:
            if pt is not None:
                pt.cancel()

    # ---- the supervisor ----
    def start(self):
        # run forever (until disconnect()): connect, serve, reconnect with backoff + jitter
        if self._task is None:
            self._stop = False
            self._task = asyncio.create_task(self._keep())
        return self._task

    async def _keep(self):
        i = 0
        while not self._stop:
            try:
                await self.connect()
                i = 0
                await self.serve()
            except Exception as e:  # OSError, PinMismatch, MQTTError, EOFError: one line, retry
                if self._stop:
                    break
                self.failures += 1
                self.log("mqtt: %s:%d: %s: %s" % (self.host, self.port, type(e).__name__,
                                                  str(e).split("\n")[0]))
            self._drop()
            if self._stop:
                break
            d = backoff(i)
            i += 1
            self.log("mqtt: reconnecting in %d ms" % d)
            await asyncio.sleep_ms(d)

    async def wait_connected(self, timeout=None):
        t = self.timeout if timeout is None else timeout
        await aio.within(self._up.wait(), None if t is None else int(t * 1000),
                         "MQTT connection to %s:%d" % (self.host, self.port))

    # ---- outgoing ----
    async def publish(self, topic, msg, retain=False, qos=0, timeout=None):
        # waits for the connection (up to timeout s); QoS 1 also for the broker's PUBACK
        await self.wait_connected(timeout)
        t = _b(topic)
        m = _b(msg)
        h = 0x30 | (2 if qos else 0) | (1 if retain else 0)
        if not qos:
            await self._send(bytes([h]) + wire.enclen(2 + len(t) + len(m)) + _str(t) + m)
            return
        p = self._next()
        v = self._acks[p] = [asyncio.Event(), False]
        try:
            await self._send(bytes([h]) + wire.enclen(4 + len(t) + len(m)) + _str(t) + p.to_bytes(2, "big"), m)
            tm = self.timeout if timeout is None else timeout
            await aio.within(v[0].wait(), None if tm is None else int(tm * 1000), "PUBACK from %s" % self.host)
        finally:
            self._acks.pop(p, None)
        if not v[1]:
            raise OSError(104, "mqtt: connection lost before PUBACK")

    async def subscribe(self, topic, qos=0, max_msg=None):
        # max_msg: the largest message taken on this exact topic (else the client's max_msg)
        t = (_b(topic), 1 if qos else 0)
        if max_msg is not None:
            self.limits[t[0]] = max_msg
        if t not in self.subs:
            self.subs.append(t)
        if self.connected:
            await self._sub(*t)

    async def disconnect(self):
        self._stop = True
        if self.s is not None:
            try:
                await self._send(b"\xe0\x00")
            except OSError:
                pass
        self._drop()
        t, self._task = self._task, None
        if t is not None:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                self.log("mqtt: stopped")
