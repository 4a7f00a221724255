# Pinned TLS: the verify callback decides inside the handshake.
# One Attempt object carries a connection attempt (host, port, pin set, checker, verdict)
# through the TLS path; keypin.connect, keypin.context, https, mqtt and keypin.aio all use it.
import socket
import time

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

_store = None
resolve: dict = {}  # host -> address override (like /etc/hosts), e.g. from config.json
on_mismatch = None  # optional hook(PinMismatch), e.g. keypin.report.record


def use_store(path_or_store):
    global _store
    if isinstance(path_or_store, str):
        from keypin import store as _st
        # one PinStore object per file (keypin.store.open), shared with keypin.setup
        path_or_store = getattr(_st, "open", _st.PinStore)(path_or_store)
    _store = path_or_store
    return _store


def default_store():
    if _store is None:
        raise StoreError("no pin store: call keypin.use_store('pins.json') first")
    return _store


class Checker:
    # Holds preallocated per-depth digest slots; cb() runs inside mbedTLS and never
    # raises or allocates (beyond what the VM needs to call it). A refusal is -1, not 1:
    # inside a lazy (asyncio) handshake mbedtls_ssl_read/write return the callback's value
    # as their own, and a positive one would read as "1 byte transferred".
    # active: digests in service (any matches); backups: flat digests, groups[i] = the
    # backup group of backups[i]; retired: device-wide retired digests.
    def __init__(self, active, backups, groups, retired, any_depth):
        self.active = active
        self.backups = backups
        self.groups = groups
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
        self.k = -1  # backup group matched
        self.md = -1  # depth whose key matched
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
            return -1

    def _decide(self):
        top = self.depth if self.any else 0
        if top >= _MAXD:
            top = _MAXD - 1
        codes, slots = self.codes, self.slots
        if codes[0] < 0:
            self.decision = BADCERT
            return -1
        # a retired key anywhere we look is refused, before anything else
        for d in range(top + 1):
            if codes[d] == 0:
                for r in self.retired:
                    if slots[d] == r:
                        self.decision = RETIRED
                        self.md = d
                        return -1
        for d in range(top + 1):
            if codes[d] == 0:
                for a in self.active:
                    if slots[d] == a:
                        self.decision = ACTIVE
                        self.md = d
                        return 0
        best = -1
        bk = self.backups
        for d in range(top + 1):
            if codes[d] == 0:
                for i in range(len(bk)):
                    if slots[d] == bk[i] and (best < 0 or self.groups[i] < best):
                        best = self.groups[i]
                        self.md = d
        if best >= 0:
            self.decision = BACKUP
            self.k = best
            return 0
        self.decision = UNKNOWN
        return -1


def _tls():
    try:
        import tls
        return tls
    except ImportError:
        return None


def _ca(store, name, cadata):
    return cadata if cadata is not None else store.ca_ders(name)


# One TLS context per pin set, reused by its connections (MQTT and HTTPS share it): an
# mbedTLS context is ~3 KB of heap and seeds a DRBG when made. It is rebuilt when the set's
# pins change (a new digests tuple after any store write or load) or cadata changes.
# The Checker holds one handshake's verdict: while a handshake is in flight on the cached
# context (entry[4] busy: asyncio, or a blocking call from another task) a second attempt
# gets a private context, so two handshakes never share a verdict.
_ctxs: dict = {}


def _context(t, store, name, s, cadata, private=False):
    # -> [digests, cadata, ctx, chk, busy], or None if this firmware has no verify_callback
    dig = store.digests(name)
    e = _ctxs.get(name)
    if not private and e is not None and e[0] is dig and e[1] == cadata:
        return e
    a, b, g, r = dig
    chk = Checker(a, b, g, r, s["policy"] == "any")
    if chk.any and not cadata:
        # Without a trust anchor mbedTLS (CERT_OPTIONAL) does not enforce the chain's
        # signatures: a replayed intermediate certificate over a rogue leaf would match.
        raise Unsupported("set %r has policy 'any': it needs CA+pin mode (a 'ca' in the set, or"
                          " connect(..., cadata=CA)) so that the chain up to the pinned key is verified" % name)
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
    e = [dig, cadata, ctx, chk, False]
    if not private:
        _ctxs[name] = e  # an old entry still in a handshake stays with that attempt alone
    return e


def _until(ms):
    # a deadline ms milliseconds from now (ticks)
    return time.ticks_add(time.ticks_ms(), int(ms))


def _left(deadline):
    return time.ticks_diff(deadline, time.ticks_ms())


try:
    from io import IOBase as _IOBase
except ImportError:  # firmware without io.IOBase: per-operation timeouts only
    _IOBase = None  # type: ignore[misc,assignment]

def _errno(e):
    # -errno of an OSError (for a stream called from C), EIO if it has none
    a = e.args[0] if e.args else 0
    return -a if isinstance(a, int) and a > 0 else -5


