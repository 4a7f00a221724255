"""Small helpers shared by the subcommands: progress output, atomic writes, host:port parsing."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import sys
import tempfile

from .errors import CommandError


def progress(msg: str) -> None:
    """Progress goes to stderr, and only when stderr is a terminal (esptool/mpremote style)."""
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


JSON_SCHEMA = 1  # bump when a --json field changes meaning or goes away (adding fields is compatible)


def add_json_arg(p) -> None:
    """The shared ``--json`` option (argparse setup)."""
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout instead of text (schema: docs/cli.md)")


def emit_json(command: str, data: dict) -> None:
    """``--json`` output: one object, one line, on stdout: {"command", "schema", **data}.

    Errors still go to stderr as ``keypin: <command>: <message>`` with exit 1; notes stay on stderr."""
    obj = {"command": command, "schema": JSON_SCHEMA}
    obj.update(data)
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class Meter:
    """Bytes and percent on one terminal line (stderr), like esptool's; silent when stderr is not a terminal."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.on = what, max(total, 1), sys.stderr.isatty()

    def show(self, done: int, extra: str = "") -> None:
        if self.on:
            pct = min(100, done * 100 // self.total)
            sys.stderr.write(f"\r{self.what}: {done // 1024} of {self.total // 1024} KiB ({pct}%){extra}   ")
            sys.stderr.flush()

    def end(self) -> None:
        if self.on:
            sys.stderr.write("\n")
            sys.stderr.flush()


def note(msg: str) -> None:
    """A remark the user should see even when not on a terminal (always stderr)."""
    print("keypin: note: " + msg, file=sys.stderr, flush=True)


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and os.replace."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_input(path: str) -> bytes:
    """Read a file, or stdin for ``-``."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from None


_TLS_HINTS = {"WRONG_VERSION_NUMBER": " (is that port speaking TLS?)",
              "UNSUPPORTED_PROTOCOL": " (the server offers only an old TLS version)",
              "TLSV1_ALERT_PROTOCOL_VERSION": " (no TLS version in common)"}


def tls_error_text(e: BaseException) -> str:
    """An ssl error as a sentence: no ``[SSL: X]`` tag, no ``(_ssl.c:989)`` internals."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message or e.reason}"
    text = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], str) else str(e)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    text = re.sub(r"^\[SSL: [A-Z0-9_]+\]\s*", "", text).strip()
    reason = getattr(e, "reason", None) or ""
    if isinstance(e, ssl.SSLEOFError) or "EOF occurred" in text:
        text = "the server closed the connection during the TLS handshake"
    return (text or reason.lower().replace("_", " ") or type(e).__name__) + _TLS_HINTS.get(reason, "")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


URL_PORTS = {"https": 443, "mqtts": 8883, "wss": 443, "ssl": 443, "tls": 443}


def parse_hostport(text: str, default_port: int = 443) -> tuple[str, int]:
    """``host:port``, ``host`` (port 443), ``[v6]:port``, a bare IPv6 literal, or a URL
    (``https://host[:port]/path``: the path is ignored; ``mqtts://`` defaults to 8883)."""
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        if scheme not in URL_PORTS:
            hint = " (no TLS there: pins need a TLS port, e.g. https://...)" if scheme in ("http", "mqtt", "ws") else ""
            raise CommandError(f"bad address {text!r}: a {scheme}:// URL{hint}; give HOST:PORT or https://HOST/")
        rest = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
        if not rest:
            raise CommandError(f"bad address {text!r}: no host")
        return parse_hostport(rest, URL_PORTS[scheme])
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CommandError(f"bad address {text!r}: missing ]")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise CommandError(f"bad address {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise CommandError(f"bad address {text!r}: no host")
    if "/" in host:
        raise CommandError(f"bad address {text!r}: give HOST:PORT or a URL like https://{host.split('/')[0]}/")
    if port is None:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"bad port in {text!r}" + ("" if port.isdigit() else
                                                      f": {port!r} is not a number (HOST:PORT, e.g. {host}:443)"))
    return host, int(port)
