# Device side of test_updates.py's rolling key change (issue 18): one device store, real nginx
# nodes under one host name, signed updates made by `keypin pinset sign`. Each step is a list of
# actions; prints one JSON line: what the device saw at every connection.
#   dev_rolling.py STORE STEPS.json
# STEPS: [["offer", update_file], ["get", port], ...]
import json
import sys

import keypin
from keypin import https, tls
from keypin.store import PinStore
from keypin.update import Updater

HOST = "device.example.test"
tls.resolve[HOST] = "127.0.0.1"
path = sys.argv[1]
with open(sys.argv[2]) as f:
    steps = json.load(f)
st = keypin.use_store(path)
u = Updater(st, path + ".state", log=lambda *a: None, device_id="dev-7", hosts=[HOST])
out = []
for act, arg in steps:
    if act == "offer":
        with open(arg, "rb") as f:
            r = u.offer(f.read(), "test")
        out.append(["offer", r, u.last and u.last["reason"]])
    else:
        try:
            r = https.get("https://%s:%d/checkin" % (HOST, arg), store=st, timeout=10)
            out.append(["get", arg, r.status, r.verdict])
        except keypin.PinMismatch as e:
            out.append(["get", arg, "refused", e.reason])
        except (keypin.KeypinError, OSError) as e:
            out.append(["get", arg, "error", repr(e)])
    s = PinStore(path)  # what is on flash now
    out[-1].append({"active": s.get("api")["active"], "backups": s.get("api")["backups"],
                    "retired": s.doc["retired"]})
print(json.dumps(out))
