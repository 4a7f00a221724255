# Device side of tools/lab/soak/soak.py (runs in the Unix port, one long process).
#   soak_dev.py STORE HTTPS_PORT MQTT_PORT CYCLES CHECK_EVERY WARMUP CTLDIR
# Each cycle: one pinned HTTPS request (new connection) and one MQTTS connect + publish +
# disconnect through one keypin.mqtt.Client (its ensure() reconnects with backoff). Servers are
# restarted by the host under the device's feet: both paths retry, bounded. At each checkpoint
# (the warm-up cycle, every CHECK_EVERY cycles, the end) it runs gc.collect(), prints one JSON line
# and waits (bounded) for CTLDIR/go.<cycle> so the host can count this process's descriptors
# while it holds no connection. Every loop is bounded.
import gc
import json
import os
import sys
import time

import keypin
from keypin import https, mqtt, tls

HOST = "device.example.test"
store_path = sys.argv[1]
web_port, mq_port, cycles, every, warmup = (int(a) for a in sys.argv[2:7])
ctl = sys.argv[7]

st = keypin.use_store(store_path)
seq0 = st.seq
tls.resolve[HOST] = "127.0.0.1"
url = f"https://{HOST}:{web_port}/checkin"
stat = {"retries": 0, "failures": 0, "mq_logs": 0}


def note(e, where):
    # one line per transient error, aggregated by the host: nothing accumulates here
    k = type(e).__name__
    if isinstance(e, keypin.PinMismatch):
        k += "(" + str(getattr(e, "reason", "")) + ")"
    elif isinstance(e, OSError) and e.args:
        k += "(" + str(e.args[0]) + ")"
    print(json.dumps({"transient": where + " " + k}))


def mqlog(msg):
    stat["mq_logs"] += 1  # counted, not kept: the soak measures the heap


c = mqtt.Client(b"keypin-soak", HOST, mq_port, user=b"dev", password=b"secret", keepalive=30, log=mqlog)


def https_once():
    for attempt in range(10):
        try:
            r = https.get(url, timeout=5)
            if r.status == 200 and r.content == b'{"ok": true}\n':
                return True
            note(ValueError("status"), "https")
        except Exception as e:  # noqa: BLE001, RUF100 - OSError, PinMismatch, HTTPError: retry, bounded
            note(e, "https")
        stat["retries"] += 1
        time.sleep_ms(100 * (attempt + 1))
    return False


def mqtt_once(i):
    for attempt in range(3):
        try:
            c.ensure(tries=6)  # keypin's reconnect: exponential backoff with jitter
            c.publish(b"keypin/soak", b"%d" % i, tries=4)
            c.disconnect()
            return True
        except Exception as e:  # noqa: BLE001, RUF100 - retried, bounded
            note(e, "mqtt")
            c.close()
        stat["retries"] += 1
        time.sleep_ms(200 * (attempt + 1))
    return False


def checkpoint(i, t0):
    gc.collect()
    gc.collect()
    print(json.dumps({"cycle": i, "heap": gc.mem_alloc(), "free": gc.mem_free(),
                      "failures": stat["failures"], "retries": stat["retries"],
                      "mq_logs": stat["mq_logs"], "connected": c.connected,
                      "seq": st.seq, "ms": time.ticks_diff(time.ticks_ms(), t0)}))
    flag = f"{ctl}/go.{i}"
    for _ in range(600):  # at most 60 s
        try:
            os.stat(flag)
            return
        except OSError:
            time.sleep_ms(100)
    print(json.dumps({"error": f"no go from the host for checkpoint {i}"}))
    sys.exit(3)


t0 = time.ticks_ms()
for i in range(1, cycles + 1):
    ok = https_once()
    ok = mqtt_once(i) and ok
    if not ok:
        stat["failures"] += 1
    if i == warmup or i % every == 0 or i == cycles:
        checkpoint(i, t0)
print(json.dumps({"done": cycles, "failures": stat["failures"], "retries": stat["retries"],
                  "seq_changed": st.seq != seq0, "ms": time.ticks_diff(time.ticks_ms(), t0)}))
