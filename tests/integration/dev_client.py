# Device-side client for the pinning integration tests (runs in the Unix port).
#   dev_client.py STORE HOST PORT MODE [CADATA_FILE]
# MODE: confirm | noconfirm | ping. Prints one JSON line with the outcome, the store's
# seq, active pin and the number of flash writes (file layer instrumented).
import json
import sys

import keypin
from keypin.store import _FS, PinStore


class CountFS(_FS):
    writes = 0

    def write(self, path, data):
        CountFS.writes += 1
        _FS.write(self, path, data)


store_path, host, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cadata = None
if len(sys.argv) > 5:
    with open(sys.argv[5], "rb") as f:
        cadata = f.read()
st = PinStore(store_path, fs=CountFS())
keypin.use_store(st)
out = {}
try:
    s = keypin.connect(host, port, timeout=10, cadata=cadata, addr="127.0.0.1")
    out["verdict"] = s.verdict
    out["backup"] = s.backup
    s.write(b"ping\n")
    out["reply"] = s.readline().decode()
    if mode == "confirm":
        out["after"] = s.confirm()
    s.close()
    out["ok"] = True
except keypin.KeypinError as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["msg"] = str(e)
except OSError as e:
    out["ok"] = False
    out["error"] = "OSError"
    out["msg"] = repr(e)
name = st.find(host)
st2 = PinStore(store_path)  # reload from flash: what a rebooted device sees
s2 = st2.get(name)
out["seq"] = st2.seq
# pin document v2: one pin in service is printed as that pin, backups flat, retired device-wide
out["active"] = s2["active"][0] if len(s2["active"]) == 1 else s2["active"]
out["backups"] = [p for g in s2["backups"] for p in g]
out["retired"] = st2.doc["retired"]
out["writes"] = CountFS.writes
print(json.dumps(out))
