# The less travelled paths of keypin.tls, loaded only when needed: the pin-failure
# report, PEM CA data for CA+pin mode, and the getpeercert(True) path of firmware without
# verify_callback. Imports nothing from
# keypin.tls: what it needs comes in as arguments.
from keypin import PinMismatch, Unsupported
from keypin.pins import format_pin
from keypin.spki import error_text

_WHY = ("no certificate checked", "active", "backup", "retired key", "unknown key", "malformed certificate")


def chain(chk):
    # [(depth, pin or error text)] top first, as seen
    out = []
    for d in range(min(chk.depth, len(chk.slots) - 1), -1, -1):
        c = chk.codes[d]
        out.append((d, format_pin(chk.slots[d]) if c == 0 else
                    ("not presented" if c == 1 else "malformed: " + error_text(c))))
    return out


def _list(v):
    return [v] if isinstance(v, str) else v


def mismatch(chk, host, port, name, s, store=None):
    why = _WHY[chk.decision]
    lines = ["Certificate pinning failure! (%s)" % why,
             "  Peer certificate chain for %s:%d:" % (host, port)]
    ch = chain(chk)
    for d, p in ch:
        lines.append("    depth %d: %s" % (d, p))
    if chk.depth >= len(chk.slots):
        lines.append("    (%d deeper certificates not checked)" % (chk.depth - len(chk.slots) + 1))
    lines.append("  Pinned keys for %s (set %r, policy %s):" % (host, name, s["policy"]))
    for p in _list(s["active"]):
        lines.append("    active: " + p)
    for i, g in enumerate(s["backups"]):
        lines.append("    backup %d: %s" % (i + 1, ", ".join(_list(g))))
    retired = store.doc["retired"] if store is not None else []
    seen = [p for _, p in ch]
    for p in retired:
        # the whole device-wide list can be long: show the retired keys this chain presented
        if chk.decision != 3 or p in seen:  # 3: keypin.tls.RETIRED
            lines.append("    retired: " + p)
    e = PinMismatch("\n".join(lines))
    e.host, e.port, e.pinset, e.reason = host, port, name, why
    e.chain = ch
    return e


def ders(data):
    # CA certificates as DER (some firmware builds lack mbedTLS PEM parsing): PEM text,
    # one DER certificate, or a list of DER certificates (a pin set's "ca")
    if isinstance(data, (list, tuple)):
        yield from data
        return
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


def legacy(t, sock, host, chk, cadata):
    # firmware without verify_callback: hash the leaf from getpeercert(True) before any
    # application byte; the caller (Attempt.finish) refuses unless the decision is active/backup
    if cadata:
        raise Unsupported("CA+pin mode needs MicroPython >= 1.23 (tls.SSLContext.verify_callback)")
    if t is not None and hasattr(t, "SSLContext"):
        wrap_socket = t.SSLContext(t.PROTOCOL_TLS_CLIENT).wrap_socket
    else:
        wrap_socket = legacy_wrap()
    ss = wrap_socket(sock, server_hostname=host)
    try:
        der = ss.getpeercert(True) if hasattr(ss, "getpeercert") else None
        if not der:
            raise Unsupported("firmware has neither verify_callback nor getpeercert(True): "
                              "refusing an unpinned connection; upgrade to MicroPython >= 1.23")
        chk.cb(der, 0)
    except BaseException:
        ss.close()
        raise
    return ss


def legacy_wrap():
    # wrap_socket of firmware before the tls module (MicroPython < 1.23; `import ssl` also
    # finds the older ussl through the u-module aliases)
    try:
        import ssl
        return ssl.wrap_socket
    except ImportError:
        raise Unsupported("this firmware has no TLS module")


def retired_now(st):
    # PinMismatch for a connection whose key was retired after its handshake
    e = PinMismatch("Certificate pinning failure! (retired key)\n  the key of this connection to set %r"
                    " was retired while it was open: %s" % (st.pinset, st.pin))
    e.host, e.port, e.pinset, e.reason = st.att.host, st.att.port, st.pinset, "retired key"
    e.chain = [(0, st.pin)]
    return e
