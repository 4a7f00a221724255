# Device side of the handshake stage of `make bench` (Unix port), see handshakes.py.
#   handshakes_dev.py PLAN.json N
# PLAN: {"store": PATH, "cases": [{"name", "port", "host", "mode": pinned|plain|ca, "cadata": PATH}]}
# Every round runs each case once, the order rotated by one case per round (interleaved);
# prints one JSON line {"cases": {name: {"us": median, "n": N, "verdict": ...}}}.
import json
import socket
import sys
import time

import keypin
import tls
from keypin.tls import wrap


def med(v):
    v = sorted(v)
    return v[len(v) // 2]


def _ctx(mode, cadata):
    c = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    if mode == "plain":
        c.verify_mode = tls.CERT_NONE
    else:  # "ca": what a user without keypin picks: verify the chain up to the root
        c.verify_mode = tls.CERT_REQUIRED
        with open(cadata, "rb") as f:
            c.load_verify_locations(f.read())
    return c


def main():
    with open(sys.argv[1]) as f:
        plan = json.loads(f.read())
    n = int(sys.argv[2])
    keypin.use_store(plan["store"])
    cases = plan["cases"]
    addr = {}
    for c in cases:
        addr[c["name"]] = socket.getaddrinfo("127.0.0.1", c["port"])[0][-1]
        if c["mode"] != "pinned":
            c["ctx"] = _ctx(c["mode"], c.get("cadata"))
    verdict = {}

    def one(c):
        t = time.ticks_us()
        s = socket.socket()
        s.connect(addr[c["name"]])
        if c["mode"] == "pinned":
            ss = wrap(s, c["host"], c["port"])
            verdict[c["name"]] = ss.verdict
        else:
            ss = c["ctx"].wrap_socket(s, server_hostname=c["host"])
            verdict[c["name"]] = "ok"
        ss.close()
        return time.ticks_diff(time.ticks_us(), t)
    for c in cases:  # warm-up: contexts made, every listener answered once
        one(c)
    times = {c["name"]: [] for c in cases}
    k = len(cases)
    for i in range(n):
        for j in range(k):
            c = cases[(i + j) % k]
            times[c["name"]].append(one(c))
    print(json.dumps({"cases": {c["name"]: {"us": med(times[c["name"]]), "n": n, "verdict": verdict[c["name"]]}
                                for c in cases}}))


main()