if _IOBase is not None:
    class _Clock(_IOBase):  # type: ignore[misc,valid-type]
        # The socket as mbedTLS sees it: every read and write gets the time left before
        # `end` as its timeout, so a peer that drips one byte at a time cannot stretch a
        # handshake or a response past the deadline. Called from C: never raises, returns
        # -errno instead (ETIMEDOUT = 110 once the deadline has passed).
        def __init__(self, sock, end):
            self.s = sock
            self.end = end  # ticks_ms deadline, or None

        def _arm(self):
            if self.end is None:
                return 0
            left = time.ticks_diff(self.end, time.ticks_ms())
            if left <= 0:
                return -110
            self.s.settimeout(left / 1000)
            return 0

        # recv/send, not readinto/write: a socket's stream readinto loops until the buffer
        # is full, each wait bounded alone, which is exactly what a drip exploits
        def readinto(self, buf):
            try:
                r = self._arm()
                if r:
                    return r
                d = self.s.recv(min(len(buf), 1024))  # a small piece: no record-sized buffer
                n = len(d)
                buf[:n] = d
                return n
            except OSError as e:
                return _errno(e)

        def write(self, buf):
            try:
                r = self._arm()
                return r if r else self.s.send(buf)
            except OSError as e:
                return _errno(e)

        def ioctl(self, req, arg):
            if req == 4:  # MP_STREAM_CLOSE, from the TLS socket's close()
                self.s.close()
                return 0
            return -22  # EINVAL: no poll here (the blocking path only)

        def setblocking(self, flag):
            return self.s.setblocking(flag)

        def close(self):
            self.s.close()


class Attempt:
    # One connection attempt: host, port, pin set (one lookup), checker, verdict.
    def __init__(self, host, port=0, *, store=None, pinset=None, cadata=None, _tls_mod=None):
        store = store or default_store()
        if isinstance(store, str):
            store = use_store(store)
        name = pinset or store.find(host)
        if name is None:
            raise StoreError("no pin set covers host %r; add one (ks.pins or keypin pinset new)" % host)
        self.store = store
        self.name = name
        self.s = store.get(name)
        self.host = host
        self.port = port
        self.cadata = _ca(store, name, cadata)
        self.t = _tls_mod or _tls()
        self.chk = None
        self.ctx = None
        self.clock = None
        self._e = None  # the context entry this attempt holds while its handshake runs
        self.refusal = None  # the PinMismatch of a refused lazy handshake (keypin.sslctx)
        if self.t is not None and hasattr(self.t, "SSLContext"):
            e = _context(self.t, store, name, self.s, self.cadata)
            if e is not None:
                if e[4]:  # another handshake is using the set's context: a private one
                    e = _context(self.t, store, name, self.s, self.cadata, True)
                e[4] = True
                e[3].reset()
                self._e = e
                self.ctx, self.chk = e[2], e[3]

    def release(self):
        # the handshake is over (or will not happen): the set's context is free again
        e, self._e = self._e, None
        if e is not None:
            e[4] = False

    def wrap(self, sock, do_handshake=True, deadline=None):
        # TLS over a connected socket; with do_handshake the handshake runs now and the
        # result is a PinnedStream, else the raw TLS socket (asyncio: the handshake runs in
        # the first read/write; call finish() after it). The socket is closed on failure.
        try:
            if self.ctx is None:
                return self._legacy(sock)
            if self._e is None:
                raise OSError(22, "this Attempt was used already")
            raw = sock
            if deadline is not None and _IOBase is not None:
                raw = self.clock = _Clock(sock, deadline)
            try:
                ss = self.ctx.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=do_handshake)
            except (OSError, ValueError) as e:
                raise self.failed(e)
            if not do_handshake:
                return ss
            return self.finish(ss)
        except BaseException:
            self.release()
            sock.close()
            raise

    def failed(self, e):
        # -> the exception to raise for a handshake that raised e
        chk = self.chk
        if chk is not None and chk.decision >= RETIRED:  # the callback refused the key
            x = self._fail()
            self.release()
            return x
        self.release()
        # otherwise the handshake failed for its own reasons (timeout, EOF, protocol, an
        # unparsable certificate, CA verification): no pin verdict, report what happened
        if isinstance(e, ValueError):  # mbedTLS reports X.509 verification (CA+pin mode) so
            return CertError("certificate verification failed for %s:%d: %s" % (self.host, self.port, e))
        if self.clock is not None and _left(self.clock.end) <= 0:
            return OSError(110, "deadline passed during the TLS handshake with %s:%d" % (self.host, self.port))
        return e  # keys matched but TLS failed, e.g. a server without the key's private half

    def finish(self, ss):
        # after a completed handshake: a PinnedStream, or fail closed
        chk = self.chk
        try:
            if chk is not None and chk.decision in (ACTIVE, BACKUP) and chk.slots[chk.md] in self.store.retired:
                chk.decision = RETIRED  # retired while the handshake ran (a rotation, an update)
            if chk is None or chk.decision not in (ACTIVE, BACKUP):
                # the callback was never asked about the leaf, or the key was retired: fail closed
                ss.close()
                raise self._fail()
            return PinnedStream(ss, self)  # takes what it needs from the checker
        finally:
            self.release()

    def _legacy(self, sock):
        # firmware without verify_callback: the leaf is checked before any application byte
        from keypin.tlsx import legacy
        a, b, g, r = self.store.digests(self.name)
        self.chk = Checker(a, b, g, r, False)  # only the leaf is visible there
        ss = legacy(self.t, sock, self.host, self.chk, self.cadata)
        try:
            return self.finish(ss)
        except BaseException:
            ss.close()
            raise

    def _fail(self):
        from keypin.tlsx import mismatch
        e = mismatch(self.chk, self.host, self.port, self.name, self.s, self.store)
        if on_mismatch is not None:
            try:
                on_mismatch(e)
            except Exception as x:
                print("keypin: failure report not recorded:", repr(x))
        return e


