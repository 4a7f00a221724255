# Device side of test_attacks.py (runs in the Unix port).
#   dev_attack.py STORE HOST PORT [cadata=FILE] [timeout=S] [update=URL state=FILE]
# One pinned connection attempt to 127.0.0.1:PORT for HOST, as the device would make it; if the
# handshake succeeds it behaves like the protocol layers (send a line, read the reply, confirm).
# With update=URL: keypin.update.Updater(store, state).poll(URL) instead (a signed pin update
# fetched over pinned HTTPS), reporting its outcome.
# With http=PATH [save=FILE] [max_body=N]: keypin.https.get of that path (streamed into FILE with
# save()), reporting the status, the verdict and whether FILE (or FILE.tmp) exists afterwards.
# With mqtt=USER:PASSWORD [hostile=1]: keypin.mqtt.Client connects (subscribed to the hostile
# topics keypin/test/hostile/{cmd,pins} when hostile=1, polls them), then publishes "alive".
# Prints one JSON line: the outcome, the error class/message/errno, the time taken, the
# process's open file descriptors before and after, and every write/rename/remove of the
# pin store's file layer.
import json
import os
import sys
import time

import keypin
from keypin.store import _FS, PinStore

OPS = []


class CountFS(_FS):
    def write(self, path, data):
        OPS.append("write " + path)
        _FS.write(self, path, data)

    def rename(self, a, b):
        OPS.append("rename " + a)
        _FS.rename(self, a, b)

    def remove(self, path):
        OPS.append("remove " + path)
        _FS.remove(self, path)


def fds():
    return len(os.listdir("/proc/self/fd"))


store_path, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
opt = {}
for a in sys.argv[4:]:
    k, _, v = a.partition("=")
    opt[k] = v
cadata = None
if "cadata" in opt:
    with open(opt["cadata"], "rb") as f:
        cadata = f.read()
timeout = float(opt.get("timeout", "10"))

# Record the TLS layer's own error (keypin may re-raise it as something else): a thin proxy
# over the real tls module, installed where keypin.tls looks it up.
import tls as _real
from keypin import tls as _ktls

TLS_ERR = []


class _Ctx:
    def __init__(self, proto):
        self.c = _real.SSLContext(proto)

    def _vc(self):
        return None

    def _set_vc(self, f):
        self.c.verify_callback = f

    verify_callback = property(_vc, _set_vc)

    def _vm(self):
        return None

    def _set_vm(self, m):
        self.c.verify_mode = m

    verify_mode = property(_vm, _set_vm)

    def load_verify_locations(self, *a):
        return self.c.load_verify_locations(*a)

    def wrap_socket(self, sock, **kw):
        try:
            return self.c.wrap_socket(sock, **kw)
        except Exception as e:
            TLS_ERR.append(repr(e))
            raise


class _Mod:
    SSLContext = _Ctx
    PROTOCOL_TLS_CLIENT = _real.PROTOCOL_TLS_CLIENT
    CERT_NONE = _real.CERT_NONE
    CERT_OPTIONAL = _real.CERT_OPTIONAL
    CERT_REQUIRED = _real.CERT_REQUIRED


_ktls._tls = lambda: _Mod

st = PinStore(store_path, fs=CountFS())
keypin.use_store(st)
out = {"connected": False, "sent": 0}
fd0 = fds()
t0 = time.ticks_ms()
try:
    if "update" in opt:
        # a pin update fetched over pinned HTTPS from the (genuine) server: the attack is the payload
        from keypin import tls as _t
        from keypin.update import Updater
        _t.resolve[host] = "127.0.0.1"
        u = Updater(st, path=opt["state"], log=lambda m: None)
        out["update"] = u.poll(opt["update"], timeout=timeout)
        out["update_last"] = u.last
        out["store_version"] = PinStore(store_path).doc["version"]
        raise SystemExit
    if "http" in opt:
        from keypin import https
        from keypin import tls as _t
        _t.resolve[host] = "127.0.0.1"
        kw = {"timeout": timeout}
        if "max_body" in opt:
            kw["max_body"] = int(opt["max_body"])
        url = "https://%s:%d%s" % (host, port, opt["http"])
        try:
            if "save" in opt:
                r = https.get(url, stream=True, **kw)
                out["status"], out["verdict"] = r.status, r.verdict
                out["saved"] = r.save(opt["save"])
            else:
                r = https.get(url, **kw)
                out["status"], out["verdict"], out["body"] = r.status, r.verdict, len(r.content)
            out["connected"] = True
        finally:
            files = []
            for f in (opt.get("save"), opt.get("save", "") + ".tmp"):
                try:
                    os.stat(f)
                    files.append(f.rsplit("/", 1)[-1])
                except (OSError, TypeError):
                    pass
            out["files"] = files
        raise SystemExit
    if "mqtt" in opt:
        from keypin import mqtt
        user, _, pw = opt["mqtt"].partition(":")
        c = mqtt.Client(b"kp-attack", host, port, user=user.encode(), password=pw.encode(), store=st,
                        addr="127.0.0.1", log=lambda m: None)
        got = []
        if "hostile" in opt:
            def on_msg(topic, msg):
                if topic.endswith(b"/pins"):
                    json.loads(msg)
                got.append(msg.decode())
            c.set_callback(on_msg)
            c.subscribe(b"keypin/test/hostile/cmd", max_msg=256)
            c.subscribe(b"keypin/test/hostile/pins", max_msg=8192)
        try:
            c.connect()
            out["connected"] = True
            out["verdict"] = c.verdict
            t1 = time.ticks_ms()
            while "hostile" in opt and c.dropped + c.malformed + len(got) < 2 \
                    and time.ticks_diff(time.ticks_ms(), t1) < 20000:
                c.poll()
                time.sleep_ms(20)
            c.publish(b"keypin/test/attack", b"alive")
            out["published"] = True
            out["dropped"], out["malformed"], out["got"] = c.dropped, c.malformed, len(got)
        finally:
            c.disconnect()
        raise SystemExit
    s = keypin.connect(host, port, timeout=timeout, cadata=cadata, addr="127.0.0.1")
    out["connected"] = True
    out["verdict"] = s.verdict
    out["sent"] = s.write(b"ping\n")
    try:
        out["reply"] = s.readline().decode()
        out["after"] = s.confirm()
    finally:
        s.close()
    out["error"] = None
except SystemExit:
    out.setdefault("error", None)
except keypin.KeypinError as e:  # MQTTException (umqtt's) is not one: the last clause records it
    out["error"] = type(e).__name__
    out["msg"] = str(e)
    out["reason"] = getattr(e, "reason", None)
except OSError as e:
    out["error"] = "OSError"
    out["msg"] = repr(e)
    out["errno"] = e.args[0] if e.args else None
except Exception as e:  # anything else is a finding: report it, do not crash
    out["error"] = type(e).__name__
    out["msg"] = repr(e)
out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
out["fds_before"] = fd0
out["fds_after"] = fds()
out["fs_ops"] = OPS
out["tls_error"] = TLS_ERR[0] if TLS_ERR else None
print(json.dumps(out))
