"""A tiny MQTT 3.1.1 subscriber (sockets + ssl, no dependency) for ``keypin reports``.

CONNECT (clean session), one SUBSCRIBE at QoS 0, then PUBLISH packets until a count or a
deadline; PINGREQ while idle so the broker keeps the session.
"""
from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator

from .errors import CommandError

KEEPALIVE = 60
_CONNACK = {1: "unacceptable protocol version", 2: "client id rejected", 3: "server unavailable",
            4: "bad user name or password", 5: "not authorised"}


def _str(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, body: bytes) -> bytes:
    n, enc = len(body), bytearray()
    while True:
        d, n = n % 128, n // 128
        enc.append(d | (0x80 if n else 0))
        if not n:
            return bytes([kind]) + bytes(enc) + body


class Subscriber:
    def __init__(self, host: str, port: int, *, user: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None, timeout: float = 10.0):
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise CommandError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        try:
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=server_hostname or host)
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise CommandError(f"TLS with {host}:{port} failed: {e}") from None
        self.sock = sock
        self.buf = b""
        flags, payload = 0x02, _str(f"keypin-reports-{os.getpid()}".encode())
        if user is not None:
            flags |= 0x80
            payload += _str(user.encode())
            if password is not None:
                flags |= 0x40
                payload += _str(password.encode())
        self.sock.sendall(_packet(0x10, _str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE) + payload))
        kind, body = self._read(time.monotonic() + timeout)
        if kind != 0x20 or len(body) != 2:
            raise CommandError(f"{host}:{port} is not an MQTT broker (no CONNACK)")
        if body[1]:
            raise CommandError(f"{host}:{port} refused the connection: {_CONNACK.get(body[1], body[1])}")

    def _parse(self) -> tuple[int, bytes] | None:
        b = self.buf
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(b):
                return None
            c = b[i]
            n |= (c & 0x7F) << shift
            shift += 7
            i += 1
            if not c & 0x80:
                break
            if shift > 21:
                raise CommandError("malformed MQTT packet length")
        if len(b) < i + n:
            return None
        self.buf = b[i + n:]
        return b[0], b[i:i + n]

    def _read(self, deadline: float) -> tuple[int, bytes]:
        """One whole packet (kind, body); TimeoutError at the deadline (nothing consumed)."""
        while True:
            pkt = self._parse()
            if pkt is not None:
                return pkt
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            d = self.sock.recv(65536)  # socket.timeout is TimeoutError
            if not d:
                raise CommandError("the broker closed the connection")
            self.buf += d

    def subscribe(self, topic: str, timeout: float = 10.0) -> None:
        self.sock.sendall(_packet(0x82, struct.pack("!H", 1) + _str(topic.encode()) + b"\x00"))
        deadline = time.monotonic() + timeout
        while True:
            kind, body = self._read(deadline)
            if kind == 0x90:
                if body[2:3] == b"\x80":
                    raise CommandError(f"the broker refused the subscription to {topic}")
                return

    def messages(self, count: int = 0, timeout: float = 0) -> Iterator[tuple[str, bytes, bool]]:
        """(topic, payload, retained) until count messages (0: no limit) or timeout s (0: none)."""
        end = time.monotonic() + timeout if timeout else None
        seen = 0
        while not count or seen < count:
            now = time.monotonic()
            if end is not None and now >= end:
                return
            ping = now + KEEPALIVE / 2
            try:
                kind, body = self._read(min(ping, end) if end is not None else ping)
            except TimeoutError:
                if end is None or time.monotonic() < end:
                    self.sock.sendall(b"\xc0\x00")  # PINGREQ
                continue
            if kind & 0xF0 != 0x30:
                continue  # PINGRESP and the like
            tl = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + tl].decode("utf-8", "replace")
            off = 2 + tl + (2 if kind & 0x06 else 0)
            seen += 1
            yield topic, body[off:], bool(kind & 0x01)

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.sock.close()
