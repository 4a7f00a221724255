# Pinned MQTT over TLS through umqtt.simple, either API generation:
#  - micropython-lib >= 1.4: MQTTClient(..., ssl=obj) calls obj.wrap_socket(sock, server_hostname=...)
#  - PyPI micropython-umqtt.simple 1.3.4: ssl=True, ssl_params, `import ussl` inside connect()
# Both end in keypin.tls.wrap, so the key is checked before CONNECT (and the password)
# is written. A pending rotation is confirmed after a successful CONNACK.
import sys
import time
from random import getrandbits as _rnd

from keypin import tls as _tls


class PinnedSSL:
    # stands where umqtt expects an ssl module/context
    def __init__(self, host, port, store=None, cadata=None):
        self.host = host
        self.port = port
        self.store = store
        self.cadata = cadata
        self.last = None

    def wrap_socket(self, sock, server_hostname=None, **kw):
        # server_hostname from umqtt may be an address; the pinned name is self.host
        self.last = _tls.wrap(sock, self.host, self.port, store=self.store, cadata=self.cadata)
        return self.last


def _umqtt():
    from umqtt.simple import MQTTClient
    return MQTTClient


def backoff(attempt, base=1, cap=60):
    # exponential backoff with full jitter, in ms: uniform in [d/2, d]
    d = min(cap, base * (1 << min(attempt, 16))) * 1000
    return d // 2 + (_rnd(16) * (d // 2)) // 65536


class Client:
    def __init__(self, client_id, host, port=8883, *, user=None, password=None, keepalive=60,
                 store=None, cadata=None, addr=None, mqtt_class=None, log=print):
        self.host = host
        self.port = port
        self.ssl = PinnedSSL(host, port, store, cadata)
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

    def connect(self, clean_session=True):
        old = sys.modules.get("ussl")
        if self.legacy:
            # 1.3.4 does `import ussl; ussl.wrap_socket(sock, **ssl_params)`: make that pinned
            sys.modules["ussl"] = self.ssl  # type: ignore[assignment]
        try:
            r = self.c.connect(clean_session)
        except BaseException:
            # umqtt made the socket before failing (TCP refused, TLS or CONNACK error): release
            # it, or every failed attempt leaks a descriptor (lwIP has about 10)
            self.close()
            raise
        finally:
            if self.legacy:
                if old is None:
                    del sys.modules["ussl"]
                else:
                    sys.modules["ussl"] = old
        s = self.ssl.last
        self.verdict = s.confirm() if s is not None else None
        self.connected = True
        self.failures = 0
        for t in self.subs:
            self.c.subscribe(t)
        return r

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
        self.c.set_callback(cb)

    def subscribe(self, topic):
        if topic not in self.subs:
            self.subs.append(topic)
        if self.connected:
            self.c.subscribe(topic)

    def publish(self, topic, msg, retain=False, qos=0, tries=3):
        # on a broken connection: reconnect (with backoff) and publish once more
        if not self.connected:
            self.ensure(tries)
        try:
            self.c.publish(topic, msg, retain, qos)
        except OSError as e:
            self.log("mqtt: publish failed (%s); reconnecting" % e)
            self.close()
            self.ensure(tries)
            self.c.publish(topic, msg, retain, qos)

    def check_msg(self):
        return self.c.check_msg()

    def wait_msg(self):
        return self.c.wait_msg()

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
