# The less travelled paths of keypin.tls, loaded only when needed: the pin-failure
# report, PEM CA data for CA+pin mode, and the getpeercert(True) path of firmware
# without verify_callback.
from keypin import PinMismatch, Unsupported
from keypin.pins import format_pin
from keypin.spki import error_text
from keypin.tls import _WHY, ACTIVE, BACKUP, PinnedStream, _fail, _pin


def chain(chk):
    # [(depth, pin or error text)] top first, as seen
    out = []
    for d in range(min(chk.depth, len(chk.slots) - 1), -1, -1):
        c = chk.codes[d]
        out.append((d, format_pin(chk.slots[d]) if c == 0 else
                    ("not presented" if c == 1 else "malformed: " + error_text(c))))
    return out


def mismatch(chk, host, port, name, s):
    why = _WHY[chk.decision]
    lines = ["Certificate pinning failure! (%s)" % why,
             "  Peer certificate chain for %s:%d:" % (host, port)]
    for d, p in chain(chk):
        lines.append("    depth %d: %s" % (d, p))
    if chk.depth >= len(chk.slots):
        lines.append("    (%d deeper certificates not checked)" % (chk.depth - len(chk.slots) + 1))
    lines.append("  Pinned keys for %s (set %r, policy %s):" % (host, name, s["policy"]))
    lines.append("    active: " + s["active"])
    for i, p in enumerate(s["backups"]):
        lines.append("    backup %d: %s" % (i + 1, p))
    for p in s["retired"]:
        lines.append("    retired: " + p)
    e = PinMismatch("\n".join(lines))
    e.host, e.port, e.pinset, e.reason = host, port, name, why
    e.chain = chain(chk)
    return e


def ders(data):
    # CA certificates as DER (some firmware builds lack mbedTLS PEM parsing)
    if b"-----BEGIN" not in data:
        yield data
        return
    from binascii import a2b_base64
    n = 0
    for part in data.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        n += 1
        yield a2b_base64(part.split(b"-----END")[0])
    if not n:
        raise ValueError("no CERTIFICATE in PEM")


def peercert(wrap_socket, sock, host, port, store, name, s, chk, cadata):
    # firmware without verify_callback: check the leaf before any application byte
    if cadata:
        raise Unsupported("CA+pin mode needs MicroPython >= 1.23 (tls.SSLContext.verify_callback)")
    ss = wrap_socket(sock, server_hostname=host)
    try:
        der = ss.getpeercert(True) if hasattr(ss, "getpeercert") else None
        if not der:
            raise Unsupported("firmware has neither verify_callback nor getpeercert(True): "
                              "refusing an unpinned connection; upgrade to MicroPython >= 1.23")
        chk.any = False  # only the leaf is visible here
        chk.cb(der, 0)
        if chk.decision not in (ACTIVE, BACKUP):
            raise _fail(chk, host, port, name, s)
    except BaseException:
        ss.close()
        raise
    return PinnedStream(ss, store, name, chk, _pin(chk, s))


def legacy_wrap():
    # wrap_socket of firmware before the tls module (MicroPython < 1.23; `import ssl` also
    # finds the older ussl through the u-module aliases)
    try:
        import ssl
        return ssl.wrap_socket
    except ImportError:
        raise Unsupported("this firmware has no TLS module")
