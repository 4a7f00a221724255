# Pinned HTTPS/1.1 for asyncio over keypin.aio: what keypin.https has (Content-Length and
# chunked bodies, streaming, save(), redirects only to pinned hosts, max_body) with one
# deadline per request: connect + handshake + request + response, body reads included.
# A pending rotation is confirmed only after a complete, valid 2xx/3xx status line and head.
#   r = await aio_https.get("https://api.example.com/x", timeout=10)
#   r.status, r.headers, r.verdict, await r.read() / r.text() / r.json() / r.save(path)
from micropython import const

from keypin import aio, wire
from keypin.wire import HTTPError

_MAXREDIR = const(3)


async def _line(s):
    ln = await s.readline(wire.MAXLINE)
    if not ln:
        raise HTTPError("connection closed by server")
    if ln[-1:] != b"\n":
        raise HTTPError("line longer than %d bytes" % wire.MAXLINE)
    return ln


class Response:
    def __init__(self, s, url, method, max_body, end):
        self.url = url
        self._s = s
        self._m = method
        self._max = max_body
        self._end = end
        self.verdict = s.verdict
        self._done = False
        self.content = None  # the body once read()

    async def _head(self):
        s = self._s
        self.status, self.reason = wire.status(await _line(s))
        h: dict = {}
        while wire.header(await _line(s), h):
            pass
        self.headers = h
        self._chunked, self._left = wire.framing(h, self.status, self._m)
        self.framed = self._chunked or self._left >= 0  # its end can be proven
        if 200 <= self.status < 400:
            # a complete, well-formed answer from the pinned server: commit a pending rotation
            self.verdict = s.confirm()
        self._chunk = 0
        self._done = self._left == 0
        self._seen = 0

    async def _raw(self, n):
        # up to n body bytes; b"" at the (proven or close-delimited) end
        if self._done:
            return b""
        s = self._s
        if self._chunked:
            if not self._chunk:
                self._chunk = wire.chunk_size(await _line(s))
                if not self._chunk:
                    for _ in range(wire.MAXHDRS + 1):  # trailers, then the empty line
                        if await _line(s) in (b"\r\n", b"\n"):
                            self._done = True
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
            self._done = not self._left
        else:
            d = await s.read(n)
            self._done = not d
        self._seen += len(d)
        return d

    async def chunk(self, n=512):
        # the next piece of the body (b"" at the end), within the request's deadline
        try:
            d = await aio.within(self._raw(n), aio.left(self._end), "HTTPS response from " + self.url)
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

    async def read(self, framed=False):
        # the whole body, at most max_body bytes. framed: refuse a body whose end is not
        # proven (no Content-Length, not chunked: a cut connection looks like its end)
        if framed and not self.framed:
            self.close()
            raise HTTPError("%s: body has neither Content-Length nor chunked framing" % self.url)
        if self.content is not None:
            return self.content
        if self._left > self._max:
            self.close()
            raise HTTPError("body of %d bytes exceeds max_body=%d" % (self._left, self._max))
        parts = []
        while True:
            d = await self.chunk(256)
            if not d:
                self.content = b"".join(parts)
                return self.content
            if self._seen > self._max:
                self.close()
                raise HTTPError("body exceeds max_body=%d" % self._max)
            parts.append(d)

    async def text(self):
        return (await self.read()).decode()

    async def json(self):
        import json
        return json.loads(await self.read())

    async def save(self, path, n=512):
        # the body to path.tmp, renamed over path only once complete (framed bodies only)
        import os
        if not self.framed:
            self.close()
            raise HTTPError("%s: not saved: neither Content-Length nor chunked, its end is unproven" % self.url)
        t = 0
        try:
            with open(path + ".tmp", "wb") as f:  # noqa: ASYNC230 - MicroPython has no async file I/O
                while True:
                    d = await self.chunk(n)
                    if not d:
                        break
                    f.write(d)
                    t += len(d)
        except BaseException:
            try:
                os.remove(path + ".tmp")
            except OSError:
                pass
            raise
        os.rename(path + ".tmp", path)
        return t

    def close(self):
        self._done = True
        if self._s is not None:
            self._s.close()
            self._s = None


async def _one(method, url, headers, data, store, cadata, max_body, end):
    host, port, path = wire.split(url)
    s = await aio.connect(host, port, store=store, cadata=cadata, timeout=None)
    try:
        hdr = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: keypin\r\n" % (
            method, path, host if port == 443 else "%s:%d" % (host, port))
        if headers:
            for k in headers:
                hdr += "%s: %s\r\n" % (k, headers[k])
        if data is not None:
            hdr += "Content-Length: %d\r\n" % len(data)
        s.write(hdr.encode() + b"\r\n")
        if data:
            s.write(data)
        await s.drain()
        r = Response(s, url, method, max_body, end)
        await r._head()
    except BaseException:
        s.close()
        raise
    return r


async def request(method, url, *, headers=None, data=None, json=None, timeout=10, max_body=16384,
                  stream=False, store=None, cadata=None):
    from keypin import tls
    st = store or tls.default_store()
    if json is not None:
        import json as _j
        data = _j.dumps(json)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
    if isinstance(data, str):
        data = data.encode()
    end = aio.until(timeout)
    for _ in range(_MAXREDIR + 1):
        r = await aio.within(_one(method, url, headers, data, st, cadata, max_body, end), aio.left(end),
                             "HTTPS %s %s" % (method, url))
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers:
            r.close()
            url = wire.follow(url, r.headers["location"], st)
            if r.status == 303:
                method, data = "GET", None
            continue
        if not stream:
            await r.read()
        return r
    raise HTTPError("more than %d redirects" % _MAXREDIR)


async def get(url, **kw):
    return await request("GET", url, **kw)


async def post(url, **kw):
    return await request("POST", url, **kw)
