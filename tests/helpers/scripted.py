"""Loopback servers that misbehave on purpose after a genuine TLS handshake (CPython ssl).

ScriptedHTTPS(certfile, keyfile, reply, drip=None, end="notify", prefix=b"") accepts connections,
completes the handshake, reads the request head (or, with until=None, the first bytes: an MQTT
CONNECT), then sends `prefix` at once and `reply` (bytes):
all at once, or one byte every `drip` seconds (`sent` counts the reply bytes). Then it ends the connection with a TLS close_notify ("notify"), with a bare
TCP FIN and no close_notify ("fin"), or holds it until the client closes ("hold").
It records the requests, the bytes it managed to send and whether the client hung up first.

FinRelay(upstream_port, cut) relays TCP both ways between a client and a real server (nginx)
and, after the TLS record that brings the bytes sent to the client to `cut`, sends the client a FIN (no TLS alert: a
relay cannot make one) and drops the upstream: the "cut download" of a path an attacker sits on.
Every wait is bounded.
"""
import socket
import time

from helpers.servers import TLSServer


class ScriptedHTTPS(TLSServer):
    def __init__(self, certfile, keyfile, reply, drip=None, end="notify", hold=20.0, prefix=b"", until=b"\r\n\r\n"):
        assert end in ("notify", "fin", "hold")
        self.reply, self.drip, self.end, self.hold, self.prefix = reply, drip, end, hold, prefix
        self.until = until  # what ends the request; None: the first bytes received (an MQTT CONNECT)
        self.requests = []
        self.handshakes = 0
        self.sent = 0  # reply bytes sent (all connections)
        self.client_hung_up = False  # the client closed before the whole reply was sent
        super().__init__(certfile, keyfile)

    def _one(self, c):
        s = self.ctx.wrap_socket(c, server_side=True)
        self.handshakes += 1
        head = b""
        while len(head) < 65536:
            d = s.recv(4096)
            if not d:
                return
            head += d
            if self.until is None or self.until in head:
                break
        self.requests.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        try:
            if self.prefix:
                s.sendall(self.prefix)
            if self.drip is None:
                s.sendall(self.reply)
                self.sent += len(self.reply)
            else:
                deadline = time.monotonic() + self.hold
                for i in range(len(self.reply)):
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
                    s.sendall(self.reply[i:i + 1])
                    self.sent += 1
                    time.sleep(self.drip)
        except OSError:
            self.client_hung_up = True
            return
        if self.end == "notify":
            s.settimeout(1)
            try:
                s.unwrap()
            except (OSError, ValueError):  # the client closed without answering the alert
                pass
        elif self.end == "fin":
            raw = socket.socket(fileno=s.detach())
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except OSError:
                pass
            raw.close()
        else:
            s.settimeout(0.2)
            deadline = time.monotonic() + self.hold
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    if not s.recv(4096):
                        return
                except TimeoutError:
                    continue
                except (OSError, ValueError):
                    return


class FinRelay(TLSServer):
    def __init__(self, upstream_port, cut):
        self.upstream_port, self.cut = upstream_port, cut
        self.down = 0  # server -> client bytes relayed
        self.fins = 0
        super().__init__(None, None)  # plain TCP: the relay never sees inside TLS

    def _one(self, c):
        # whole TLS records only, so that the client sees a clean end of stream after the last
        # one it got (a cut inside a record would be a TLS error, not the attack)
        up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        c.settimeout(0.05)
        up.settimeout(0.05)
        deadline = time.monotonic() + 30
        pend = b""
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                for a, down in ((c, False), (up, True)):
                    try:
                        d = a.recv(16384)
                    except TimeoutError:
                        continue
                    if not d:
                        return
                    if not down:
                        up.sendall(d)
                        continue
                    pend += d
                    while len(pend) >= 5 and len(pend) >= 5 + int.from_bytes(pend[3:5], "big"):
                        n = 5 + int.from_bytes(pend[3:5], "big")
                        c.sendall(pend[:n])
                        self.down += n
                        pend = pend[n:]
                        if self.down >= self.cut:
                            c.shutdown(socket.SHUT_WR)  # a FIN, no close_notify
                            self.fins += 1
                            c.settimeout(5)
                            try:
                                while c.recv(4096):
                                    pass
                            except OSError:
                                pass
                            return
        finally:
            up.close()
