# keypin.https's rarely used half, imported on first use: chunked and close-delimited bodies,
# streaming (iter_content), save(), error bodies kept for the message, redirects. The resident
# keypin.https keeps request(), the head and Content-Length bodies (.content, .json()).
# Same rules as before the split (issue 12, points 5 and 6): a body is complete only when its
# framing says so; anything odd is an HTTPError.
from keypin import wire, wirex
from keypin.wire import HTTPError
from keypin.wire import line as _line


def read(r, s, n):
    # up to n bytes of a chunked or close-delimited body of Response r over stream s; b"" at the end
    if r._chunked:
        if r._chunk == 0:
            r._chunk = wirex.chunk_size(_line(s))
            if r._chunk == 0:
                t: dict = {}
                while wire.header(_line(s), t):  # trailers: parsed, bounded, dropped
                    pass
                r._done = r.complete = True
                return b""
        d = s.read(min(n, r._chunk))
        if not d:
            raise HTTPError("connection closed inside a chunk")
        r._chunk -= len(d)
        if r._chunk == 0 and _line(s) not in (b"\r\n", b"\n"):
            raise HTTPError("chunk data not followed by CRLF")
        return d
    if not r._unframed:
        raise HTTPError("body without Content-Length or chunked framing: its end cannot be "
                        "proven (a TCP close looks like a TLS close_notify here)")
    d = s.read(n)
    if not d:
        r._done = True  # an unproven end: r.complete stays False
    return d


def iter_content(r, chunk, max_body):
    # a limit (here or the request's max_body) holds under every framing
    lim = max_body if max_body is not None else r._max
    while True:
        d = r._raw(chunk, lim)
        if not d:
            r.close()
            return
        yield d


def save(r, path, chunk, max_body):
    try:
        wirex.savable(r.status, r.framed, r.url)
    except HTTPError:
        r.close()
        raise
    n = 0
    with wirex.Saving(path) as f:  # path.tmp, renamed into place only after the proven end
        for d in iter_content(r, chunk, max_body):
            f.write(d)
            n += len(d)
    return n


def drain(r, lim):
    # the body of a response the caller will not use as data (an error status): keep what
    # fits in lim bytes for the message, never raise for its size or framing
    parts = []
    n = 0
    try:
        if not r.framed:
            r._unframed = True
        while n < lim:
            d = r._raw(min(256, lim - n), None)
            if not d:
                break
            parts.append(d)
            n += len(d)
    except (HTTPError, OSError):
        pass
    r._body = b"".join(parts)
    r.close()


def follow(url, loc, store):
    from keypin.tls import default_store
    return wire.follow(url, loc, store or default_store())
