# Pinned HTTPS/1.1 client over keypin.connect. Small on purpose: Host, Content-Length,
# chunked responses, streaming bodies, redirects only to pinned hosts (at most 3).
from micropython import const

from keypin import KeypinError
from keypin.tls import connect

_MAXLINE = const(1024)
_PIECE = const(128)
_MAXHDRS = const(32)
_MAXREDIR = const(3)


class HTTPError(KeypinError):
    pass


def _split(url):
    if not url.startswith("https://"):
        raise HTTPError("only https:// URLs are pinned: %r" % url)
    rest = url[8:]
    i = rest.find("/")
    hp, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    port = 443
    if ":" in hp:
        hp, p = hp.rsplit(":", 1)
        try:
            port = int(p)
        except ValueError:
            raise HTTPError("bad port in %r" % url)
    if not hp:
        raise HTTPError("no host in %r" % url)
    return hp.lower(), port, path


def _line(s):
    # readline(n) reserves n bytes up front: read in small pieces, allow up to _MAXLINE
    ln = s.readline(_PIECE)
    if not ln:
        raise HTTPError("connection closed by server")
    while ln[-1:] != b"\n":
        if len(ln) >= _MAXLINE:
            raise HTTPError("line longer than %d bytes" % _MAXLINE)
        more = s.readline(_PIECE)
        if not more:
            raise HTTPError("connection closed by server")
        ln += more
    return ln


class Response:
    def __init__(self, sock, url, max_body):
        self.url = url
        self._s = sock
        self._max = max_body
        self.verdict = sock.verdict
        ln = _line(sock)
        parts = ln.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HTTPError("not an HTTP response: %r" % ln[:60])
        try:
            self.status = int(parts[1])
        except ValueError:
            raise HTTPError("bad status line: %r" % ln[:60])
        self.reason = parts[2].strip().decode() if len(parts) > 2 else ""
        # a genuine application response from the pinned server: commit any rotation
        self.verdict = sock.confirm()
        h: dict = {}
        while True:
            ln = _line(sock)
            if ln in (b"\r\n", b"\n"):
                break
            if len(h) >= _MAXHDRS:
                raise HTTPError("more than %d headers" % _MAXHDRS)
            k, _, v = ln.decode().partition(":")
            h[k.strip().lower()] = v.strip()
        self.headers = h
        self._chunked = "chunked" in h.get("transfer-encoding", "").lower()
        cl = h.get("content-length")
        self._left = -1 if cl is None or self._chunked else int(cl)
        self._chunk = 0  # bytes left in the current chunk
        self._done = self._left == 0
        self._seen = 0
        self._body = None

    def _raw(self, n):
        # up to n body bytes, b"" at the end
        if self._done:
            return b""
        s = self._s
        if self._chunked:
            if self._chunk == 0:
                sz = _line(s).split(b";")[0].strip()
                try:
                    self._chunk = int(sz, 16)
                except ValueError:
                    raise HTTPError("bad chunk size %r" % sz[:20])
                if self._chunk == 0:
                    while _line(s) not in (b"\r\n", b"\n"):  # trailers
                        pass
                    self._done = True
                    return b""
            d = s.read(min(n, self._chunk))
            if not d:
                raise HTTPError("connection closed inside a chunk")
            self._chunk -= len(d)
            if self._chunk == 0:
                _line(s)
        elif self._left > 0:
            d = s.read(min(n, self._left))
            if not d:
                raise HTTPError("connection closed %d bytes before the end of the body" % self._left)
            self._left -= len(d)
            if self._left == 0:
                self._done = True
        else:
            d = s.read(n)
            if not d:
                self._done = True
        self._seen += len(d)
        return d

    def iter_content(self, chunk=512):
        # streams the body; max_body does not apply here
        while True:
            d = self._raw(chunk)
            if not d:
                self.close()
                return
            yield d

    def save(self, path, chunk=512):
        # stream the body to path.tmp, then rename: a cut download leaves no half file
        import os
        n = 0
        with open(path + ".tmp", "wb") as f:
            for d in self.iter_content(chunk):
                f.write(d)
                n += len(d)
        os.rename(path + ".tmp", path)
        return n

    @property
    def content(self):
        if self._body is None:
            if self._left > self._max:
                self.close()
                raise HTTPError("body of %d bytes exceeds max_body=%d" % (self._left, self._max))
            parts = []
            while True:
                d = self._raw(256)
                if not d:
                    break
                if self._seen > self._max:
                    self.close()
                    raise HTTPError("body exceeds max_body=%d" % self._max)
                parts.append(d)
            self._body = b"".join(parts)
            self.close()
        return self._body

    @property
    def text(self):
        return self.content.decode()

    def json(self):
        import json
        return json.loads(self.content)

    def close(self):
        if self._s is not None:
            self._s.close()
            self._s = None


def request(method, url, *, headers=None, data=None, json=None, timeout=10, max_body=16384,
            stream=False, store=None, cadata=None):
    if json is not None:
        import json as _j
        data = _j.dumps(json)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
    if isinstance(data, str):
        data = data.encode()
    for _ in range(_MAXREDIR + 1):
        host, port, path = _split(url)
        s = connect(host, port, store=store, timeout=timeout, cadata=cadata)
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
            r = Response(s, url, max_body)
        except BaseException:
            s.close()
            raise
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers:
            r.close()
            url = _follow(url, r.headers["location"], store)
            if r.status == 303:
                method, data = "GET", None
            continue
        if not stream:
            _ = r.content  # the whole body now (bounded by max_body); the connection closes
        return r
    raise HTTPError("more than %d redirects" % _MAXREDIR)


def _follow(url, loc, store):
    if loc.startswith("/"):
        host, port, _ = _split(url)
        return "https://%s:%d%s" % (host, port, loc)
    host = _split(loc)[0]
    from keypin.tls import default_store
    st = store or default_store()
    if st.find(host) is None:
        raise HTTPError("redirect to %s refused: no pin set covers that host" % host)
    return loc


def get(url, **kw):
    return request("GET", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)