class PinnedStream:
    def __init__(self, sock, att):
        self.sock = sock
        self.att = att
        chk = att.chk
        self.store = att.store
        self.pinset = att.name
        from keypin.pins import format_pin
        self.digest = bytes(chk.slots[chk.md])
        self.pin = format_pin(self.digest)  # the matched pin
        self.backup = chk.k if chk.decision == BACKUP else -1
        self.verdict = "backup" if self.backup >= 0 else "active"
        self.gen = att.store.gen

    def _trusted(self):
        # the store changed since the handshake: a key retired meanwhile ends the connection
        st = self.store
        if st.gen != self.gen:
            self.gen = st.gen
            if self.digest in st.retired:
                self.close()
                from keypin.tlsx import retired_now
                raise retired_now(self)

    @property
    def deadline(self):
        c = self.att.clock
        return c.end if c is not None else None

    def set_deadline(self, deadline):
        # a new overall deadline (ticks_ms) for the reads and writes from now on, or None
        c = self.att.clock
        if c is not None:
            c.end = deadline

    def still_trusted(self):
        # False once the key of this connection is retired (it is then closed)
        try:
            self._trusted()
            return True
        except Exception:
            return False

    def read(self, n=-1):
        self._trusted()
        return self.sock.read(n) if n >= 0 else self.sock.read()

    def readinto(self, buf, n=None):
        self._trusted()
        return self.sock.readinto(buf) if n is None else self.sock.readinto(buf, n)

    def readline(self, n=-1):
        self._trusted()
        return self.sock.readline() if n < 0 else self.sock.readline(n)

    def write(self, buf, n=None):
        self._trusted()
        return self.sock.write(buf) if n is None else self.sock.write(buf, n)

    def setblocking(self, flag):
        return self.sock.setblocking(flag)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def confirm(self):
        # the protocol saw a genuine response from the server holding backup group k: commit
        if self.verdict == "backup":
            st = self.store
            try:
                st.rotate(self.pinset, self.backup, self.pin)
            except Exception as e:
                if self.digest in st.retired:
                    raise  # the presented key was retired meanwhile: the request fails
                # (flash full, store changed, ...) the request stands; the server stays a backup
                note = "rotation of set %r to %s not committed: %s" % (self.pinset, self.pin, e)
                print("keypin: " + note)
                st.notes.append(note)
                return self.verdict
            self.verdict = "rotated"
        return self.verdict


def wrap(sock, host, port=0, *, store=None, pinset=None, cadata=None, deadline=None, _tls_mod=None):
    # Pinned TLS over a connected socket. Returns a PinnedStream or raises; on any
    # failure the socket is closed and nothing was sent.
    try:
        att = Attempt(host, port, store=store, pinset=pinset, cadata=cadata, _tls_mod=_tls_mod)
    except BaseException:
        sock.close()
        raise
    return att.wrap(sock, True, deadline)


def open_socket(host, port, timeout=None, addr=None):
    # a connected TCP socket (timeout bounds the connect); closed on failure
    ai = socket.getaddrinfo(addr or resolve.get(host) or host, port, 0, socket.SOCK_STREAM)[0]
    sock = socket.socket(ai[0], socket.SOCK_STREAM)
    try:
        if timeout is not None:
            sock.settimeout(timeout)
        sock.connect(ai[-1])
    except BaseException:
        sock.close()
        raise
    return sock


def connect(host, port, *, store=None, pinset=None, timeout=None, cadata=None, addr=None):
    # addr: connect to this address instead of resolving host (host still drives SNI and pins).
    # timeout (s): one budget for TCP connect + TLS handshake, and the initial deadline of
    # the stream's reads and writes (PinnedStream.set_deadline moves it).
    att = Attempt(host, port, store=store, pinset=pinset, cadata=cadata)
    end = _until(timeout * 1000) if timeout is not None else None
    try:
        sock = open_socket(host, port, timeout, addr)
    except BaseException:
        att.release()  # no handshake: the set's context is free for the next attempt
        raise
    return att.wrap(sock, True, end)
