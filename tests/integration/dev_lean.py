# Device side of test_lean.py (Unix port): one pinned connection per target, same store.
#   dev_lean.py STORE TARGET...   TARGET = https:NAME:PORT[:HOST[:CAFILE]] (GET /checkin?via=NAME)
#                                        | mqtt:NAME:PORT[:HOST]  (publish keypin/lean/NAME)
# HOST (default device.example.test) is the name connected to (SNI), resolved to 127.0.0.1;
# CAFILE (DER or PEM): CA+pin mode (cadata), the chain is verified up to it as well.
# Prints one JSON line: {NAME: {ok, verdict, status | error}, "writes": n, "active": pin}.
import json
import sys

import keypin
from keypin import https, mqtt, tls
from keypin.store import _FS, PinStore


class CountFS(_FS):
    writes = 0

    def write(self, path, data):
        CountFS.writes += 1
        _FS.write(self, path, data)


HOST = "device.example.test"
st = PinStore(sys.argv[1], fs=CountFS())
keypin.use_store(st)
out = {}
for t in sys.argv[2:]:
    kind, name, port, *h = t.split(":")
    host = h[0] if h and h[0] else HOST
    cadata = None
    if len(h) > 1:
        with open(h[1], "rb") as f:
            cadata = f.read()
    tls.resolve[host] = "127.0.0.1"
    r = {}
    try:
        if kind == "https":
            resp = https.get("https://%s:%s/checkin?via=%s" % (host, port, name), cadata=cadata)
            r["status"], r["verdict"] = resp.status, resp.verdict
        else:
            c = mqtt.Client(b"kp-lean-" + name.encode(), host, int(port), user=b"dev", password=b"secret",
                            addr="127.0.0.1")
            c.ensure(tries=1)
            r["verdict"] = c.verdict
            c.publish(b"keypin/lean/" + name.encode(), b"via " + name.encode())
            c.close()
        r["ok"] = True
    except keypin.KeypinError as e:
        r["ok"], r["error"], r["msg"] = False, type(e).__name__, str(e)
    except OSError as e:
        r["ok"], r["error"], r["msg"] = False, "OSError", repr(e)
    out[name] = r
out["writes"] = CountFS.writes
st2 = PinStore(sys.argv[1])  # reloaded from flash
out["active"] = st2.get(st2.names()[0])["active"]
print(json.dumps(out))
