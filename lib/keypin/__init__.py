# keypin: pin TLS server keys (SPKI SHA-256) on MicroPython devices.
# The errors live here; everything else is imported on first use so that
# `import keypin` costs almost nothing and unused modules can be left out.
VERSION = "0.1.0"


class KeypinError(Exception):
    pass


class CertError(KeypinError):
    # a certificate that is not strict DER X.509
    pass


class PinFormatError(KeypinError):
    pass


class PinMismatch(KeypinError):
    # the server's key is not trusted: unknown or retired. args[0] is the report.
    host: str
    port: int
    pinset: str
    reason: str
    chain: list


class StoreError(KeypinError):
    pass


class Unsupported(KeypinError):
    # the firmware can neither run verify_callback nor getpeercert(True)
    pass


def connect(host, port, **kw):
    from keypin.tls import connect as _c
    return _c(host, port, **kw)


def context(host_or_set, *, store=None, cadata=None, timeout=None):
    # an SSLContext-like object for any client: pins inside the handshake (keypin.sslctx)
    from keypin.sslctx import PinnedContext
    return PinnedContext(host_or_set, store, cadata, timeout)


def use_store(path_or_store):
    from keypin.tls import use_store as _u
    return _u(path_or_store)
