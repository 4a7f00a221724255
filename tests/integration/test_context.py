"""Issue 14 point 1: keypin.context() pins wherever a client takes an SSLContext, with the same
verdicts, errors and failure reports as keypin.connect. Real servers: CPython TLS servers and
mosquitto; the client of umqtt.simple >= 1.4 takes the context as `ssl=` (the asyncio use is in
test_aio.py). A refused key sends zero bytes: no MQTT CONNECT, so no password."""
import json
import pathlib
import subprocess

import pytest
from helpers.pki import CA, new_key, pin
from helpers.realservers import Mosquitto
from helpers.servers import TLSServer
from test_multikey import v2_document

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctx")
    ca = CA("Context")
    keys = {n: new_key() for n in ("active", "b0", "evil")}
    return {"dir": d, "files": {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()},
            "pins": {n: pin(k) for n, k in keys.items()}}


def store(tmp_path, pki):
    p = pki["pins"]
    path = tmp_path / "pins.json"
    path.write_bytes(v2_document({"api": {"hosts": [HOST], "active": [p["active"]], "backups": [[p["b0"]]],
                                          "policy": "leaf"}}))
    return path


def dev(st, mode, port):
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_context.py"), str(st), mode,
                        str(port)], check=False, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_wrap_socket_pins_like_connect(tmp_path, pki):
    st = store(tmp_path, pki)
    before = st.read_bytes()
    with TLSServer(*map(str, pki["files"]["active"])) as good, TLSServer(*map(str, pki["files"]["evil"])) as evil:
        ok = dev(st, "wrap", good.port)
        bad = dev(st, "wrap", evil.port)
    assert ok["ok"] and ok["verdict"] == "active" and ok["reply"] == "OK ping\n" and ok["after"] == "active", ok
    assert not bad["ok"] and bad["error"] == "PinMismatch" and bad["reason"] == "unknown key", bad
    assert evil.received == b"" and evil.handshakes == 0
    assert st.read_bytes() == before


def test_umqtt_with_a_pinned_context_rotates_only_after_connack(tmp_path, pki):
    st = store(tmp_path, pki)
    crt, key = pki["files"]["b0"]
    with Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"}) as mq:
        sub = mq.subscriber("keypin/ctx", count=1, timeout=20)
        r = dev(st, "umqtt", mq.port)
        assert sub.result() == [("keypin/ctx", b"via context")]
    assert r["ok"] and r["verdict"] == "backup" and r["after"] == "rotated", r
    assert r["active"] == [pki["pins"]["b0"]] and pki["pins"]["active"] in r["retired"], r


def test_umqtt_mitm_gets_no_connect_and_no_password(tmp_path, pki):
    st = store(tmp_path, pki)
    before = st.read_bytes()
    with TLSServer(*map(str, pki["files"]["evil"])) as evil:
        r = dev(st, "umqtt", evil.port)
    assert not r["ok"] and r["error"] == "PinMismatch", r
    assert evil.received == b"" and evil.handshakes == 0
    assert st.read_bytes() == before


def test_asyncio_open_connection_with_a_pinned_context(tmp_path, pki):
    """asyncio.open_connection(host, port, ssl=keypin.context(...)): the handshake runs in the
    first write; the verdict is read with ctx.check(); a refused key fails that write with
    nothing sent, and ctx.check() raises PinMismatch (the failure report)."""
    st = store(tmp_path, pki)
    before = st.read_bytes()
    with TLSServer(*map(str, pki["files"]["active"])) as good, TLSServer(*map(str, pki["files"]["evil"])) as evil:
        ok = dev(st, "asyncio", good.port)
        bad = dev(st, "asyncio", evil.port)
    assert ok["ok"] and ok["reply"] == "OK ping\n" and ok["verdict"] == "active" and ok["after"] == "active", ok
    assert good.received == b"ping\n"
    assert not bad["ok"] and bad["error"] == "PinMismatch" and bad["reason"] == "unknown key", bad
    assert evil.received == b"" and evil.handshakes == 0
    assert st.read_bytes() == before

