# Device side of test_https.py (and the body rows of test_attacks.py): runs one HTTP scenario
# and prints a JSON line.
#   dev_https.py STORE PORT SCENARIO [ARG] [timeout=S] [max_body=N] [unframed=1] [addr_port=P]
# SCENARIO: post | get ARG | save ARG | stream ARG (iter_content) | maxbody ARG
import hashlib
import json
import os
import sys
from binascii import hexlify

import keypin
from keypin import https, tls

store, port, sc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
arg = None
opt = {}
for a in sys.argv[4:]:
    if "=" in a:
        k, _, v = a.partition("=")
        opt[k] = v
    else:
        arg = a
keypin.use_store(store)
tls.resolve["device.example.test"] = "127.0.0.1"
tls.resolve["pinned.example.test"] = "127.0.0.1"
base = "https://device.example.test:%d" % port
kw = {"timeout": float(opt.get("timeout", "10"))}
if "max_body" in opt:
    kw["max_body"] = int(opt["max_body"])
if opt.get("unframed"):
    kw["unframed"] = True
out = {}


def sha(b):
    return hexlify(hashlib.sha256(b).digest()).decode()


dl = store + ".dl"
r = None
try:
    if sc == "post":
        r = https.post(base + "/checkin", json={"a": 1}, **kw)
        out["status"], out["verdict"] = r.status, r.verdict
        out["json"] = r.json() if r.status == 200 else None
    elif sc == "get":
        kw.setdefault("max_body", 300000)
        r = https.get(base + arg, **kw)
        out["status"], out["len"], out["sha"] = r.status, len(r.content), sha(r.content)
        out["complete"], out["verdict"] = r.complete, r.verdict
    elif sc == "save":
        r = https.get(base + arg, stream=True, **kw)
        out["status"] = r.status
        out["n"] = r.save(dl)
        with open(dl, "rb") as f:
            out["sha"] = sha(f.read())
    elif sc == "stream":
        r = https.get(base + arg, stream=True, **kw)
        out["status"] = r.status
        h = hashlib.sha256()
        n = 0
        for d in r.iter_content(1024):
            n += len(d)
            h.update(d)
        out["n"], out["sha"] = n, hexlify(h.digest()).decode()
    elif sc == "maxbody":
        r = https.get(base + arg, max_body=1000)
    out["ok"] = True
except (keypin.KeypinError, OSError) as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["msg"] = str(e)
    out["errno"] = e.args[0] if isinstance(e, OSError) and e.args else None
files = []
for name in (dl, dl + ".tmp"):
    try:
        os.stat(name)
        files.append(name.rsplit("/", 1)[-1])
    except OSError:
        pass
out["files"] = files
print(json.dumps(out))
