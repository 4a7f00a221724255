# Pinned MQTT over TLS through umqtt.simple, either API generation:
#  - micropython-lib >= 1.4: MQTTClient(..., ssl=obj) calls obj.wrap_socket(sock, server_hostname=...)
#  - PyPI micropython-umqtt.simple 1.3.4: ssl=True, ssl_params, `import ussl` inside connect()
# Both end in keypin.tls.wrap, so the key is checked before CONNECT (and the password)
# is written. A pending rotation is confirmed only after keypin itself saw a CONNACK with
# return code 0 (issue 12.11): a refused login or garbage does not rotate.
# Incoming PUBLISH packets are read by keypin, not umqtt (issue 12.7): the sizes are checked
# against per-topic limits before anything is allocated for the message; a larger one is
# drained in small pieces and dropped (`dropped`); a callback that raises (non-UTF-8, bad
# JSON) is counted (`malformed`); neither stops the client.
# `timeout` (s) bounds the TLS handshake + CONNECT/CONNACK + the subscriptions as one deadline,
# then each packet read (once its first byte is in), each wait for an acknowledgement and each
# publish: a broker that drips bytes or stops answering cannot hold the device (issue 12.6).
import sys
import time

from micropython import const

from keypin import mqwire as wire  # MQTT's half of keypin.wire only (no HTTP parsers)
from keypin import tls as _tls

_MAXTOPIC = const(256)
_MAXMSG = const(4096)  # default limit of a message on a topic without its own


class PinnedSSL:
    # stands where umqtt expects an ssl module/context
    def __init__(self, host, port, store=None, cadata=None, timeout=None):
        self.host = host
        self.port = port
        self.store = store
        self.cadata = cadata
        self.timeout = timeout
        self.last = None

    def wrap_socket(self, sock, server_hostname=None, **kw):
        # server_hostname from umqtt may be an address; the pinned name is self.host
        self.last = _tls.wrap(sock, self.host, self.port, store=self.store, cadata=self.cadata,
                              deadline=_until(self.timeout))
        return _Connack(self.last)


def _until(t):
    return None if t is None else time.ticks_add(time.ticks_ms(), int(t * 1000))


def _late(s):
    # True when the stream's deadline has passed (a read then ends short instead of raising)
    d = getattr(s, "deadline", None)
    return d is not None and time.ticks_diff(d, time.ticks_ms()) <= 0


class _Connack:
    # the pinned stream while umqtt runs CONNECT: keeps the first 4 bytes read (the CONNACK),
    # so that keypin checks it itself (umqtt only asserts, and -O removes asserts)
    def __init__(self, s):
        self.s = s
        self.got = b""

    def read(self, n=-1):
        d = self.s.read(n)
        if d and len(self.got) < 4:
            self.got += d[:4 - len(self.got)]
        return d

    def write(self, buf, n=None):
        return self.s.write(buf, n)

    def setblocking(self, flag):
        return self.s.setblocking(flag)

    def close(self):
        self.s.close()

    def accepted(self):
        g = self.got
        return len(g) == 4 and g[0] == 0x20 and g[1] == 2 and g[2] < 2 and g[3] == 0


_name = wire.name  # keypin.mqwire's, shared with keypin.mqttx


def _umqtt():
    from umqtt.simple import MQTTClient
    return MQTTClient


backoff = wire.backoff  # exponential backoff with full jitter (ms), shared with keypin.aio_mqtt


