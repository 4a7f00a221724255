# Pinned TLS: the verify callback decides inside the handshake.
import socket

from micropython import const

from keypin import CertError, StoreError, Unsupported
from keypin.spki import sha256_into

_MAXD = const(8)  # per-depth slots; deeper certificates are not hashed
# decisions
NONE = const(0)
ACTIVE = const(1)
BACKUP = const(2)
RETIRED = const(3)
UNKNOWN = const(4)
BADCERT = const(5)
_WHY = ("no certificate checked", "active", "backup", "retired key", "unknown key", "malformed certificate")

_store = None
resolve: dict = {}  # host -> address override (like /etc/hosts), e.g. from config.json
on_mismatch = None  # optional hook(PinMismatch), e.g. keypin.report.record


def use_store(path_or_store):
    global _store
    if isinstance(path_or_store, str):
        from keypin.store import PinStore
        path_or_store = PinStore(path_or_store)
    _store = path_or_store
    return _store


def default_store():
    if _store is None:
        raise StoreError("no pin store: call keypin.use_store('pins.json') first")
    return _store


class Checker:
    # Holds preallocated per-depth digest slots; cb() runs inside mbedTLS and never
    # raises or allocates (beyond what the VM needs to call it).
    def __init__(self, active, backups, retired, any_depth):
        self.active = active
        self.backups = backups
        self.retired = retired
        self.any = any_depth
        self.slots = [bytearray(32) for _ in range(_MAXD)]
        self.codes = [1] * _MAXD  # 1 = not seen, 0 = hashed, <0 = parse error
        self.reset()

    def reset(self):
        # before each handshake (contexts are reused)
        for i in range(_MAXD):
            self.codes[i] = 1
        self.decision = NONE
        self.k = -1
        self.depth = -1  # deepest depth seen

    def cb(self, cert, depth):
        try:
            self.depth = max(self.depth, depth)
            if depth < _MAXD:
                self.codes[depth] = sha256_into(cert, self.slots[depth])
            if depth:
                return 0
            return self._decide()
        except BaseException:
            self.decision = BADCERT
            return 1

    def _decide(self):
        top = self.depth if self.any else 0
        if top >= _MAXD:
            top = _MAXD - 1
        if self.codes[0] < 0:
            self.decision = BADCERT
            return 1
        # a retired key anywhere we look is refused, before anything else
        for d in range(top + 1):
            if self.codes[d] == 0:
                for r in self.retired:
                    if self.slots[d] == r:
                        self.decision = RETIRED
                        return 1
        for d in range(top + 1):
            if self.codes[d] == 0 and self.slots[d] == self.active:
                self.decision = ACTIVE
                return 0
        best = -1
        for d in range(top + 1):
            if self.codes[d] == 0:
                for i in range(len(self.backups)):
                    if self.slots[d] == self.backups[i] and (best < 0 or i < best):
                        best = i
        if best >= 0:
            self.decision = BACKUP
            self.k = best
            return 0
        self.decision = UNKNOWN
        return 1

def _tls():
    try:
        import tls
        return tls
    except ImportError:
        return None


class PinnedStream:
    def __init__(self, sock, store, name, chk, pin):
        self.sock = sock
        self.store = store
        self.pinset = name
        self.pin = pin  # the matched pin
        self.backup = chk.k if chk.decision == BACKUP else -1
        self.verdict = "backup" if self.backup >= 0 else "active"

    def read(self, n=-1):
        return self.sock.read(n) if n >= 0 else self.sock.read()

    def readinto(self, buf, n=None):
        return self.sock.readinto(buf) if n is None else self.sock.readinto(buf, n)

    def readline(self, n=-1):
        return self.sock.readline() if n < 0 else self.sock.readline(n)

    def write(self, buf, n=None):
        return self.sock.write(buf) if n is None else self.sock.write(buf, n)

    def setblocking(self, flag):
        return self.sock.setblocking(flag)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def confirm(self):
        # the protocol saw a genuine response from the server holding backup k: commit
        if self.verdict == "backup":
            self.store.rotate(self.pinset, self.backup, self.pin)
            self.verdict = "rotated"
        return self.verdict


def _lookup(store, host, pinset):
    store = store or default_store()
    if isinstance(store, str):
        store = use_store(store)
    name = pinset or store.find(host)
    if name is None:
        raise StoreError("no pin set covers host %r; add one (ks.pins or keypin pinset new)" % host)
    return store, name, store.get(name)


