# HTTP wire formats shared by the blocking and the asyncio clients, without any I/O: HTTP/1.1
# response heads and URLs (chunk sizes and save(): keypin.wirex; MQTT's formats: keypin.mqwire).
# Strict on purpose: a broken or hostile server gets an error, never a guess
# (issue 12, points 5 and 7).
from micropython import const

from keypin import KeypinError

MAXLINE = const(1024)  # one status, header or chunk-size line
_PIECE = const(128)  # readline(n) reserves n bytes: lines are read in pieces this big
MAXHDRS = const(32)
MAX1XX = const(4)  # interim responses skipped before the real one


class HTTPError(KeypinError):
    pass


def io_error(e, s):
    # a read past the stream's deadline: say what ran out
    if isinstance(e, OSError) and e.args and e.args[0] == 110:
        return OSError(110, "deadline passed while reading the response (%s)" % getattr(s, "pinset", "?"))
    return e


def line(s):
    # readline(n) reserves n bytes up front: read in small pieces, allow up to MAXLINE
    try:
        ln = s.readline(_PIECE)
        while ln and ln[-1:] != b"\n":
            if len(ln) >= MAXLINE:
                raise HTTPError("line longer than %d bytes" % MAXLINE)
            more = s.readline(_PIECE)
            if not more:
                break
            ln += more
    except OSError as e:
        raise io_error(e, s)
    if not ln or ln[-1:] != b"\n":
        raise HTTPError("connection closed by server before the end of a line")
    return ln


def status(ln):
    # b"HTTP/1.1 200 OK\r\n" -> (200, "OK")
    p = ln.split(None, 2)
    if len(p) < 2 or p[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(p[1]) != 3 or not p[1].isdigit():
        raise HTTPError("not an HTTP/1.x status line: %r" % ln[:60])
    try:
        why = p[2].strip().decode() if len(p) > 2 else ""
    except UnicodeError:
        why = ""
    return int(p[1]), why


def header(ln, h):
    # one header line into h (lower-case name -> value); False at the empty line ending the head
    if ln in (b"\r\n", b"\n"):
        return False
    if len(h) >= MAXHDRS:
        raise HTTPError("more than %d headers" % MAXHDRS)
    i = ln.find(b":")
    k = ln[:i]
    if i <= 0 or b" " in k or b"\t" in k:  # also a folded continuation line (obs-fold)
        raise HTTPError("malformed header line %r" % ln[:40])
    try:
        k = k.decode().lower()
        v = ln[i + 1:].strip().decode()
    except UnicodeError:
        raise HTTPError("header %r is not text" % ln[:40])
    o = h.get(k)
    if o is not None and o != v:
        if k in ("content-length", "transfer-encoding"):
            raise HTTPError("conflicting %s headers" % k)
        v = o + ", " + v
    h[k] = v
    return True


def framing(h, code=200, method="GET"):
    # -> (chunked, length); length -1: the body ends when the connection closes (not proven)
    if method == "HEAD" or code in (204, 304) or code < 200:
        return False, 0
    te = h.get("transfer-encoding")
    cl = h.get("content-length")
    if te is not None:
        if cl is not None:  # a request-smuggling shape: refuse rather than pick one
            raise HTTPError("both Transfer-Encoding and Content-Length")
        if te.strip().lower() != "chunked":
            raise HTTPError("unsupported Transfer-Encoding %r" % te[:40])
        return True, -1
    if cl is not None:
        if not cl or len(cl) > 10 or not cl.isdigit():
            raise HTTPError("bad Content-Length %r" % cl[:20])
        return False, int(cl)
    return False, -1


def split(url):
    # "https://host[:port]/path" -> (host, port, path); only https is pinned
    if not url.startswith("https://"):
        raise HTTPError("only https:// URLs are pinned: %r" % url)
    rest = url[8:]
    i = rest.find("/")
    hp, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    port = 443
    if ":" in hp:
        hp, p = hp.rsplit(":", 1)
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise HTTPError("bad port in %r" % url)
        port = int(p)
    if not hp:
        raise HTTPError("no host in %r" % url)
    return hp.lower(), port, path


def follow(url, loc, store):
    # the URL a redirect leads to, only to a host that a pin set covers
    if loc.startswith("/"):
        host, port, _ = split(url)
        return "https://%s:%d%s" % (host, port, loc)
    host = split(loc)[0]
    if store.find(host) is None:
        raise HTTPError("redirect to %s refused: no pin set covers that host" % host)
    return loc


class StatusError(HTTPError):
    # a genuine reply whose status the caller cannot use (e.g. 404 for an update URL)
    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status


def head(method, host, port, path, headers, n):
    # an HTTP/1.1 request head (n: the body length, or None)
    h = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: keypin\r\n" % (
        method, path, host if port == 443 else "%s:%d" % (host, port))
    if headers:
        for k in headers:
            h += "%s: %s\r\n" % (k, headers[k])
    if n is not None:
        h += "Content-Length: %d\r\n" % n
    return h.encode() + b"\r\n"


def body(data, json, headers):
    # a request body as bytes (json= is encoded, with its Content-Type) -> (data, headers)
    if json is not None:
        import json as _j
        data = _j.dumps(json)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
    return (data.encode() if isinstance(data, str) else data), headers


class Head:
    # A response head fed line by line (shared by keypin.https and keypin.aio_https):
    #   hd = Head(method); while hd.feed(<next line>): pass
    # then .status, .reason, .headers, .chunked, .left (-1: close-delimited). Interim 1xx
    # heads are skipped, at most MAX1XX of them.
    def __init__(self, method):
        self.m = method
        self.status = 0  # 0: the next line is a status line
        self._n = 0

    def feed(self, ln):
        if not self.status:
            self.status, self.reason = status(ln)
            self.headers: dict = {}
            return True
        if header(ln, self.headers):
            return True
        if self.status < 200:
            self._n += 1
            if self._n > MAX1XX:
                raise HTTPError("more than %d interim (1xx) responses" % MAX1XX)
            self.status = 0
            return True
        self.chunked, self.left = framing(self.headers, self.status, self.m)
        return False
