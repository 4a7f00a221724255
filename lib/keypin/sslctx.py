# keypin.context(): an SSLContext-like object for any client that takes one (umqtt.simple
# >= 1.4, asyncio.open_connection, ctx.wrap_socket). Loaded only when used: the core of
# keypin.tls does the pinning.
from keypin import StoreError
from keypin.tls import NONE, RETIRED, Attempt, _until, default_store, use_store


class PinnedContext:
    # Stands wherever MicroPython code takes an SSLContext: ctx.wrap_socket(sock,
    # server_hostname=...), umqtt.simple >= 1.4 (MQTTClient(..., ssl=ctx)), asyncio
    # (open_connection(..., ssl=ctx)). Pins exactly as keypin.connect. `last` is the stream
    # of the latest handshake; confirm() commits its pending rotation (call it after a
    # genuine reply: see docs/asyncio.md).
    def __init__(self, host_or_set, store=None, cadata=None, timeout=None):
        store = store or default_store()
        if isinstance(store, str):
            store = use_store(store)
        self.store = store
        if host_or_set in store.doc["sets"]:
            self.name = host_or_set
            self.host = store.get(host_or_set)["hosts"][0]
        else:
            self.name = store.find(host_or_set)
            self.host = host_or_set
            if self.name is None:
                raise StoreError("no pin set covers host %r; add one (ks.pins or keypin pinset new)"
                                 % host_or_set)
        self.cadata = cadata
        self.timeout = timeout
        self.last = None

    def wrap_socket(self, sock, server_hostname=None, do_handshake_on_connect=True, **kw):
        h = self.host
        if server_hostname and self.store.find(server_hostname) == self.name:
            h = server_hostname  # a host of this set: its name goes in SNI
        att = Attempt(h, 0, store=self.store, pinset=self.name, cadata=self.cadata)
        if do_handshake_on_connect:
            end = _until(self.timeout * 1000) if self.timeout is not None else None
            self.last = att.wrap(sock, True, end)
            return self.last
        # asyncio: the handshake runs inside the first read/write of the real TLS socket
        # returned here (the callback refuses unknown and retired keys there, before any
        # application byte: the read/write raises OSError); check() tells the verdict.
        self.last = att
        self._sock = sock  # a failed lazy handshake drops its socket without closing it
        self._ss = att.wrap(sock, False)
        return self._ss

    def check(self):
        # -> the verdict of the latest connection ("active", "backup", "rotated"), None while
        # its handshake has not run; raises PinMismatch (and records the failure report)
        # when the key was refused
        a = self.last
        if not isinstance(a, Attempt):
            return a.verdict if a is not None else None
        d = a.chk.decision if a.chk is not None else NONE
        if d == NONE:
            return None
        if d >= RETIRED:
            # the same PinMismatch however often it is asked (one failure report)
            x = a.refusal
            if x is None:
                try:
                    self._sock.close()
                except OSError:
                    pass
                x = a.refusal = a.failed(OSError(1))
            raise x
        self.last = a.finish(self._ss)
        return self.last.verdict

    @property
    def verdict(self):
        try:
            return self.check()
        except Exception:
            return "refused"

    def confirm(self):
        # after a genuine reply (docs/asyncio.md): commit a pending rotation
        v = self.check()
        s = self.last
        return s.confirm() if v is not None and s is not None else None
