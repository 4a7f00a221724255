# Pinned HTTPS/1.1 for asyncio over keypin.aio, with the rules of keypin.https: strict heads
# (keypin.wire), Content-Length and chunked bodies, streaming, save(), redirects only to pinned
# hosts (at most 3), max_body under every framing, one deadline for the whole request (connect,
# handshake, head, body, redirects). A pending rotation is confirmed only after a complete
# head whose status is 2xx/3xx. A close-delimited body cannot be proven complete here (the tls
# module returns b"" for a TCP FIN as for close_notify): refused unless unframed=True.
#   r = await aio_https.get("https://api.example.com/x", timeout=10)
#   r.status, r.headers, r.verdict, r.content (bytes), r.text(), r.json()
#   r = await aio_https.get(url, stream=True); await r.save(path) / async for d in r: ...
from micropython import const

from keypin import aio, wire
from keypin.wire import HTTPError

_MAXREDIR = const(3)
_MAXBODY = const(16384)  # .content when no max_body is given


async def _line(s):
    ln = await s.readline(wire.MAXLINE)
    if not ln or ln[-1:] != b"\n":
        raise HTTPError("connection closed by server before the end of a line" if len(ln) < wire.MAXLINE
                        else "line longer than %d bytes" % wire.MAXLINE)
    return ln


class Response:
    def __init__(self, s, url, method, max_body, unframed, end):
        self.url = url
        self._s = s
        self._m = method
        self._max = max_body
        self._unframed = unframed
        self._end = end
        self.verdict = s.verdict
        self.content = None  # the body, once read
        self.complete = False  # True when its framing proved the end

    async def _head(self):
        s = self._s
        hd = wire.Head(self._m)
        while hd.feed(await _line(s)):
            pass
        self.status, self.reason, self.headers = hd.status, hd.reason, hd.headers
        self._chunked, self._left = hd.chunked, hd.left
        # a complete, well-formed head from the pinned server with a status that is not an
        # error: only now is the reply genuine enough to commit a pending rotation
        if self.status < 400:
            self.verdict = s.confirm()
        self._chunk = 0
        self._done = self.complete = self._left == 0
        self._seen = 0

    @property
    def framed(self):
        return self._chunked or self._left >= 0

    async def _raw(self, n, lim):
        # up to n body bytes, b"" at the end; lim: the most body bytes allowed, or None
        if self._done:
            return b""
        s = self._s
        if lim is not None and self._left > lim:
            raise HTTPError("body of %d bytes exceeds max_body=%d" % (self._left, lim))
        if self._chunked:
            if not self._chunk:
                from keypin.wirex import chunk_size  # the rare half of keypin.wire
                self._chunk = chunk_size(await _line(s))
                if not self._chunk:
                    for _ in range(wire.MAXHDRS + 1):  # trailers, then the empty line
                        if await _line(s) in (b"\r\n", b"\n"):
                            self._done = self.complete = True
                            return b""
                    raise HTTPError("too many trailer lines")
            d = await s.read(min(n, self._chunk))
            if not d:
                raise HTTPError("connection closed inside a chunk")
            self._chunk -= len(d)
            if not self._chunk and await _line(s) not in (b"\r\n", b"\n"):
                raise HTTPError("chunk not followed by CRLF")
        elif self._left > 0:
            d = await s.read(min(n, self._left))
            if not d:
                raise HTTPError("connection closed %d bytes before the end of the body" % self._left)
            self._left -= len(d)
            self._done = self.complete = not self._left
        elif not self._unframed:
            raise HTTPError("body without Content-Length or chunked framing: its end cannot be "
                            "proven (a TCP close looks like a TLS close_notify here)")
        else:
            d = await s.read(n)
            self._done = not d  # an unproven end: .complete stays False
        self._seen += len(d)
        if lim is not None and self._seen > lim:
            raise HTTPError("body exceeds max_body=%d" % lim)
        return d

    async def chunk(self, n=512, max_body=None):
        # the next piece of the body (b"" at the end), within the request's deadline
        return await self._piece(n, max_body if max_body is not None else self._max)

    async def _piece(self, n, lim):
        try:
            d = await aio.within(self._raw(n, lim), aio.left(self._end), "HTTPS response from " + self.url)
        except BaseException:
            self.close()
            raise
        if not d:
            self.close()
        return d

    def __aiter__(self):
        return self

    async def __anext__(self):
        d = await self.chunk()
        if not d:
            raise StopAsyncIteration
        return d

    async def read(self):
        # the whole body (at most max_body, 16384 when not given), also as .content
        if self.content is None:
            lim = self._max if self._max is not None else _MAXBODY
            parts = []
            while True:
                d = await self._piece(256, lim)
                if not d:
                    break
                parts.append(d)
            self.content = b"".join(parts)
        return self.content

    async def _drain(self):
        # the body of an error reply: what fits in max_body, never an error for its size/framing
        lim = self._max if self._max is not None else _MAXBODY
        self._unframed = True
        parts = []
        n = 0
        try:
            while n < lim:
                d = await self._piece(min(256, lim - n), None)
                if not d:
                    break
                parts.append(d)
                n += len(d)
        except (HTTPError, OSError) as e:
            self.cut = str(e)  # what ended the error body early
        self.content = b"".join(parts)
        self.close()

    def text(self):
        return (self.content or b"").decode()

    def json(self):
        import json
        return json.loads(self.content or b"")

    async def save(self, path, n=512, max_body=None):
        # a framed 2xx body to path.tmp, renamed over path only once complete
        from keypin import wirex
        try:
            wirex.savable(self.status, self.framed, self.url)
        except HTTPError:
            self.close()
            raise
        t = 0
        with wirex.Saving(path) as f:
            while True:
                d = await self.chunk(n, max_body)
                if not d:
                    return t
                f.write(d)
                t += len(d)

    def close(self):
        self._done = True
        if self._s is not None:
            self._s.close()
            self._s = None


async def _one(method, url, headers, data, store, cadata, max_body, unframed, end):
    host, port, path = wire.split(url)
    s = await aio.connect(host, port, store=store, cadata=cadata, timeout=None)
    try:
        s.write(wire.head(method, host, port, path, headers, None if data is None else len(data)))
        if data:
            s.write(data)
        await s.drain()
        r = Response(s, url, method, max_body, unframed, end)
        await r._head()
    except BaseException:
        s.close()
        raise
    return r


async def request(method, url, *, headers=None, data=None, json=None, timeout=10, max_body=None,
                  stream=False, store=None, cadata=None, unframed=False):
    # max_body: the most body bytes accepted (.content: 16384 when not given; streams: no
    # limit unless given here or to chunk/save). unframed=True accepts a close-delimited body.
    from keypin import tls
    st = store or tls.default_store()
    data, headers = wire.body(data, json, headers)
    end = aio.until(timeout)
    for _ in range(_MAXREDIR + 1):
        r = await aio.within(_one(method, url, headers, data, st, cadata, max_body, unframed, end),
                             aio.left(end), "HTTPS %s %s" % (method, url))
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers:
            r.close()
            url = wire.follow(url, r.headers["location"], st)
            if r.status == 303:
                method, data = "GET", None
            continue
        if not stream:
            if 200 <= r.status < 300:
                await r.read()
            else:
                await r._drain()
        return r
    raise HTTPError("more than %d redirects" % _MAXREDIR)


async def get(url, **kw):
    return await request("GET", url, **kw)


async def post(url, **kw):
    return await request("POST", url, **kw)
