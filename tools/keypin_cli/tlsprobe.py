"""Read the certificate chain a TLS server presents (no CA verification: we only want pins)."""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

from .errors import CommandError
from .util import is_ip, progress, tls_error_text

_ENCODING_DER = getattr(ssl._ssl, "ENCODING_DER", 2)  # type: ignore[attr-defined]


@dataclass
class Chain:
    certs: list[bytes]  # DER, depth 0 first, as presented
    complete: bool  # False when only the leaf could be read
    version: str = ""
    cipher: str = ""
    notes: list[str] = field(default_factory=list)


def _chain_from(sock: ssl.SSLSocket) -> tuple[list[bytes], bool]:
    # Python >= 3.13: public SSLSocket.get_unverified_chain() -> list of DER bytes.
    # Python 3.10 .. 3.12: the C object has it (private), returning _ssl.Certificate objects.
    fn = getattr(sock, "get_unverified_chain", None)
    if fn is None:
        obj = getattr(sock, "_sslobj", None)
        fn = getattr(obj, "get_unverified_chain", None)
    if fn is not None:
        chain = fn()
        if chain:
            out = []
            for c in chain:
                out.append(bytes(c) if isinstance(c, (bytes, bytearray)) else c.public_bytes(_ENCODING_DER))
            return out, True
    leaf = sock.getpeercert(binary_form=True)
    return ([leaf] if leaf else []), False


def fetch_chain(host: str, port: int, sni: str | None = None, timeout: float = 10.0) -> Chain:
    """Connect, complete the handshake, read the presented chain, close."""
    server_name = sni if sni else (None if is_ip(host) else host)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # reading pins, not trusting: verification is not the point here
    progress(f"connecting to {host}:{port} ...")
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise CommandError(f"cannot connect to {host}:{port}: no answer within {timeout:g} s") from None
    except socket.gaierror as e:
        raise CommandError(f"cannot connect to {host}:{port}: unknown host ({e.strerror or e})") from None
    except OSError as e:
        raise CommandError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    try:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=server_name)
        except ssl.SSLError as e:
            raise CommandError(f"TLS handshake with {host}:{port} failed: {tls_error_text(e)}") from None
        except TimeoutError:
            raise CommandError(f"TLS handshake with {host}:{port} failed: no answer within {timeout:g} s") from None
        except OSError as e:
            raise CommandError(f"TLS handshake with {host}:{port} failed: {e.strerror or e}") from None
        try:
            certs, complete = _chain_from(tls)
            version, cipher = tls.version() or "", (tls.cipher() or ("",))[0]
        finally:
            try:
                tls.close()
            except OSError:
                pass
    finally:
        raw.close()
    if not certs:
        raise CommandError(f"{host}:{port} presented no certificate")
    ch = Chain(certs, complete, version, cipher)
    if not complete:
        ch.notes.append("this Python cannot read the whole presented chain: showing the leaf only")
    return ch


def certificate_message_bytes(certs: list[bytes]) -> int:
    """Size of the TLS 1.2 Certificate handshake message that carries ``certs`` (what an ESP32,
    TLS 1.2 only, receives and buffers): 4-byte header, 3-byte list length, 3 bytes per certificate."""
    return 4 + 3 + sum(3 + len(c) for c in certs)
