# Pinned HTTPS/1.1 client over keypin.connect. Small on purpose: Host, Content-Length,
# chunked responses, streaming bodies, redirects only to pinned hosts (at most 3).
# Strict (issue 12, points 5 and 6): status line, headers, Content-Length and chunk sizes are
# parsed by keypin.wire and anything odd is an HTTPError; a body is complete only when its
# framing says so (Content-Length or chunked): this firmware's tls module returns b"" both for a
# TLS close_notify and for a bare TCP FIN, so a close-delimited body can never be proven
# complete and is refused unless the caller asks for it (unframed=True; save() never does).
# `timeout` is one budget for the whole request: connect, handshake, status line, headers and
# body, across redirects; a server that drips bytes cannot stretch it.
import time

from micropython import const

from keypin import wire
from keypin.tls import connect
from keypin.wire import HTTPError

StatusError = wire.StatusError  # raised by save() and by keypin.update (a reply with an unusable status)

_MAXREDIR = const(3)
_MAXBODY = const(16384)  # .content when no max_body is given


_split = wire.split  # (host, port, path) of an https:// URL; keypin.setup uses it


# the line reader and its I/O error live in keypin.wire, shared with keypin.httpsx
_io = wire.io_error
_line = wire.line


class Response:
    def __init__(self, sock, url, max_body=None, method="GET", unframed=False):
        self.url = url
        self._s = sock
        self._max = max_body
        self._unframed = unframed
        self.verdict = sock.verdict
        hd = wire.Head(method)
        while hd.feed(_line(sock)):
            pass
        self.status, self.reason, self.headers = hd.status, hd.reason, hd.headers
        self._chunked, self._left = hd.chunked, hd.left
        # a complete, well-formed status line and head from the pinned server, and a status
        # that is not an error: only now is the reply genuine enough to commit a rotation
        if self.status < 400:
            self.verdict = sock.confirm()
        self._chunk = 0  # bytes left in the current chunk
        self._done = self._left == 0
        self._seen = 0
        self._body = None
        # True when the body's end was proven by its framing (not by a close)
        self.complete = self._done

    @property
    def framed(self):
        return self._chunked or self._left >= 0

    def _raw(self, n, lim):
        # up to n body bytes, b"" at the (proven) end; lim: the most body bytes allowed, or None
        if self._done:
            return b""
        s = self._s
        if s is None:
            raise HTTPError("response already closed")
        if lim is not None and self._left > lim and not self._chunked:
            self.close()
            raise HTTPError("body of %d bytes exceeds max_body=%d" % (self._left, lim))
        try:
            if self._left > 0:  # Content-Length: the resident path
                d = s.read(min(n, self._left))
                if not d:
                    raise HTTPError("connection closed %d bytes before the end of the body" % self._left)
                self._left -= len(d)
                if self._left == 0:
                    self._done = self.complete = True
            else:  # chunked or close-delimited: keypin.httpsx (b"" at the end)
                from keypin.httpsx import read
                d = read(self, s, n)
                if not d:
                    return b""
        except OSError as e:
            self.close()
            raise _io(e, s)
        except HTTPError:
            self.close()
            raise
        self._seen += len(d)
        if lim is not None and self._seen > lim:
            self.close()
            raise HTTPError("body exceeds max_body=%d" % lim)
        return d

    # streaming, saving, error bodies: keypin.httpsx, imported on first use
    def iter_content(self, chunk=512, max_body=None):
        # streams the body; a limit (here or the request's max_body) holds under every framing
        from keypin.httpsx import iter_content
        return iter_content(self, chunk, max_body)

    def save(self, path, chunk=512, max_body=None):
        # stream a framed 2xx body to path.tmp, then rename: a cut download leaves no file
        from keypin.httpsx import save
        return save(self, path, chunk, max_body)

    @property
    def content(self):
        if self._body is None:
            lim = self._max if self._max is not None else _MAXBODY
            parts = []
            while True:
                d = self._raw(256, lim)
                if not d:
                    break
                parts.append(d)
            self._body = b"".join(parts)
            self.close()
        return self._body

    def _drain(self):
        # the body of an error status, kept for the message (keypin.httpsx)
        from keypin.httpsx import drain
        drain(self, self._max if self._max is not None else _MAXBODY)

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


def request(method, url, *, headers=None, data=None, json=None, timeout=10, max_body=None,
            stream=False, store=None, cadata=None, unframed=False):
    # max_body: the most body bytes accepted (.content: 16384 when not given; streams: no limit
    # unless given here or to iter_content/save). unframed=True accepts a close-delimited body
    # (r.complete stays False: its end is not proven).
    data, headers = wire.body(data, json, headers)
    end = time.ticks_add(time.ticks_ms(), int(timeout * 1000)) if timeout is not None else None
    for _ in range(_MAXREDIR + 1):
        host, port, path = _split(url)
        t = None
        if end is not None:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                raise OSError(110, "deadline passed before connecting to %s:%d (timeout=%s s)" % (host, port, timeout))
            t = left / 1000
        s = connect(host, port, store=store, timeout=t, cadata=cadata)
        try:
            s.write(wire.head(method, host, port, path, headers, None if data is None else len(data)))
            if data:
                s.write(data)
            r = Response(s, url, max_body, method, unframed)
        except BaseException as e:
            s.close()
            raise _io(e, s)
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers:
            r.close()
            url = _follow(url, r.headers["location"], store)
            if r.status == 303:
                method, data = "GET", None
            continue
        if not stream:
            if 200 <= r.status < 300:
                _ = r.content  # the whole body now (bounded by max_body); the connection closes
            else:
                r._drain()
        return r
    raise HTTPError("more than %d redirects" % _MAXREDIR)


def _follow(url, loc, store):
    # a redirect: only to a host a pin set covers (keypin.httpsx)
    from keypin.httpsx import follow
    return follow(url, loc, store)


def get(url, **kw):
    return request("GET", url, **kw)


def version(url, **kw):
    # GET url.version (an integer: the newest signed update published at url)
    r = get(url + ".version", max_body=32, **kw)
    if r.status != 200:
        raise StatusError(r.status, "update: %s.version answered %d" % (url, r.status))
    try:
        return int(r.content.strip())
    except ValueError:
        from keypin import KeypinError
        raise KeypinError("update: %s.version is not an integer" % url)


def post(url, **kw):
    return request("POST", url, **kw)
