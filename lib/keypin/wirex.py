# The rarely used half of keypin.wire, imported on first use by keypin.httpsx and
# keypin.aio_https: chunk sizes, save() (issue 12, points 5 and 6). Strict on purpose.
from keypin.wire import HTTPError, StatusError

_HEX = b"0123456789abcdefABCDEF"


def chunk_size(ln):
    # b"1a2;ext\r\n" -> 418: hex digits only (no sign, no 0x, no spaces inside), at most 8
    s = ln.split(b";", 1)[0].strip()
    if not s or len(s) > 8:
        raise HTTPError("bad chunk size %r" % s[:20])
    for c in s:
        if c not in _HEX:
            raise HTTPError("bad chunk size %r" % s[:20])
    return int(s, 16)


def savable(status, framed, url):
    # save() takes only a framed 2xx body: its end is proven (Content-Length or chunked)
    if not 200 <= status < 300:
        raise StatusError(status, "%s answered %d: nothing saved" % (url, status))
    if not framed:
        raise HTTPError("%s: body without Content-Length or chunked framing: not saved (its end "
                        "cannot be proven)" % url)


class Saving:
    # with Saving(path) as f: f.write(...) -- writes path.tmp, renamed over path only when the
    # block ends normally; on any exception the .tmp is removed and nothing is in place
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.f = open(self.path + ".tmp", "wb")  # closed in __exit__
        return self.f

    def __exit__(self, et, ev, tb):
        import os
        self.f.close()
        if et is None:
            os.rename(self.path + ".tmp", self.path)
            return
        try:
            os.remove(self.path + ".tmp")
        except OSError as e:
            print("keypin: %s.tmp not removed: %s" % (self.path, e))
