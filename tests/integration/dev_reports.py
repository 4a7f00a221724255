# Device side of test_reports.py: a flood of pinned HTTPS connections to a server with an
# unknown key, with the failure-report ring hooked in; counts the ring's flash writes.
#   dev_reports.py STORE PORT N MIN_INTERVAL MAX_WRITES RING_PATH
import json
import sys
import time

import keypin
from keypin import https, tls
from keypin.report import Ring
from keypin.store import _FS


class CountFS(_FS):
    def __init__(self):
        self.writes = 0
        self.ops = 0

    def write(self, path, data):
        self.writes += 1
        self.ops += 1
        _FS.write(self, path, data)

    def rename(self, a, b):
        self.ops += 1
        _FS.rename(self, a, b)


store, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
st = keypin.use_store(store)
tls.resolve["device.example.test"] = "127.0.0.1"
fs = CountFS()
ring = Ring(sys.argv[6], st, size=8, min_interval=int(sys.argv[4]), max_writes=int(sys.argv[5]), fs=fs)
tls.on_mismatch = ring.record
t0 = time.ticks_ms()
refused = 0
for _ in range(n):
    try:
        https.get(f"https://device.example.test:{port}/checkin", timeout=5)
    except keypin.PinMismatch:
        refused += 1
elapsed = time.ticks_diff(time.ticks_ms(), t0) / 1000
print(json.dumps({"refused": refused, "writes": fs.writes, "ops": fs.ops, "elapsed": elapsed,
                  "items": len(ring.items), "dropped": ring.dropped, "unsaved": ring.unsaved}))
