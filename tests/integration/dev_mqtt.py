# Device side of test_mqtt.py.
#   dev_mqtt.py STORE PORT GEN SCENARIO [FLAGFILE]
# GEN: legacy (PyPI umqtt.simple 1.3.4) | current (stand-in for micropython-lib >= 1.4)
# SCENARIO: publish | restart (publish, wait for FLAGFILE, publish again after the broker restart)
#   | badpass (log in with a wrong password) | drip (connect with timeout=2 to a broker that drips) | hostile (subscribe where hostile retained messages
#   sit, keep polling, then publish "alive": the client must survive them)
import json
import os
import sys
import time

import keypin
from keypin import mqtt

store, port, gen, sc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
keypin.use_store(store)
cls = None
if gen == "current":
    sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])
    from umqtt_current import MQTTClient as cls
out = {"log": []}
try:
    pw = b"wrong" if sc == "badpass" else b"secret"
    kw = {"timeout": 2} if sc == "drip" else {}
    try:
        c = mqtt.Client(b"kp-dev-" + gen.encode(), "device.example.test", port, user=b"dev", password=pw,
                        addr="127.0.0.1", mqtt_class=cls, log=lambda m: out["log"].append(m), **kw)
    except TypeError:  # a keypin without mqtt timeouts (to see the drip test fail on it)
        c = mqtt.Client(b"kp-dev-" + gen.encode(), "device.example.test", port, user=b"dev", password=pw,
                        addr="127.0.0.1", mqtt_class=cls, log=lambda m: out["log"].append(m))
    out["legacy"] = c.legacy
    got = []
    if sc == "hostile":
        def on_msg(topic, msg):
            # what an application does with them: text commands, JSON documents
            if topic.endswith(b"/pins"):
                json.loads(msg)
            got.append((topic.decode(), msg.decode()))
        c.set_callback(on_msg)
        for topic, limit in ((b"keypin/test/hostile/cmd", 256), (b"keypin/test/hostile/pins", 8192)):
            try:
                c.subscribe(topic, max_msg=limit)
            except TypeError:  # a keypin without per-topic limits (to see these tests fail on it)
                c.subscribe(topic)
    c.ensure(tries=1)
    out["verdict"] = c.verdict
    if sc == "hostile":
        t = time.time()
        while time.time() - t < 20 and getattr(c, "dropped", 0) + getattr(c, "malformed", 0) + len(got) < 3:
            c.check_msg()
            time.sleep(0.02)
        out["dropped"], out["malformed"], out["got"] = getattr(c, "dropped", None), getattr(c, "malformed", None), got
    c.publish(b"keypin/test/" + gen.encode(), b"alive" if sc == "hostile" else b"hello 1")
    if sc == "restart":
        flag = sys.argv[5]
        t = time.time()
        while time.time() - t < 30:
            try:
                os.stat(flag)
                break
            except OSError:
                time.sleep(0.1)
        for i in range(50):  # drain the dead connection: the EOF surfaces as OSError
            try:
                c.check_msg()
            except OSError:
                c.close()
                break
            time.sleep(0.05)
        c.publish(b"keypin/test/" + gen.encode(), b"hello 2", tries=6)
        out["reconnected"] = True
    c.disconnect()
    out["ok"] = True
except Exception as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["msg"] = str(e)
print(json.dumps(out))
