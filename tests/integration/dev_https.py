# Device side of test_https.py: runs one HTTP scenario and prints a JSON line.
#   dev_https.py STORE PORT SCENARIO [ARG]
import hashlib
import json
import sys
from binascii import hexlify

import keypin
from keypin import https, tls

store, port, sc = sys.argv[1], int(sys.argv[2]), sys.argv[3]
arg = sys.argv[4] if len(sys.argv) > 4 else None
keypin.use_store(store)
tls.resolve["device.example.test"] = "127.0.0.1"
tls.resolve["pinned.example.test"] = "127.0.0.1"
base = "https://device.example.test:%d" % port
out = {}
try:
    if sc == "post":
        r = https.post(base + "/checkin", json={"a": 1})
        out["status"], out["json"], out["verdict"] = r.status, r.json(), r.verdict
    elif sc == "get":
        r = https.get(base + arg, max_body=300000)
        out["status"], out["len"] = r.status, len(r.content)
        out["sha"] = hexlify(hashlib.sha256(r.content).digest()).decode()
    elif sc == "save":
        r = https.get(base + arg, stream=True)
        out["n"] = r.save(store + ".dl")
        with open(store + ".dl", "rb") as f:
            out["sha"] = hexlify(hashlib.sha256(f.read()).digest()).decode()
    elif sc == "maxbody":
        https.get(base + arg, max_body=1000)
    out["ok"] = True
except keypin.KeypinError as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["msg"] = str(e)
print(json.dumps(out))
