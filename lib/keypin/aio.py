# keypin.aio: pinned TLS for asyncio. connect()/open_connection() check the server's key
# inside the handshake exactly as keypin.connect (the same core: keypin.tls.Attempt), and
# drive the handshake on a non-blocking socket without blocking the loop. HTTPS and MQTT
# over it: keypin.aio_https, keypin.aio_mqtt (imported on first use).
#
# How the handshake runs (MicroPython 1.23+, mbedTLS): wrap_socket(do_handshake_on_connect=
# False), then 1-byte reads; each one advances the handshake as far as the bytes that have
# arrived allow, and the verify callback decides inside one of them. We return as soon as it
# accepted the key: mbedTLS finishes the handshake (server signature, Finished) before it
# lets the first application byte out, so a failure there surfaces on the first write or
# read with nothing sent. A refused key is raised as PinMismatch, with the failure report.
import asyncio
import socket
import time
from errno import ECONNRESET, EINPROGRESS, ETIMEDOUT

from micropython import const

from keypin import Unsupported
from keypin import tls as _t

_BUF = const(256)


def _wait(s, wr):
    # until s is ready (a TLS socket maps the direction to the one mbedTLS needs)
    q = asyncio.core._io_queue  # type: ignore[attr-defined]
    yield q.queue_write(s) if wr else q.queue_read(s)


def timeout_error(what):
    return OSError(ETIMEDOUT, "deadline passed: " + what)


async def within(aw, ms, what):
    # await aw for at most ms milliseconds (None: no limit); OSError(ETIMEDOUT) after that
    if ms is None:
        return await aw
    if ms <= 0:
        aw.close()  # never started: nothing to clean up
        raise timeout_error(what)
    try:
        return await asyncio.wait_for_ms(aw, ms)
    except asyncio.TimeoutError:
        raise timeout_error(what)


def until(s):
    # a ticks_ms deadline s seconds from now (None: none)
    return None if s is None else time.ticks_add(time.ticks_ms(), int(s * 1000))


def left(end):
    return None if end is None else time.ticks_diff(end, time.ticks_ms())


class Stream:
    # Reader and writer in one (like asyncio's own). verdict: "active" | "backup" |
    # "rotated" once confirm() committed a pending rotation (call it after a genuine reply).
    def __init__(self, ss, raw, ps, pb, end=None):
        self.s = ss
        # the connect deadline also bounds the first read or write: the server proves its key
        # (signature, Finished) only as the handshake ends, inside that first I/O
        self._end = end
        self._raw = raw
        self.ps = ps  # the keypin.tls.PinnedStream: verdict, pin, pin set, backup
        self.verdict = ps.verdict
        self.pin = ps.pin
        self.pinset = ps.pinset
        self._b = bytearray(_BUF)
        self._i = 0
        self._n = 0
        if pb is not None:  # the byte read while finishing the handshake
            self._b[0] = pb
            self._n = 1
        self._out = b""

    def confirm(self):
        self.verdict = self.ps.confirm()
        return self.verdict

    async def _ready(self, s, wr):
        if self._end is None:
            await _wait(s, wr)
        else:
            await within(_wait(s, wr), left(self._end), "the end of the TLS handshake with " + self.pinset)

    def _trusted(self):
        # a key retired since the handshake (REPL, a signed update, another connection's
        # rotation) ends this connection at its next read or write, as keypin.tls's streams
        try:
            self.ps._trusted()
        except BaseException:
            self.close()
            raise

    async def _fill(self):
        # the buffer is empty: refill it; False at the end of the stream
        self._trusted()
        while True:
            s = self.s
            if s is None:
                raise OSError(9, "stream closed")
            n = s.readinto(self._b)
            if n is not None:
                break
            await self._ready(s, 0)
        self._end = None  # the handshake is over
        self._i = 0
        self._n = n
        return n > 0

    async def read(self, n=-1):
        # up to n bytes (b"" at the end); n < 0: everything until the end (unbounded)
        if n < 0:
            parts: list = []
            while True:
                d = await self.read(_BUF)
                if not d:
                    return b"".join(parts)
                parts.append(d)
        if self._i == self._n and not await self._fill():
            return b""
        j = min(self._n, self._i + n)
        d = bytes(self._b[self._i:j])
        self._i = j
        return d

    async def readinto(self, buf):
        if self._i == self._n and not await self._fill():
            return 0
        j = min(self._n, self._i + len(buf))
        buf[:j - self._i] = self._b[self._i:j]
        n = j - self._i
        self._i = j
        return n

    async def readexactly(self, n):
        parts = []
        while n:
            d = await self.read(n)
            if not d:
                raise EOFError
            parts.append(d)
            n -= len(d)
        return b"".join(parts)

    async def readline(self, limit=1024):
        # up to and including b"\n", at most limit bytes (check the end); b"" at the end
        out = b""
        while len(out) < limit:
            if self._i == self._n and not await self._fill():
                break
            b = self._b
            j = self._i
            k = min(self._n, self._i + limit - len(out))
            while j < k and b[j] != 10:
                j += 1
            if j < k:
                j += 1
            out += b[self._i:j]
            self._i = j
            if out[-1:] == b"\n":
                break
        return out

    def write(self, buf):
        self._out += buf

    async def drain(self):
        self._trusted()
        mv = memoryview(self._out)
        off = 0
        while off < len(mv):
            s = self.s
            if s is None:
                raise OSError(9, "stream closed")
            n = s.write(mv[off:])
            if n is None:
                await self._ready(s, 1)
            else:
                off += n
                self._end = None  # the handshake is over
        self._out = b""

    async def awrite(self, buf):
        self.write(buf)
        await self.drain()

    def close(self):
        if self.s is not None:
            self.s.close()
            self._raw.close()  # in case the TLS socket had already let go of it
            self.s = None

    async def wait_closed(self):
        self.close()

    aclose = wait_closed

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        self.close()