class Client:
    def __init__(self, client_id, host, port=8883, *, user=None, password=None, keepalive=60,
                 store=None, cadata=None, addr=None, mqtt_class=None, log=print, timeout=10):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl = PinnedSSL(host, port, store, cadata, timeout)
        cls = mqtt_class or _umqtt()
        server = addr or _tls.resolve.get(host) or host
        self.c = cls(client_id, server, port, user, password, keepalive, ssl=self.ssl)
        self.legacy = hasattr(self.c, "ssl_params")
        if self.legacy:
            self.c.ssl_params = {"server_hostname": host}
        self.log = log
        self.connected = False
        self.verdict = None
        self.failures = 0
        self.subs = []
        self.limits: dict = {}  # topic (bytes) -> the largest message accepted on it
        self.max_msg = _MAXMSG
        self.dropped = 0  # messages larger than their limit, drained unread
        self.malformed = 0  # messages the callback could not use (it raised)
        self.packets = 0  # packets read
        self._buf = None  # the drain buffer (keypin.mqttx), made at the first oversized message
        self._cb = None
        self.c.cb = self._deliver
        self.c.wait_msg = self._wait_msg  # umqtt's subscribe()/publish(qos=1) call it too

    def connect(self, clean_session=True):
        old = sys.modules.get("ussl")
        if self.legacy:
            # 1.3.4 does `import ussl; ussl.wrap_socket(sock, **ssl_params)`: make that pinned
            sys.modules["ussl"] = self.ssl  # type: ignore[assignment]
        try:
            r = self.c.connect(clean_session)
        except BaseException as e:
            # umqtt made the socket before failing (TCP refused, TLS or CONNACK error): release
            # it, or every failed attempt leaks a descriptor (lwIP has about 10)
            late = self.ssl.last is not None and _late(self.ssl.last)
            self.close()
            if late and not isinstance(e, OSError):  # umqtt indexed a CONNACK cut by the deadline
                raise OSError(110, "mqtt: no CONNACK from %s:%d within timeout=%s s" % (self.host, self.port, self.timeout))
            raise
        finally:
            if self.legacy:
                if old is None:
                    del sys.modules["ussl"]
                else:
                    sys.modules["ussl"] = old
        w = self.c.sock
        if isinstance(w, _Connack):
            self.c.sock = w.s
            if not w.accepted():
                self.close()
                raise wire.MQTTError("no CONNACK with return code 0 from %s:%d: %r" % (self.host, self.port, w.got))
            # a genuine CONNACK accepting this client: only now may a pending rotation commit
            try:
                self.verdict = w.s.confirm()
            except BaseException:  # the key was retired meanwhile: no connection, socket released
                self.close()
                raise
        else:
            self.verdict = None
        self.connected = True
        self.failures = 0
        try:
            for t in self.subs:
                self.c.subscribe(t)
        except BaseException:  # no SUBACK (deadline, close, garbage): not connected, socket released
            self.close()
            raise
        self._arm(False)  # connected: polls use the socket's own blocking mode again
        return r

    def _arm(self, on=True):
        # the stream's deadline: `timeout` from now, or none
        s = self.c.sock
        if s is not None and hasattr(s, "set_deadline"):
            s.set_deadline(_until(self.timeout) if on else None)

    def ensure(self, tries=5, sleep_ms=None):
        # (re)connect with exponential backoff + jitter; bounded by `tries`
        last: BaseException = OSError("no connection attempt (tries=%d)" % tries)
        for i in range(tries):
            try:
                return self.connect()
            except Exception as e:  # OSError, PinMismatch, MQTTException
                last = e
                self.connected = False
                self.failures += 1
                d = backoff(i)
                self.log("mqtt: connect to %s:%d failed (%s: %s); retry in %d ms"
                         % (self.host, self.port, type(e).__name__, str(e).split("\n")[0], d))
                if i + 1 < tries:
                    (sleep_ms or time.sleep_ms)(d)
        raise last

    def set_callback(self, cb):
        self._cb = cb

    def subscribe(self, topic, max_msg=None):
        # max_msg: the largest message accepted on this topic (default self.max_msg)
        if isinstance(topic, str):
            topic = topic.encode()
        if max_msg is not None:
            self.limits[topic] = max_msg
        if topic not in self.subs:
            self.subs.append(topic)
        if self.connected:
            self.c.subscribe(topic)

    def _deliver(self, topic, msg):
        cb = self._cb
        if cb is None:
            return
        try:
            cb(topic, msg)
        except Exception as e:  # a message the application cannot use must not stop the client
            self.malformed += 1
            self.log("mqtt: message on %s ignored (%s: %s)" % (_name(topic), type(e).__name__, e))

    def _read(self, n):
        s = self.c.sock
        d = s.read(n)
        if d is None or len(d) != n:
            if _late(s):
                raise OSError(110, "mqtt: deadline passed inside a packet (timeout=%s s)" % self.timeout)
            raise OSError(-1, "mqtt: connection closed inside a packet")
        return d

    def _wait_msg(self, block=True):
        # umqtt's wait_msg with the sizes checked first; the same contract: None, or the
        # first byte of a packet other than PUBLISH (its caller reads the rest). Blocking (as
        # umqtt waits for SUBACK/PUBACK): within `timeout`; polling: no wait for a first byte.
        s = self.c.sock
        self._arm(block)
        if not block:
            s.setblocking(False)
        res = s.read(1)
        s.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        self._arm()  # the rest of this packet within the timeout
        self.packets += 1
        op = res[0]
        if op == 0xD0:  # PINGRESP
            if self._read(1) != b"\0":
                raise wire.MQTTError("malformed PINGRESP")
            return None
        if op & 0xF0 != 0x30:
            return op
        n = i = 0
        while True:
            n, more = wire.remlen(n, i, self._read(1)[0])
            i += 1
            if not more:
                break
        if n < 2:
            raise wire.MQTTError("malformed PUBLISH")
        t = self._read(2)
        tlen = t[0] << 8 | t[1]
        if wire.publish_sizes(op, n, tlen, _MAXTOPIC, 1 << 28) < 0:  # topic too long: drop it all
            return self._oversize(b"?", n, op, None, n - 2)
        topic = self._read(tlen)
        pid = None
        if op & 6:
            pid = self._read(2)
        p = wire.publish_sizes(op, n, tlen, _MAXTOPIC, self.limits.get(topic, self.max_msg))
        if p < 0:
            return self._oversize(topic, n, op, pid, n - 2 - tlen - (2 if pid else 0))
        msg = self._read(p) if p else b""
        self._deliver(topic, msg)
        self._ack(op, pid)
        return None

    def _oversize(self, topic, n, op, pid, left):
        # a message over its topic's limit: its `left` bytes drained unread, counted, acknowledged
        from keypin.mqttx import drop
        drop(self, topic, n, op, pid, left)

    def _ack(self, op, pid):
        if op & 6 == 2 and pid:  # QoS 1: PUBACK
            self.c.sock.write(b"\x40\x02" + pid)

    def publish(self, topic, msg, retain=False, qos=0, tries=3):
        # on a broken connection: reconnect (with backoff) and publish once more
        if not self.connected:
            self.ensure(tries)
        try:
            self._arm()
            self.c.publish(topic, msg, retain, qos)
        except OSError as e:
            self.log("mqtt: publish failed (%s); reconnecting" % e)
            self.close()
            self.ensure(tries)
            self.c.publish(topic, msg, retain, qos)

    def check_msg(self):
        return self._wait_msg(False)

    def wait_msg(self):
        return self._wait_msg()

    def poll(self, most=8):
        # every packet already waiting (at most `most`), without blocking
        for _ in range(most):
            n = self.packets
            self.check_msg()
            if self.packets == n:
                return

    def disconnect(self):
        if self.connected:
            try:
                self.c.disconnect()
            except OSError:
                pass
        self.close()

    def close(self):
        self.connected = False
        s, self.c.sock = self.c.sock, None
        try:
            if s:
                s.close()
        except OSError as e:  # already broken: nothing more to release
            self.log("mqtt: close: %s" % e)
