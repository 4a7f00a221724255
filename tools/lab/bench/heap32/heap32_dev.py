# Device side of the 32-bit heap stage (tools/lab/bench/heap32/heap32.py), run by runner.mjs in
# MicroPython's WebAssembly port. Usage: heap32_dev.py CASE (umqtt core mqtt https app update aio
# modules; "modules" imports each keypin module as its own step: the live cost of each)
# Defines the case's STEPS; runner.mjs runs them and _report() prints "HEAP32 {json}": "kib" the
# figure (KiB above the baseline, live heap after gc.collect()), "steps" [label, live KiB at the
# end of the step, KiB allocated during it].
# socket and tls are stubs (the port has neither): the fake tls.SSLContext calls the verify
# callback with the real certificate chain of the host (top first, the leaf last, as mbedTLS
# does) and fails the handshake when it returns non-zero; behind the stream a fake MQTT broker
# (port 8883) or web server answers what keypin sends.
# the VM's own modules first: binascii is a frozen .py here (7.6 KB), built in on an ESP32
import binascii  # noqa: F401
import gc
import hashlib  # noqa: F401
import json
import random  # noqa: F401
import struct  # noqa: F401
import sys
import time as _rt

import micropython

CASE = sys.argv[1]
with open("heap32.json") as _f:
    CFG = json.load(_f)
CHAINS = {}
for _h, _names in CFG["chains"].items():
    _c = []
    for _n in _names:
        with open(_n, "rb") as _f:
            _c.append(_f.read())
    CHAINS[_h] = _c
with open("update.txt", "rb") as _f:
    UPDATE = _f.read()
ROUTES = {"/files/update.txt.version": b"2\n", "/files/update.txt": UPDATE}
if CASE == "app0":  # the app with nothing newer announced: no update is fetched or applied
    ROUTES["/files/update.txt.version"] = b"0\n"


class _Broker:
    # answers CONNECT, SUBSCRIBE, PUBLISH (QoS 1), PINGREQ
    def __init__(self):
        self.inb = b""
        self.out = b""

    def feed(self, b):
        self.inb += b
        while len(self.inb) >= 2:
            n, m, i = 0, 1, 1
            while True:
                if i >= len(self.inb):
                    return
                c = self.inb[i]
                n += (c & 0x7F) * m
                m *= 128
                i += 1
                if not c & 0x80:
                    break
            if len(self.inb) < i + n:
                return
            t, body = self.inb[0], self.inb[i:i + n]
            self.inb = self.inb[i + n:]
            if t == 0x10:
                self.out += b"\x20\x02\x00\x00"
            elif t == 0x82:
                self.out += b"\x90\x03" + body[:2] + b"\x00"
            elif t & 0xF0 == 0x30 and (t >> 1) & 3 == 1:
                k = 2 + ((body[0] << 8) | body[1])
                self.out += b"\x40\x02" + body[k:k + 2]
            elif t == 0xC0:
                self.out += b"\xd0\x00"


class _Web:
    # one HTTP/1.1 request, one response, then EOF
    def __init__(self):
        self.inb = b""
        self.out = b""

    def feed(self, b):
        self.inb += b
        i = self.inb.find(b"\r\n\r\n")
        if i < 0 or self.out:
            return
        head = self.inb[:i].decode()
        n = 0
        for line in head.split("\r\n")[1:]:
            if line.lower().startswith("content-length:"):
                n = int(line.split(":")[1])
        if len(self.inb) < i + 4 + n:
            return
        path = head.split(" ")[1]
        body = ROUTES.get(path, b"ok")
        self.out = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body


class _Stream:
    def __init__(self, srv):
        self.srv = srv
        self.nb = False

    def write(self, b, n=None):
        if isinstance(b, str):  # a real socket takes str too (umqtt writes the client id so)
            b = b.encode()
        b = bytes(b if n is None else b[:n])
        self.srv.feed(b)
        return len(b)

    def read(self, n=-1):
        o = self.srv.out
        if not o:
            return None if self.nb else b""
        if n < 0:
            n = len(o)
        self.srv.out = o[n:]
        return o[:n]

    def readinto(self, buf, n=None):
        d = self.read(len(buf) if n is None else n)
        if not d:
            return d
        buf[:len(d)] = d
        return len(d)

    def readline(self, n=-1):
        o = self.srv.out
        i = o.find(b"\n")
        k = len(o) if i < 0 else i + 1
        if n >= 0:
            k = min(k, n)
        self.srv.out = o[k:]
        return o[:k]

    def setblocking(self, f):
        self.nb = not f

    def settimeout(self, t):
        self.nb = t == 0

    def close(self):
        pass