async def _tcp(host, port, addr):
    ai = socket.getaddrinfo(addr or _t.resolve.get(host) or host, port, 0, socket.SOCK_STREAM)[0]
    raw = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        raw.setblocking(False)
        try:
            raw.connect(ai[-1])
        except OSError as e:
            if e.args[0] != EINPROGRESS:
                raise
        await _wait(raw, 1)
    except BaseException:  # also CancelledError: no socket is left behind
        raw.close()
        raise
    return raw


async def _handshake(att, raw, end=None):
    ss = att.wrap(raw, False)  # closes raw if it fails
    b = bytearray(1)
    pb = None
    chk = att.chk
    try:
        while True:
            try:
                n = ss.readinto(b)
            except (OSError, ValueError) as e:
                raise att.failed(e)
            d = chk.decision
            if d >= _t.RETIRED:  # refused (mbedTLS may report the refusal as a byte count)
                raise att.failed(OSError(1))
            if n == 0:
                raise OSError(ECONNRESET, "connection closed during the TLS handshake with %s:%d"
                              % (att.host, att.port))
            if n:  # the server spoke first: the handshake is over; keep the byte
                pb = b[0]
                break
            if d:  # the key was checked and accepted
                break
            await _wait(ss, 0)
        ps = att.finish(ss)
    except BaseException:  # refused, failed, deadline or cancelled: nothing stays open
        att.release()
        ss.close()
        raw.close()
        raise
    return Stream(ss, raw, ps, pb, end)


async def _open(host, port, store, pinset, cadata, addr, end=None):
    st = store or _t.default_store()
    if isinstance(st, str):
        st = _t.use_store(st)
    name = pinset or st.find(host)
    if name is None:
        _t.Attempt(host, port, store=st)  # raises StoreError (no pin set), before any network
    raw = await _tcp(host, port, addr)
    try:
        # holds the set's TLS context (or a private one while another handshake uses it)
        att = _t.Attempt(host, port, store=st, pinset=name, cadata=cadata)
        if att.ctx is None:
            att.release()
            raise Unsupported("keypin.aio needs tls.SSLContext.verify_callback (MicroPython >= 1.23)")
    except BaseException:
        raw.close()
        raise
    return await _handshake(att, raw, end)


async def connect(host, port, *, store=None, pinset=None, cadata=None, addr=None, timeout=10):
    # -> Stream. timeout (s): one budget for TCP connect + TLS handshake (None: no limit)
    end = until(timeout)
    return await within(_open(host, port, store, pinset, cadata, addr, end),
                        None if timeout is None else int(timeout * 1000),
                        "TCP connect + TLS handshake with %s:%d" % (host, port))


async def open_connection(host, port, **kw):
    # asyncio's shape: (reader, writer), one pinned Stream
    s = await connect(host, port, **kw)
    return s, s
