# Device side of test_oldfw.py. Stand-ins for older firmware, built over the real tls:
#   "peercert": SSLContext without verify_callback, sockets with getpeercert(True)
#               (MicroPython < 1.23 on ESP32);
#   "neither":  no verify_callback and no getpeercert.
#   dev_oldfw.py STORE PORT VARIANT
import json
import socket
import sys

import keypin
import tls as _real
from keypin import tls as ktls


class _Sock:
    def __init__(self, s, leaf, peercert):
        self.s = s
        self.leaf = leaf
        if peercert:
            self.getpeercert = self._gp

    def _gp(self, binary=False):
        return self.leaf

    def write(self, b, n=None):
        return self.s.write(b)

    def readline(self, n=-1):
        return self.s.readline()

    def close(self):
        self.s.close()


class _Ctx:
    def __init__(self, proto):
        pass

    def __setattr__(self, name, value):
        raise AttributeError(name)  # no verify_callback on this firmware

    def wrap_socket(self, sock, server_hostname=None):
        seen = {}

        def cb(cert, depth):
            if depth == 0:
                seen["leaf"] = bytes(cert)
            return 0
        c = _real.SSLContext(_real.PROTOCOL_TLS_CLIENT)
        c.verify_mode = _real.CERT_OPTIONAL
        c.verify_callback = cb
        s = c.wrap_socket(sock, server_hostname=server_hostname)
        return _Sock(s, seen.get("leaf"), MOD.peercert)


class MOD:
    PROTOCOL_TLS_CLIENT = 0
    CERT_OPTIONAL = 1
    CERT_REQUIRED = 2
    SSLContext = _Ctx
    peercert = True


store, port, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MOD.peercert = variant == "peercert"
keypin.use_store(store)
out = {}
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
try:
    st = ktls.wrap(s, "device.example.test", port, _tls_mod=MOD)
    out["verdict"] = st.verdict
    st.write(b"ping\n")
    out["reply"] = st.readline().decode()
    st.close()
    out["ok"] = True
except keypin.KeypinError as e:
    out["ok"] = False
    out["error"] = type(e).__name__
    out["msg"] = str(e)
print(json.dumps(out))
