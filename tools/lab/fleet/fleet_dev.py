# Device side of tools/lab/fleet/fleet.py: one worker process simulating many devices round-robin.
#   fleet_dev.py W K N DEVDIR REAL_PORT ROGUE_PORT CTLDIR MAX_ROUNDS
# Devices W, W+K, W+2K ... < N; device i = its own pin store DEVDIR/<i>.json (loaded from flash
# at every connection, as after a reboot) and its own MQTT client id. Each round gives every
# unfinished device one connection (keypin.mqtt.Client: pinned TLS, CONNECT, CONNACK, DISCONNECT):
#  - before CTLDIR/switched exists: to the real broker;
#  - after: the steps real, rogue, real, rogue, real. A real step is repeated until it succeeds
#    (the broker may be restarting); the rogue gets a device only after a successful real
#    connection since the switch. The last real step is the "can it still reach the server" check.
# One JSON line per connection: {"d": device, "s": step, "t": target, "v": verdict or error}.
import json
import os
import sys
import time

import keypin
from keypin import mqtt
from keypin.store import PinStore

HOST = "device.example.test"
w, k, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
devdir = sys.argv[4]
real_port, rogue_port = int(sys.argv[5]), int(sys.argv[6])
ctl = sys.argv[7]
max_rounds = int(sys.argv[8])
POST = ("real", "rogue", "real", "rogue", "real")

devs = list(range(w, n, k))
step = {}  # device -> index into POST once switched
switched = False


def quiet(msg):
    pass


def connect(i, port):
    st = PinStore(f"{devdir}/{i}.json")
    c = mqtt.Client(b"fleet-%d" % i, HOST, port, user=b"dev", password=b"secret", keepalive=30, store=st,
                    addr="127.0.0.1", log=quiet)
    try:
        c.connect()
        v = c.verdict
        c.disconnect()
        return v
    except keypin.PinMismatch as e:
        return f"PinMismatch({e.reason})"
    except Exception as e:  # noqa: BLE001, RUF100 - every outcome is reported
        return f"{type(e).__name__}({e.args[0] if e.args else ''})"
    finally:
        c.close()


def is_switched():
    try:
        os.stat(ctl + "/switched")
        return True
    except OSError:
        return False


for rnd in range(max_rounds):
    if not devs:
        break
    left = []
    for i in devs:
        if not switched:
            switched = is_switched()
        if not switched:
            v = connect(i, real_port)
            print(json.dumps({"d": i, "r": rnd, "s": -1, "t": "real", "v": v}))
            if v not in ("active", "rotated"):
                time.sleep_ms(20)
            left.append(i)
            continue
        s = step.get(i, 0)
        target = POST[s]
        v = connect(i, real_port if target == "real" else rogue_port)
        ok = v in ("active", "rotated") if target == "real" else True
        print(json.dumps({"d": i, "r": rnd, "s": s, "t": target, "v": v}))
        if ok:
            s += 1
        elif target == "real":
            time.sleep_ms(20)  # the broker is restarting: do not spin
        step[i] = s
        if s < len(POST):
            left.append(i)
    devs = left
print(json.dumps({"worker": w, "unfinished": devs, "switched": switched}))
