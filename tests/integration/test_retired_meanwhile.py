"""Retired means retired for handshakes and connections already under way (found by H8, fixed in
keypin.tls: one device-wide retired list shared by every Checker, Attempt.finish re-checks the
key, a PinnedStream ends at its next read/write once its key is retired), and a failed TCP
connect frees the set's cached TLS context. Real CPython TLS servers, the device in the Unix port."""
import json
import pathlib
import socket
import subprocess

from helpers.pki import CA, new_key, pin
from helpers.servers import TLSServer
from test_multikey import v2_document

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"


def setup(tmp_path):
    ca, a, b = CA("Meanwhile"), new_key(), new_key()
    crt = ca.write_chain(tmp_path, "a", a, HOST)
    st = tmp_path / "pins.json"
    st.write_bytes(v2_document({"api": {"hosts": [HOST], "active": [pin(a)], "backups": [[pin(b)]],
                                        "policy": "leaf"}}))
    return crt, st, pin(b)


def dev(st, port, mode, *extra):
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_meanwhile.py"), str(st), HOST,
                        str(port), mode, *extra], check=False, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_an_open_connection_ends_when_its_key_is_retired(tmp_path):
    crt, st, _ = setup(tmp_path)
    with TLSServer(*map(str, crt)) as srv:
        r = dev(st, srv.port, "live")
    assert r["before"] == "OK before\n", r
    assert not r["ok"] and r["error"] == "PinMismatch" and r["reason"] == "retired key", r
    assert srv.received == b"before\n"  # nothing after the retirement


def test_a_lazy_handshake_after_a_rotation_refuses_the_retired_key(tmp_path):
    crt, st, pin_b = setup(tmp_path)
    with TLSServer(*map(str, crt)) as srv:
        r = dev(st, srv.port, "lazy", pin_b)
    assert not r["ok"] and r["error"] == "PinMismatch" and r["reason"] == "retired key", r
    assert srv.received == b""


def test_a_failed_tcp_connect_frees_the_cached_context(tmp_path):
    _, st, _ = setup(tmp_path)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]  # bound, not listening: the connect is refused
    try:
        r = dev(st, port, "busy")
    finally:
        s.close()
    assert r["ok"] and "OSError" in r["connect"] and r["busy"] is False, r
