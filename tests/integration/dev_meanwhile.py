# Device side of test_retired_meanwhile.py.   dev_meanwhile.py STORE HOST PORT MODE [PIN_B]
# live: a connection whose key is retired while it is open is not used again
# lazy: keypin.context + asyncio.open_connection; the key is retired (a rotation) before the
#       first write, which runs the handshake
# busy: connects that fail at TCP leave the set's cached TLS context free
import json
import sys

import keypin
from keypin import store as kstore
from keypin import tls

path, host, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
st = kstore.open(path)
keypin.use_store(st)
out: dict = {}
try:
    if mode == "live":
        s = keypin.connect(host, port, addr="127.0.0.1", timeout=5)
        s.write(b"before\n")
        out["before"] = s.readline().decode()
        st.retire("api", st.get("api")["active"][0], force=True)
        try:
            s.write(b"after\n")
            out["after"] = s.readline().decode()
        finally:
            s.close()
    elif mode == "lazy":
        import asyncio
        ctx = keypin.context(host)

        async def main():
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
            try:
                st.rotate("api", 0, sys.argv[5])  # another connection met the backup server
                w.write(b"after\n")
                await w.drain()
                out["after"] = (await r.readline()).decode()
            finally:
                w.close()
        try:
            asyncio.run(main())
        except OSError:
            ctx.check()  # raises the PinMismatch
    elif mode == "busy":
        for _ in range(2):
            try:
                keypin.connect(host, port, timeout=2, addr="127.0.0.1")
            except OSError as e:
                out["connect"] = "OSError %s" % e
        out["busy"] = tls._ctxs[st.find(host)][4]
    out["ok"] = True
except keypin.KeypinError as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["reason"] = getattr(e, "reason", "")
print(json.dumps(out))
