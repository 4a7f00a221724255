# Device side of test_aio.py (runs in the Unix port): keypin.aio, aio_https and aio_mqtt in
# one asyncio loop.   dev_aio.py FILE   with FILE holding {"store": PATH, "sc": SCENARIO, ...}
# (a file, not an argument: this Unix port aborts with "FATAL: uncaught NLR" on an argument
# of 256 bytes or more)
# Scenarios: https (urls), mqtt (port, topic, msg, sub), both (https + mqtt at once), connect
# (raw stream: one line), cancel (a connect cancelled mid-handshake), deadline, restart (publish,
# wait for a flag file, publish again after the broker restarted).
# Prints one JSON line: the outcome per step, the failure reports recorded by the keypin.tls
# hook, and the open file descriptors before and after.
import asyncio
import json
import os
import sys
import time

import keypin
from keypin import aio, tls

with open(sys.argv[1]) as _f:
    A = json.load(_f)
HOST = A.get("host", "device.example.test")
tls.resolve[HOST] = "127.0.0.1"
keypin.use_store(A["store"])
REPORTS = []
tls.on_mismatch = REPORTS.append  # type: ignore[assignment]
LOG: list = []


def fds():
    return len(os.listdir("/proc/self/fd"))


def err(e):
    return {"error": type(e).__name__, "msg": str(e).split("\n")[0], "reason": getattr(e, "reason", None)}


async def https(url):
    from keypin import aio_https
    try:
        r = await aio_https.get(url, timeout=A.get("timeout", 10), stream=bool(A.get("save")))
        out = {"status": r.status, "verdict": r.verdict, "framed": r.framed}
        if A.get("save"):
            out["saved"] = await r.save(A["save"])
        else:
            out["len"] = len(r.content)
        return out
    except Exception as e:
        return err(e)


async def mqtt():
    from keypin import aio_mqtt
    got = []
    c = aio_mqtt.Client("kp-aio-" + A.get("id", "1"), HOST, A["port"], user=A.get("user", "dev"),
                        password=A.get("password", "secret"), keepalive=A.get("keepalive", 30),
                        will=(A.get("topic", "keypin/aio") + "/will", b"gone", False, 0),
                        timeout=A.get("timeout", 10), log=LOG.append)
    c.on_message = lambda t, m: got.append([t.decode(), len(m), m[:16].hex()])
    out = {}
    try:
        if A.get("sub"):
            await c.subscribe(A["sub"], qos=1, max_msg=A.get("max_msg"))
        if A.get("supervise"):
            c.start()
            await c.wait_connected(A.get("timeout", 10))
        else:
            await c.connect()
        out["verdict"] = c.verdict
        await c.publish(A.get("topic", "keypin/aio"), A.get("msg", "hello 1"), qos=A.get("qos", 0))
        if A.get("flag"):  # the broker restarts now: the supervisor must reconnect
            t = time.time()
            while time.time() - t < 30:
                try:
                    os.stat(A["flag"])
                    break
                except OSError:
                    await asyncio.sleep_ms(100)
            await asyncio.sleep_ms(300)
            await c.publish(A.get("topic", "keypin/aio"), "hello 2", qos=1, timeout=40)
            out["connects"] = c.connects
        if A.get("sub") and not A.get("supervise"):
            await asyncio.wait_for_ms(_serve(c, got), int(A.get("listen", 2) * 1000))
        elif A.get("sub"):
            await asyncio.sleep(A.get("listen", 2))
        out.update(got=got, received=c.received, dropped=c.dropped, malformed=c.malformed, connects=c.connects)
        await c.disconnect()
    except Exception as e:
        out.update(err(e))
        await c.disconnect()
    return out


async def _serve(c, got):
    want = A.get("count", 1)
    while len(got) < want:
        await c._packet(c.s)


async def main():
    out = {"fds_before": fds()}
    sc = A["sc"]
    try:
        if sc == "https":
            out["https"] = []
            for u in A["urls"]:  # one after the other (await is not allowed in a comprehension)
                out["https"].append(await https(u))
        elif sc == "mqtt" or sc == "restart":
            out["mqtt"] = await mqtt()
        elif sc == "both":
            r = await asyncio.gather(*[https(u) for u in A["urls"]], mqtt())
            out["https"], out["mqtt"] = r[:-1], r[-1]
        elif sc == "connect":
            s = await aio.connect(HOST, A["port"], timeout=A.get("timeout", 10))
            out["verdict"] = s.verdict
            if A.get("banner"):  # the server speaks first
                out["banner"] = (await s.readline()).decode()
            await s.awrite(b"ping\n")
            out["reply"] = (await s.readline()).decode()
            s.close()
        elif sc == "retire":  # a stream open, then another connection rotates away from its key
            s = await aio.connect(HOST, A["port"], timeout=10)
            await s.awrite(b"one\n")
            out["first"] = (await s.readline()).decode()
            out["rotation"] = (await https(A["url"]))["verdict"]
            try:
                await s.awrite(b"two\n")
                out["second"] = (await s.readline()).decode()
            except Exception as e:
                out["after"] = err(e)
            s.close()
        elif sc == "cancel":
            t = asyncio.create_task(aio.connect(HOST, A["port"], timeout=None))
            await asyncio.sleep_ms(A.get("after_ms", 300))
            out["fds_mid"] = fds()
            t.cancel()
            try:
                await t
                out["cancelled"] = False
            except asyncio.CancelledError:
                out["cancelled"] = True
        elif sc == "deadline":
            t0 = time.ticks_ms()
            try:
                s = await aio.connect(HOST, A["port"], timeout=A["timeout"])
                out["verdict"] = s.verdict
                try:  # the server sent the pinned certificate, then nothing: it never proves the key
                    await asyncio.wait_for(s.awrite(b"secret\n"), 30)  # a bound for this test only
                    out["written"] = True
                finally:
                    s.close()
            finally:
                out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
    except Exception as e:
        out.update(err(e))
    out["reports"] = [e.reason for e in REPORTS]
    out["fds_after"] = fds()
    out["log"] = LOG[-8:]
    print(json.dumps(out))


asyncio.run(main())