class _Sock:
    def __init__(self, *a):
        self.port = 0

    def settimeout(self, t):
        pass

    def setblocking(self, f):
        pass

    def connect(self, addr):
        self.port = addr[1]

    def close(self):
        pass


class _SocketMod:
    AF_INET = 2
    SOCK_STREAM = 1
    socket = _Sock

    @staticmethod
    def getaddrinfo(host, port, *a):
        return [(2, 1, 0, host, (host, port))]


class SSLContext:
    def __init__(self, proto=0):
        self.verify_mode = 0
        self.verify_callback = None

    def load_verify_locations(self, cadata=None):
        pass

    def wrap_socket(self, sock, server_hostname=None, **kw):
        if self.verify_mode and self.verify_callback is not None:
            chain = CHAINS[server_hostname]
            for d in range(len(chain) - 1, -1, -1):  # top of the chain first, the leaf last
                if self.verify_callback(memoryview(chain[d]), d) != 0:
                    raise OSError(1)
        return _Stream(_Broker() if server_hostname == CFG["mqtt_host"] else _Web())


class _TlsMod:
    PROTOCOL_TLS_CLIENT = 0
    CERT_NONE = 0
    CERT_OPTIONAL = 1
    CERT_REQUIRED = 2
    SSLContext = SSLContext


class _Time:
    # the clock: sleep() (retry back-off) and the wait between app cycles only advance it
    def __init__(self):
        self.off = 0

    def time(self):
        return _rt.time() + self.off

    def sleep(self, s):
        self.off += s

    def sleep_ms(self, ms):
        self.off += ms / 1000

    def __getattr__(self, n):
        return getattr(_rt, n)


sys.modules["socket"] = sys.modules["usocket"] = _SocketMod()
sys.modules["tls"] = _TlsMod()
try:
    import asyncio  # noqa: F401
except ImportError:  # this port has no asyncio: keypin.aio's own cost is measured (its import)
    sys.modules["asyncio"] = _TlsMod()
CLOCK = _Time()
sys.modules["time"] = CLOCK
MARKS = [0] * 32  # preallocated: recording a mark allocates nothing
SLACK = [0] * 32  # unused qstr pool bytes at each mark
ALLOC = [0] * 32  # bytes allocated inside each step (the port collects only between steps)
G = {}  # what the steps keep alive


def kib(n):
    return round(n / 1024, 2)


def s_import():
    import keypin
    from keypin import tls  # noqa: F401  (the pinned connection path)
    G["keypin"] = keypin


def s_store():
    G["st"] = G["keypin"].use_store("pins.json")


def s_connect():
    # one pinned connection made and closed: the set's context (tls.SSLContext + Checker) stays
    # cached, as on a device
    s = G["keypin"].connect(CFG["mqtt_host"], 8883)
    assert s.verdict == "active", s.verdict
    s.close()


CORE = [("import keypin, keypin.tls", s_import), ("store with two sets", s_store),
        ("pinned connection", s_connect)]
MODS = ("keypin", "keypin.pins", "keypin.spki", "keypin.spkiref", "keypin.pindoc", "keypin.store", "keypin.tls",
        "keypin.tlsx", "keypin.sslctx", "keypin.wire", "keypin.mqtt", "keypin.https", "keypin.report",
        "keypin.config", "keypin.app", "keypin.update", "keypin.ed25519", "keypin.pindocx", "keypin.storeedit")


def _importer(name):
    def f():
        try:
            __import__(name)
        except ImportError:
            pass
    return f


def s_umqtt():
    import umqtt.simple  # noqa: F401


def s_mqtt():
    from keypin.mqtt import Client
    c = Client("heap32", CFG["mqtt_host"], 8883, user="dev", password="secret", store=G["st"])
    c.ensure(tries=1)
    c.publish("keypin/heap32/status", b"{}")
    assert c.connected and c.verdict == "active", c.verdict
    G["c"] = c


def s_https():
    from keypin import https
    r = https.get("https://%s/checkin" % CFG["api_host"], store=G["st"])
    assert r.status == 200 and r.verdict == "active", (r.status, r.verdict)