# One TLS context per pin set, reused by its connections (MQTT and HTTPS share it): an
# mbedTLS context is ~3 KB of heap and seeds a DRBG when made. It is rebuilt when the set's
# pins change (a new digests tuple after any store write or load) or cadata changes.
_ctxs: dict = {}


def _context(t, store, name, s, cadata):
    # -> (digests, cadata, ctx, chk), or None if this firmware has no verify_callback
    dig = store.digests(name)
    e = _ctxs.get(name)
    if e is not None and e[0] is dig and e[1] == cadata:
        e[3].reset()
        return e
    chk = Checker(dig[0], dig[1], dig[2], s["policy"] == "any")
    if chk.any and not cadata:
        # Without a trust anchor mbedTLS (CERT_OPTIONAL) does not enforce the chain's
        # signatures: a replayed intermediate certificate over a rogue leaf would match.
        raise Unsupported("set %r has policy 'any': it needs CA+pin mode (connect(..., cadata=CA))"
                          " so that the chain up to the pinned key is verified" % name)
    ctx = t.SSLContext(t.PROTOCOL_TLS_CLIENT)
    try:
        ctx.verify_callback = chk.cb
    except (AttributeError, TypeError):
        return None
    if cadata:
        ctx.verify_mode = t.CERT_REQUIRED
        try:
            from keypin.tlsx import ders
            for der in ders(cadata):
                ctx.load_verify_locations(der)
        except ValueError as x:
            raise CertError("cadata: not a valid CA certificate (%s)" % x)
    else:
        ctx.verify_mode = t.CERT_OPTIONAL
    _ctxs.pop(name, None)  # drop the old context before keeping the new one
    e = (dig, cadata, ctx, chk)
    _ctxs[name] = e
    return e


def wrap(sock, host, port=0, *, store=None, pinset=None, cadata=None, _tls_mod=None):
    # Pinned TLS over a connected socket. Returns a PinnedStream or raises; on any
    # failure the socket is closed and nothing was sent.
    try:
        store, name, s = _lookup(store, host, pinset)
        t = _tls_mod or _tls()
        if t is not None and hasattr(t, "SSLContext"):
            e = _context(t, store, name, s, cadata)
            if e is not None:
                return _handshake_cb(e[2], sock, host, port, store, name, s, e[3])
            wrap_socket = t.SSLContext(t.PROTOCOL_TLS_CLIENT).wrap_socket
        else:
            from keypin.tlsx import legacy_wrap
            wrap_socket = legacy_wrap()
        from keypin.tlsx import peercert
        a, b, r = store.digests(name)
        chk = Checker(a, b, r, False)
        return peercert(wrap_socket, sock, host, port, store, name, s, chk, cadata)
    except BaseException:
        sock.close()
        raise


def _handshake_cb(ctx, sock, host, port, store, name, s, chk):
    try:
        ss = ctx.wrap_socket(sock, server_hostname=host)
    except (OSError, ValueError) as e:
        if chk.decision >= RETIRED:  # the callback refused the key
            raise _fail(chk, host, port, name, s)
        # otherwise the handshake failed for its own reasons (timeout, EOF, protocol,
        # an unparsable certificate, CA verification): no pin verdict, report what happened
        if isinstance(e, ValueError):  # mbedTLS reports X.509 verification (CA+pin mode) so
            raise CertError("certificate verification failed for %s:%d:%s" % (host, port, e))
        raise  # keys matched but TLS failed, e.g. a server without the key's private half
    if chk.decision not in (ACTIVE, BACKUP):
        # the callback was never asked about the leaf: fail closed
        ss.close()
        raise _fail(chk, host, port, name, s)
    return PinnedStream(ss, store, name, chk, _pin(chk, s))


def _pin(chk, s):
    return s["active"] if chk.decision == ACTIVE else s["backups"][chk.k]


def _fail(chk, host, port, name, s):
    from keypin.tlsx import mismatch
    e = mismatch(chk, host, port, name, s)
    if on_mismatch is not None:
        try:
            on_mismatch(e)
        except Exception as x:
            print("keypin: failure report not recorded:", repr(x))
    return e


def connect(host, port, *, store=None, pinset=None, timeout=None, cadata=None, addr=None):
    # addr: connect to this address instead of resolving host (host still drives SNI and pins)
    store, name, _ = _lookup(store, host, pinset)
    ai = socket.getaddrinfo(addr or resolve.get(host) or host, port, 0, socket.SOCK_STREAM)[0]
    sock = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        if timeout is not None:
            sock.settimeout(timeout)
        sock.connect(ai[-1])
    except BaseException:
        sock.close()
        raise
    return wrap(sock, host, port, store=store, pinset=name, cadata=cadata)
