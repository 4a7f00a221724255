# Device side of test_context.py: keypin.context() where a client takes an SSLContext.
#   dev_context.py STORE MODE PORT
# MODE: wrap (ctx.wrap_socket on a plain socket, a ping line) | asyncio (asyncio.open_connection
# with ssl=ctx) | umqtt (MQTTClient(ssl=ctx) of the current umqtt.simple API: connect, then
# confirm after CONNACK, publish).
import json
import socket
import sys

import keypin
from keypin import store as kstore

path, mode, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOST = "device.example.test"
st = kstore.open(path)
keypin.use_store(st)
out = {}
try:
    ctx = keypin.context(HOST, timeout=10)
    if mode == "wrap":
        s = socket.socket()
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        ss = ctx.wrap_socket(s, server_hostname=HOST)
        out["verdict"] = ctx.verdict
        ss.write(b"ping\n")
        out["reply"] = ss.readline().decode()
        out["after"] = ctx.confirm()
        ss.close()
    elif mode == "asyncio":
        # MicroPython's own asyncio streams with ssl=ctx: the handshake runs in the first
        # write; a refused key fails that write before any byte is sent
        import asyncio

        async def main():
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=HOST)
            try:
                w.write(b"ping\n")
                await w.drain()
                out["reply"] = (await r.readline()).decode()
                out["verdict"] = ctx.check()
                out["after"] = ctx.confirm()
            finally:
                w.close()

        try:
            asyncio.run(main())
        except OSError:
            out["verdict"] = ctx.verdict  # "refused": ctx.check() raises PinMismatch
            ctx.check()
    else:
        sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])
        from umqtt_current import MQTTClient
        c = MQTTClient(b"kp-ctx", "127.0.0.1", port, user=b"dev", password=b"secret", ssl=ctx)
        c.connect()  # raises unless CONNACK accepted the login
        out["verdict"] = ctx.verdict
        out["after"] = ctx.confirm()  # a genuine reply: commit a pending rotation
        c.publish(b"keypin/ctx", b"via context")
        c.disconnect()
    out["ok"] = True
except keypin.KeypinError as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["reason"] = getattr(e, "reason", "")
except OSError as e:
    out["ok"] = False
    out["error"] = "OSError"
    out["reason"] = repr(e)
again = kstore.PinStore(path)
out["active"] = again.get("api")["active"]
out["retired"] = again.doc["retired"]
print(json.dumps(out))
