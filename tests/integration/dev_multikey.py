# Device side of test_multikey.py (Unix port): one pinned HTTPS request per target.
#   dev_multikey.py STORE HOST [UPDATE_URL] PORT [PORT ...]
# With UPDATE_URL (https://...): first poll a signed pin update there (keypin.update).
# For each port: keypin.connect (addr 127.0.0.1), GET /checkin, confirm after a 2xx status line.
# Prints one JSON line: per port the verdict, the matched pin, the status, or the error; then
# the store as a rebooted device would load it.
import json
import sys

import keypin
from keypin import store as kstore

path, host = sys.argv[1], sys.argv[2]
ports = sys.argv[3:]
st = kstore.open(path)
keypin.use_store(st)
out: dict = {}
if ports and ports[0].startswith("https://"):
    # first take a signed update over pinned HTTPS, as the app's update check does
    from keypin import tls
    from keypin.update import Updater
    tls.resolve[host] = "127.0.0.1"
    u = Updater(st, path + ".state", log=lambda m: None, device_id="dev", hosts=[host])
    try:
        out["update"] = u.poll(ports[0], timeout=10)
    except Exception as e:
        out["update"] = "%s: %s" % (type(e).__name__, e)
    out["update_reason"] = (u.last or {}).get("reason")
    ports = ports[1:]
res = []
for port in ports:
    r = {"port": int(port)}
    try:
        s = keypin.connect(host, int(port), timeout=10, addr="127.0.0.1")
        r["verdict"], r["pin"] = s.verdict, s.pin
        s.write(b"GET /checkin HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
        line = s.readline()
        r["status"] = int(line.split()[1])
        if 200 <= r["status"] < 300:
            r["after"] = s.confirm()
        s.close()
    except keypin.KeypinError as e:
        r["error"] = type(e).__name__
        r["reason"] = getattr(e, "reason", "")
    except OSError as e:
        r["error"] = "OSError"
        r["reason"] = repr(e)
    res.append(r)
again = kstore.PinStore(path)  # what a rebooted device loads
name = again.find(host)
s = again.get(name)
out.update({"results": res, "seq": again.seq, "version": again.doc["version"], "active": s["active"],
            "backups": s["backups"], "retired": again.doc["retired"]})
print(json.dumps(out))
