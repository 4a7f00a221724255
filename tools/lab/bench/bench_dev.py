# Device side of `make bench` (Unix port). Each comparison is interleaved A B A B ... in
# this one process; medians of per-batch times. Prints one JSON object per line.
#   bench_dev.py spki CERT...          spki_native_over_hash, spki_python_over_native per cert
#   bench_dev.py alloc CERT            callback_alloc_bytes_per_cert
#   bench_dev.py handshake STORE PORT N
#   bench_dev.py writes STORE PORT     flash writes per connect (instrumented file layer)
#   bench_dev.py ed25519 N
import gc
import hashlib
import json
import sys
import time


def med(v):
    v = sorted(v)
    return v[len(v) // 2]


def _batch(fn, arg, n):
    t = time.ticks_us()
    for _ in range(n):
        fn(arg)
    return time.ticks_diff(time.ticks_us(), t)


def spki(paths):
    import keypin_spki as N
    from keypin import spki as S
    from keypin import spkiref as R  # the Python reference
    out = []
    for p in paths:
        with open(p, "rb") as f:
            der = f.read()
        s, e = S.spki_range(der)
        sl = memoryview(der)[s:e]

        def h(x):
            return hashlib.sha256(x).digest()
        nat, hsh, py, nat2 = [], [], [], []
        for _ in range(31):  # interleaved batches
            nat.append(_batch(N.sha256, der, 200))
            hsh.append(_batch(h, sl, 200))
        for _ in range(15):
            py.append(_batch(R.python_sha256, der, 50))
            nat2.append(_batch(N.sha256, der, 50))
        out.append({"cert": p.rsplit("/", 1)[-1], "native_us": med(nat) / 200, "hash_us": med(hsh) / 200,
                    "python_us": med(py) / 50, "native_over_hash": med(nat) / med(hsh),
                    "python_over_native": med(py) / med(nat2)})
    print(json.dumps({"spki": out}))


def alloc(path):
    from keypin import spki as S
    from keypin.tls import Checker
    with open(path, "rb") as f:
        der = f.read()
    mv = memoryview(der)
    d = S.spki_sha256(der)
    chk = Checker([bytes(32)], [bytes(31) + b"\x01", d], [0, 1], [bytes(31) + b"\x02"], False)
    cb = chk.cb
    n = 2000
    for _ in range(10):
        cb(mv, 1)
        cb(mv, 0)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n // 2):
        cb(mv, 1)
        cb(mv, 0)
    b = gc.mem_alloc()
    gc.enable()
    assert chk.decision == 2  # backup group 1 matched: the full decision path ran
    print(json.dumps({"alloc_bytes_per_cert": (b - a) / n, "calls": n, "impl": S.IMPL}))


def handshake(store, port, n):
    import socket

    import keypin
    import tls
    from keypin.tls import wrap
    keypin.use_store(store)
    addr = socket.getaddrinfo("127.0.0.1", port)[0][-1]
    plain = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    plain.verify_mode = tls.CERT_NONE

    def one(pinned):
        t = time.ticks_us()
        s = socket.socket()
        s.connect(addr)
        if pinned:
            ss = wrap(s, "device.example.test", port)
        else:
            ss = plain.wrap_socket(s, server_hostname="device.example.test")
        ss.close()
        return time.ticks_diff(time.ticks_us(), t)
    one(True)
    one(False)
    a, b = [], []
    for i in range(n):
        if i & 1:
            b.append(one(False))
            a.append(one(True))
        else:
            a.append(one(True))
            b.append(one(False))
    print(json.dumps({"pinned_us": med(a), "plain_us": med(b), "ratio": med(a) / med(b), "n": n}))


def writes(store, port):
    # counted at the store's file layer (keypin.store._FS.write): store.py binds its own `open`
    # at import, so patching builtins.open would count nothing
    import keypin
    from keypin import https, tls
    from keypin.store import _FS, PinStore
    count = {"w": 0}

    class CountFS(_FS):
        def write(self, path, data):
            count["w"] += 1
            _FS.write(self, path, data)
    st = PinStore(store, fs=CountFS())
    keypin.use_store(st)
    tls.resolve["device.example.test"] = "127.0.0.1"
    https.get("https://device.example.test:%d/checkin" % port)  # first boot: the store completes its copies
    count["w"] = 0
    n = 20
    for _ in range(n):
        r = https.get("https://device.example.test:%d/checkin" % port)
        assert r.status == 200 and r.verdict == "active"
    per_connect = count["w"] / n
    # a rotation: the store moves to backup 0 (as confirm() does)
    count["w"] = 0
    s = st.get(st.names()[0])
    assert st.rotate(st.names()[0], 0, s["backups"][0][0]) is not False  # v2: backup group 0, its first pin
    print(json.dumps({"writes_per_connect": per_connect, "writes_per_rotation": count["w"]}))


def ed(n):
    from keypin import ed25519
    with open(sys.argv[3], "rb") as f:
        pk, msg, sig = json.loads(f.read())
    from binascii import unhexlify
    pk, msg, sig = unhexlify(pk), unhexlify(msg), unhexlify(sig)
    assert ed25519.verify(pk, msg, sig)
    t = []
    for _ in range(n):
        t0 = time.ticks_us()
        ed25519.verify(pk, msg, sig)
        t.append(time.ticks_diff(time.ticks_us(), t0))
    print(json.dumps({"ed25519_verify_ms": med(t) / 1000}))


cmd = sys.argv[1]
if cmd == "spki":
    spki(sys.argv[2:])
elif cmd == "alloc":
    alloc(sys.argv[2])
elif cmd == "handshake":
    handshake(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif cmd == "writes":
    writes(sys.argv[2], int(sys.argv[3]))
elif cmd == "ed25519":
    ed(int(sys.argv[2]))