def s_aio():
    import keypin.aio  # noqa: F401


def s_app_setup():
    # what keypin.app.run() does before its loop (main.py -> run), keeping the App
    from keypin import app

    import main  # noqa: F401
    cfg, st = app._setup("config.json")  # config.json checked, hosts, the pin store (as run() does)
    G["app"] = app.App(cfg, st)
    G["period"] = cfg.get("period", 30)


def s_cycle():
    assert G["app"].cycle(), "app cycle failed"
    CLOCK.off += G["period"]  # the wait between cycles


def s_update_setup():
    from keypin import update
    G["u"] = update.Updater(G["st"], "keypin-state.json", log=lambda *a: None)


def s_read():
    with open("update.txt", "rb") as f:
        G["data"] = f.read()


def s_split():
    from keypin import update
    G["line"], G["sig"] = update.split(G["data"])
    G["doc"] = json.loads(G["line"])


def s_verify():
    from keypin import update
    from keypin.ed25519 import verify
    assert verify(update.signer_key(G["st"].doc["signer"]), G["line"], G["sig"])


def s_check():
    from keypin import update
    G["new"] = update.check(G["st"], G["data"])


def s_apply():
    have = G["st"].doc["version"]
    G["u"].offer(G["data"], "heap32")
    assert G["st"].doc["version"] == 2 and have < 2, (have, G["st"].doc["version"])


def s_drop():
    for k in ("data", "line", "sig", "doc", "new"):
        G.pop(k, None)


CASES = {
    "umqtt": [("umqtt", s_umqtt)],
    "core": CORE,
    "mqtt": [("umqtt", s_umqtt)] + CORE + [("mqtt", s_mqtt)],
    "https": CORE + [("https", s_https)],
    "aio": CORE + [("aio", s_aio)],
    "modules": [(m, _importer(m)) for m in MODS],
    "app": [("setup", s_app_setup), ("cycle 1", s_cycle), ("cycle 2", s_cycle), ("cycle 3", s_cycle)],
    "app0": [("setup", s_app_setup), ("cycle 1", s_cycle), ("cycle 2", s_cycle), ("cycle 3", s_cycle)],
    "update": CORE + [("updater", s_update_setup), ("received", s_read), ("parsed", s_split),
               ("signature verified", s_verify), ("checked", s_check), ("applied", s_apply),
               ("dropped", s_drop)],
}
STEPS = CASES[CASE]


# runner.mjs: _run(i) for each step, each followed by a call of gc.collect() and _mark(i) in
# calls of their own: this port collects only when control is back at the top level (never
# inside a call), so a mark is the live heap at a step boundary.
def _run(i):
    a = gc.mem_alloc()
    STEPS[i][1]()
    ALLOC[i] = gc.mem_alloc() - a
    gc.collect()


def _mark(i):
    MARKS[i] = gc.mem_alloc()
    micropython.qstr_info()  # runner.mjs reads its line and calls _qstr(i, ...)


def _qstr(i, n_pool, n_qstr, n_data, n_total):
    # the unused part of the interned-string pools: they grow by doubling (the next pool is twice the
    # last, KiBs at once), so whichever step crosses a boundary would carry the whole new pool. Each
    # figure counts every qstr at its real cost (7 bytes of pool entry + its characters) instead.
    SLACK[i] = max(0, (n_total - n_data) - n_pool * 24 - n_qstr * 7)  # 32-bit pool header, entry


def _report():
    n = len(STEPS)
    base = MARKS[n] - SLACK[n]
    m = [MARKS[i] - SLACK[i] - base for i in range(n)]
    if CASE in ("umqtt", "core", "modules"):
        v = m[-1]
    elif CASE in ("app", "app0"):
        v = max(m[2:])  # after cycles 2 and 3: steady state
    elif CASE == "update":
        v = max(m)
    else:
        v = m[-1] - m[-2]  # the last step on top of the ones before
    out = {"kib": kib(v), "steps": [[STEPS[i][0], kib(m[i]), kib(ALLOC[i])] for i in range(n)],
           "qstr_pool_slack_kib": [kib(SLACK[i]) for i in range(n + 1)],
           "modules": sorted(k for k in sys.modules if k.startswith(("keypin", "umqtt")))}
    print("HEAP32 " + json.dumps(out))
