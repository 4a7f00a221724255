"""A raw TCP server on loopback that speaks just enough TLS 1.2 to attack a client.

RawTLSServer(mode, ...) accepts connections in a thread, reads the client's ClientHello and
then, depending on mode:

  "stall"    answers nothing (holds the connection until the client closes it or stop())
  "cert"     sends a TLS 1.2 ServerHello and a Certificate handshake message built from
             `certs` (a list of DER byte strings, sent as given: truncated, garbage ...) or
             the raw Certificate message body `cert_body`; `cut` sends only that many bytes of
             the flight and closes (a truncated message)
  "version"  sends a ServerHello for protocol `version` (0x0300 SSLv3, 0x0301 TLS 1.0 ...)
             followed by the Certificate message of `certs` if given

then keeps reading until the client closes. It records everything: the ClientHello, every
TLS record the client sent after it (content types), whether the client closed and when.
Application data from the client would be a record of content type 23: `app_records`.
Every wait is bounded (`hold` seconds per connection, 0.2 s accept polls).
"""
import os
import socket
import struct
import threading
import time

HANDSHAKE, ALERT, APPDATA, CCS = 22, 21, 23, 20
# ECDHE suites, preferred first (any one the client offers will do: nothing gets that far)
_SUITES = (0xC02B, 0xC02F, 0xC02C, 0xC030, 0xC023, 0xC027, 0xC009, 0xC013, 0x009C)


def record(ctype, body, version=0x0303):
    return struct.pack(">BHH", ctype, version, len(body)) + body


def handshake(htype, body):
    return bytes([htype]) + len(body).to_bytes(3, "big") + body


def server_hello(suite, version=0x0303):
    # empty session id (no resumption), no compression, empty renegotiation_info
    ext = struct.pack(">HH", 0xFF01, 1) + b"\x00"
    body = struct.pack(">H", version) + os.urandom(32) + b"\x00" + struct.pack(">H", suite) + b"\x00"
    body += struct.pack(">H", len(ext)) + ext
    return handshake(2, body)


def certificate(certs=None, body=None):
    if body is None:
        entries = b"".join(len(c).to_bytes(3, "big") + c for c in certs)
        body = len(entries).to_bytes(3, "big") + entries
    return handshake(11, body)


def parse_records(data):
    """-> ([(content_type, payload)], leftover bytes)"""
    out, p = [], 0
    while len(data) - p >= 5:
        ctype, _, n = struct.unpack(">BHH", data[p:p + 5])
        if len(data) - p - 5 < n:
            break
        out.append((ctype, data[p + 5:p + 5 + n]))
        p += 5 + n
    return out, data[p:]


def client_suites(hello):
    """Cipher suites offered in a ClientHello handshake message (type, len3, body)."""
    b = hello[4:]
    p = 2 + 32
    p += 1 + b[p]
    n = struct.unpack(">H", b[p:p + 2])[0]
    return [struct.unpack(">H", b[p + 2 + i:p + 4 + i])[0] for i in range(0, n, 2)]


class RawTLSServer:
    def __init__(self, mode, certs=None, cert_body=None, cut=None, version=0x0303, hold=10.0):
        assert mode in ("stall", "cert", "version")
        self.mode, self.certs, self.cert_body, self.cut = mode, certs, cert_body, cut
        self.version, self.hold = version, hold
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.accepted = 0
        self.hellos = 0
        self.after_hello = []  # (content_type, payload) the client sent after its ClientHello
        self.received = b""  # every byte received
        self.client_closed = None  # monotonic time of the client's EOF/RST, None if it never closed
        self.hello_at = None
        self.errors = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def app_records(self):
        return sum(1 for t, _ in self.after_hello if t == APPDATA)

    @property
    def alerts(self):
        return [p for t, p in self.after_hello if t == ALERT]

    def _serve(self):
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:  # accept() timed out or the socket was closed
                continue
            self.accepted += 1
            try:
                self._one(c)
            except (OSError, ValueError, IndexError, struct.error) as e:  # outcomes: recorded
                self.errors.append(repr(e))
            finally:
                c.close()

    def _recv(self, c, deadline):
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                d = c.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return b""
            return d
        return None  # still open at the deadline

    def _one(self, c):
        c.settimeout(0.1)
        deadline = time.monotonic() + self.hold
        buf = b""
        hello = None
        while hello is None:
            d = self._recv(c, deadline)
            if not d:
                if d == b"":
                    self.client_closed = time.monotonic()
                return
            self.received += d
            buf += d
            recs, _ = parse_records(buf)
            hs = b"".join(p for t, p in recs if t == HANDSHAKE)
            if len(hs) >= 4 and hs[0] == 1 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
                hello = hs[:4 + int.from_bytes(hs[1:4], "big")]
                rest = buf[sum(5 + len(p) for _, p in recs):]
        self.hellos += 1
        self.hello_at = time.monotonic()
        if self.mode != "stall":
            offered = client_suites(hello)
            suite = next((s for s in _SUITES if s in offered), offered[0])
            flight = record(HANDSHAKE, server_hello(suite, self.version), version=self.version)
            if self.certs is not None or self.cert_body is not None:
                msg = certificate(self.certs, self.cert_body)
                # split into records of at most 16 KiB, as a real server would
                for i in range(0, len(msg), 16384):
                    flight += record(HANDSHAKE, msg[i:i + 16384], version=self.version)
            if self.cut is not None:
                flight = flight[:self.cut]
            c.sendall(flight)
            if self.cut is not None:
                c.shutdown(socket.SHUT_WR)
        buf = rest
        while True:
            recs, buf = parse_records(buf)
            self.after_hello += recs
            d = self._recv(c, deadline)
            if d is None:
                return
            if d == b"":
                self.client_closed = time.monotonic()
                return
            self.received += d
            buf += d

    def stop(self):
        self._stop.set()
        self.thread.join(self.hold + 5)
        self.lsock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
