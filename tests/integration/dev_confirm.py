# Device half of test_faults.py::test_confirm_*: dev_confirm.py STORE HOST PORT MODE N [HOST2...]
# N pinned https.get /checkin through the app's store (keypin.store.open), then one to each HOST2
# (same server); prints one JSON line
# {"results", "notes", "seq", "sets", "retired"} (the store as a reboot reads it).
# MODE plain: as is; full: every store write fails with ENOSPC (the flash is full);
# retired: the REPL retires the presented backup key while the request is in flight; mqtt,
# mqtt-aio: the same during an MQTT connect (keypin.mqtt, keypin.aio_mqtt; real mosquitto).
import json
import sys

import keypin
from keypin import https, tls
from keypin import store as kstore

path, host, port, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
tls.resolve[host] = "127.0.0.1"


class FullFS(kstore._FS):
    def write(self, p, data):
        raise OSError(28, "ENOSPC")


st = kstore.open(path, FullFS() if mode == "full" else None)
keypin.use_store(st)
if mode.startswith(("retired", "mqtt")):
    rot = st.rotate

    def rotate(name, k, pin):
        kstore.PinStore(path).retire(name, pin)  # a second writer (the REPL) wins the race
        return rot(name, k, pin)

    st.rotate = rotate

def fds():
    import os
    return len(os.listdir("/proc/self/fd"))


def mqtt_once(aio):
    # one MQTT connect to the broker (user dev/secret); -> outcome, descriptors left open by it
    before = fds()
    try:
        if aio:
            import asyncio

            from keypin import aio_mqtt
            c = aio_mqtt.Client("dev-confirm", host, port, user="dev", password="secret", store=st, timeout=10)
            asyncio.run(c.connect())
        else:
            from keypin import mqtt
            c = mqtt.Client("dev-confirm", host, port, user="dev", password="secret", store=st, timeout=10)
            c.connect()
        r = "connected verdict %s" % c.verdict
        c.close()
    except Exception as e:
        r = "%s: %s" % (type(e).__name__, str(e).split("\n")[0])
    import gc
    gc.collect()
    return "%s; fds +%d" % (r, fds() - before)


out = []
for _ in range(n):
    if mode.startswith("mqtt"):
        out.append(mqtt_once(mode.endswith("aio")))
        continue
    try:
        r = https.get("https://%s:%d/checkin" % (host, port), timeout=10)
        out.append("status %d verdict %s" % (r.status, r.verdict))
        r.close()
    except Exception as e:
        out.append("%s: %s" % (type(e).__name__, str(e).split("\n")[0]))
for h in sys.argv[6:]:  # hosts of other sets, on the same server: one request each
    tls.resolve[h] = "127.0.0.1"
    try:
        r = https.get("https://%s:%d/checkin" % (h, port), timeout=10)
        out.append("%s: status %d verdict %s" % (h, r.status, r.verdict))
        r.close()
    except Exception as e:
        out.append("%s: %s: %s" % (h, type(e).__name__, str(e).split("\n")[0]))
again = kstore.PinStore(path)
print(json.dumps({"results": out, "notes": st.notes, "seq": again.seq, "sets": again.doc["sets"],
                  "retired": again.doc["retired"]}))
