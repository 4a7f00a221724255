"""keypin.aio (asyncio) in the Unix port against real nginx and mosquitto on loopback.

Pinning, rotation and its confirmation (HTTPS after a valid 2xx/3xx head, MQTT after CONNACK
rc 0), a MITM refused with zero application bytes and no credentials, HTTPS and MQTT at once in
one loop, a task cancelled mid-handshake leaving no socket open, a broker restart survived,
hostile retained messages (non-UTF-8, 3 MB) under a small heap, and the asyncio device app with
a user task beside it (docs/examples/asyncio_app.py, main.py with "asyncio": true).
"""
import json
import pathlib
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from helpers.mismatched import MismatchedServer
from helpers.pki import CA, new_key, pin, pin_document2, read_document
from helpers.rawtls import RawTLSServer
from helpers.realservers import Mosquitto, Nginx
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"
DEV = ROOT / "tests/integration/dev_aio.py"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("aio")
    ca = CA("Aio")  # the MITM's certificate is under the same CA: CA validity buys it nothing
    keys = {n: new_key() for n in ("active", "b0", "evil")}
    files = {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()}
    return {"dir": d, "files": files, "pins": {n: pin(k) for n, k in keys.items()}}


@pytest.fixture(scope="module")
def web(pki):
    crt, key = pki["files"]["active"]
    n = Nginx(pki["dir"], str(crt), str(key))
    (n.root / "f.bin").write_bytes(bytes(range(256)) * 40)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def broker(pki):
    crt, key = pki["files"]["active"]
    b = Mosquitto(pki["dir"], str(crt), str(key), users={"dev": "secret"})
    yield b
    b.stop()


def store(tmp_path, pki):
    p = pki["pins"]
    path = tmp_path / "pins.json"
    path.write_bytes(pin_document2({"api": {"hosts": [HOST], "active": [p["active"]], "backups": [[p["b0"]]],
                                            "policy": "leaf"}}))
    return path


def dev(st, sc, heap=None, wait=90, **kw):
    env = None
    if heap:
        import os
        env = dict(os.environ, KEYPIN_HEAP=heap)
    arg = st.parent / f"dev-aio-{sc}.json"  # a file: this Unix port aborts on an argument of >= 256 bytes
    arg.write_text(json.dumps({"store": str(st), "sc": sc, **kw}))
    p = subprocess.run([str(ROOT / "tools/upy"), str(DEV), str(arg)],
                       check=False, capture_output=True, text=True, timeout=wait, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["fds_after"] == r["fds_before"], f"socket left open: {r}"
    return r


def url(port, path="/checkin"):
    return f"https://{HOST}:{port}{path}"


def active_of(st):
    return read_document(st)["sets"]["api"]["active"]


def is_active(st, p):
    a = active_of(st)
    return p == a or (isinstance(a, list) and p in a)


# ---------------------------------------------------------------- pinning

def test_https_pinned_plain_chunked_and_save(tmp_path, pki, web):
    st = store(tmp_path, pki)
    before = st.read_bytes()
    out = tmp_path / "f.bin"
    r = dev(st, "https", urls=[url(web.port), url(web.port, "/chunked/f.bin"), url(web.port, "/redirect/2")])
    got = r["https"]
    assert [g["status"] for g in got] == [200, 200, 200], got
    assert all(g["verdict"] == "active" for g in got), got
    assert got[1]["len"] == 10240 and got[1]["framed"]
    r = dev(st, "https", urls=[url(web.port, "/files/f.bin")], save=str(out))
    assert r["https"][0]["saved"] == 10240 and out.read_bytes() == bytes(range(256)) * 40
    assert st.read_bytes() == before  # an ordinary connection writes nothing
    sent = [q for q in web.requests() if q["sni"] == HOST]
    assert {q["uri"] for q in sent} >= {"/checkin", "/chunked/f.bin", "/redirect/2", "/redirect/1", "/files/f.bin"}


def test_redirect_to_an_unpinned_host_is_refused(tmp_path, pki, web):
    r = dev(store(tmp_path, pki), "https", urls=[url(web.port, "/redirect-away")])
    assert r["https"][0]["error"] == "HTTPError" and "no pin set" in r["https"][0]["msg"], r


def test_https_and_mqtt_at_once_in_one_loop(tmp_path, pki, web, broker):
    sub = broker.subscriber("keypin/aio/both", count=1, timeout=30)
    r = dev(store(tmp_path, pki), "both", urls=[url(web.port), url(web.port, "/chunked/f.bin")],
            port=broker.port, topic="keypin/aio/both", msg="at once", id="both")
    assert [h["status"] for h in r["https"]] == [200, 200], r
    assert r["mqtt"]["verdict"] == "active" and "error" not in r["mqtt"], r
    assert sub.result() == [("keypin/aio/both", b"at once")]


@pytest.mark.parametrize("kind", ["https", "mqtt", "connect"])
def test_mitm_refused_with_zero_application_bytes(tmp_path, pki, kind):
    """A server with an unknown key (same CA, right name): no request, no CONNECT, no password."""
    st = store(tmp_path, pki)
    before = st.read_bytes()
    crt, key = pki["files"]["evil"]
    with TLSServer(str(crt), str(key)) as rec:
        if kind == "https":
            out = dev(st, "https", urls=[url(rec.port)])
            r = out["https"][0]
        elif kind == "mqtt":
            out = dev(st, "mqtt", port=rec.port, user="dev", password="secret")
            r = out["mqtt"]
        else:
            out = r = dev(st, "connect", port=rec.port)
    assert r["error"] == "PinMismatch" and r["reason"] == "unknown key", r
    assert out["reports"] == ["unknown key"], out  # the failure report hook got it
    assert rec.accepted == 1 and rec.handshakes == 0 and rec.received == b"", (rec.received, rec.errors)
    assert st.read_bytes() == before


def test_replayed_backup_certificate_without_its_key_gets_no_byte(tmp_path, pki):
    """The backup certificate (public) over a key the attacker has: the callback accepts the
    certificate, mbedTLS then refuses the signature: no application byte, no rotation."""
    st = store(tmp_path, pki)
    before = st.read_bytes()
    crt, _ = pki["files"]["b0"]
    _, wrong = pki["files"]["evil"]
    with MismatchedServer(str(crt), str(wrong)) as srv:
        r = dev(st, "connect", port=srv.port)
    assert r.get("error") == "OSError", r
    assert srv.app_bytes == 0 and srv.handshakes_ok == 0
    assert st.read_bytes() == before


# ---------------------------------------------------------------- rotation

def test_https_rotation_confirmed_after_2xx(tmp_path, pki):
    crt, key = pki["files"]["b0"]
    with Nginx(tmp_path, str(crt), str(key)) as ng:
        st = store(tmp_path, pki)
        r = dev(st, "https", urls=[url(ng.port)])
    assert r["https"][0]["verdict"] == "rotated", r
    assert is_active(st, pki["pins"]["b0"])
    assert pki["pins"]["active"] in json.dumps(read_document(st).get("retired", read_document(st)["sets"]["api"]))


def test_https_error_status_from_the_backup_server_does_not_rotate(tmp_path, pki):
    crt, key = pki["files"]["b0"]
    with Nginx(tmp_path, str(crt), str(key)) as ng:
        st = store(tmp_path, pki)
        before = st.read_bytes()
        r = dev(st, "https", urls=[url(ng.port, "/nothing")])
    assert r["https"][0]["status"] == 404 and r["https"][0]["verdict"] == "backup", r
    assert st.read_bytes() == before


def test_mqtt_rotation_confirmed_after_connack(tmp_path, pki):
    crt, key = pki["files"]["b0"]
    with Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"}) as b:
        st = store(tmp_path, pki)
        r = dev(st, "mqtt", port=b.port)
    assert r["mqtt"]["verdict"] == "rotated", r
    assert is_active(st, pki["pins"]["b0"])


def test_mqtt_refused_login_on_the_backup_broker_does_not_rotate(tmp_path, pki):
    crt, key = pki["files"]["b0"]
    with Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"}) as b:
        st = store(tmp_path, pki)
        before = st.read_bytes()
        r = dev(st, "mqtt", port=b.port, password="wrong")
    assert r["mqtt"]["error"] == "MQTTError" and "rc 5" in r["mqtt"]["msg"], r
    assert st.read_bytes() == before


# ---------------------------------------------------------------- cancellation, deadlines

def test_task_cancelled_mid_handshake_leaves_no_socket(tmp_path, pki):
    with RawTLSServer("stall") as srv:
        r = dev(store(tmp_path, pki), "cancel", port=srv.port, after_ms=400)
        assert srv.hellos == 1  # the handshake had started
    assert r["cancelled"] and r["fds_mid"] == r["fds_before"] + 1, r


def test_handshake_deadline(tmp_path, pki):
    with RawTLSServer("stall") as srv:
        r = dev(store(tmp_path, pki), "deadline", port=srv.port, timeout=0.5)
    assert r["error"] == "OSError" and "deadline" in r["msg"], r


def test_the_connect_deadline_covers_the_end_of_the_handshake(tmp_path, pki):
    """A server that replays the pinned (public) certificate and then goes silent never proves the
    key: the handshake cannot end. The verdict comes from the certificate, but the first write is
    still bounded by the connect deadline (found by H8: it waited for ever), and nothing is sent."""
    der = x509.load_pem_x509_certificate(pki["files"]["active"][0].read_bytes()).public_bytes(Encoding.DER)
    with RawTLSServer("cert", certs=[der], hold=30) as srv:
        r = dev(store(tmp_path, pki), "deadline", port=srv.port, timeout=2)
        assert srv.app_records == 0
    assert r.get("verdict") == "active" and "written" not in r, r
    assert r["error"] == "OSError" and "deadline" in r["msg"] and "end of the TLS handshake" in r["msg"], r


# ---------------------------------------------------------------- MQTT robustness

def test_broker_restart_survived(tmp_path, pki, broker):
    flag = tmp_path / "restarted"
    sub1 = broker.subscriber("keypin/aio/rs", count=1, timeout=30)
    arg = tmp_path / "dev-aio-restart.json"
    arg.write_text(json.dumps({"store": str(store(tmp_path, pki)), "sc": "restart", "port": broker.port,
                               "topic": "keypin/aio/rs", "supervise": True, "flag": str(flag), "id": "rs"}))
    argv = [str(ROOT / "tools/upy"), str(DEV), str(arg)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sub1.result() == [("keypin/aio/rs", b"hello 1")]
        broker.restart()
        sub2 = broker.subscriber("keypin/aio/rs", count=1, timeout=40)
        flag.write_text("x")
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out + err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["mqtt"].get("connects") == 2 and "error" not in r["mqtt"], r
    assert sub2.result() == [("keypin/aio/rs", b"hello 2")]


def test_hostile_retained_messages_are_bounded_and_counted(tmp_path, pki, broker):
    """A 3 MB and a 2-byte non-UTF-8 retained message: the first is skipped without being
    allocated (the device has a 256 KiB heap), the second reaches the app as bytes; a good one
    after them still arrives."""
    broker.publish("keypin/aio/hostile/big", b"x" * (3 * 1024 * 1024), retain=True)
    broker.publish("keypin/aio/hostile/bad", b"\xff\xfe", retain=True)
    broker.publish("keypin/aio/hostile/ok", b"fine", retain=True)
    try:
        r = dev(store(tmp_path, pki), "mqtt", heap="256k", port=broker.port, sub="keypin/aio/hostile/#",
                topic="keypin/aio/x", id="hostile", count=2, listen=20, max_msg=None)
    finally:
        for t in ("big", "bad", "ok"):
            broker.publish(f"keypin/aio/hostile/{t}", b"", retain=True)
    m = r["mqtt"]
    assert "error" not in m, r
    assert m["dropped"] == 1 and m["received"] == 2, m
    assert sorted(g[0] for g in m["got"]) == ["keypin/aio/hostile/bad", "keypin/aio/hostile/ok"], m


# ---------------------------------------------------------------- the device app on asyncio

def _app_dir(tmp_path, pki, web, broker, **cfg):
    d = tmp_path / "device"
    d.mkdir()
    shutil.copy(store(tmp_path, pki), d / "pins.json")
    c = {"device_id": "aio-7", "period": 1, "cycles": 3, "hosts": {HOST: "127.0.0.1"},
         "mqtt": {"host": HOST, "port": broker.port, "user": "dev", "password": "secret", "keepalive": 10},
         "https": {"url": url(web.port), "interval": 1}}
    c.update(cfg)
    (d / "config.json").write_text(json.dumps(c))
    return d


def test_example_user_task_beside_keypin_tasks(tmp_path, pki, web, broker):
    d = _app_dir(tmp_path, pki, web, broker)
    temps = broker.subscriber("keypin/aio-7/temperature", count=2, timeout=40)
    status = broker.subscriber("keypin/aio-7/status", count=2, timeout=40)
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "docs/examples/asyncio_app.py")], cwd=d,
                       check=False, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "done: 3/3 cycles ok" in p.stdout, p.stdout
    t = temps.result()
    assert len(t) == 2 and all(float(m) >= 20 for _, m in t), t
    s = [json.loads(m) for _, m in status.result()]
    assert len(s) == 2 and s[0]["device"] == "aio-7" and s[-1]["checkins"] >= 1, s
    assert any(q["uri"] == "/checkin" and q["method"] == "POST" for q in web.requests())


def test_main_runs_the_asyncio_app_when_configured(tmp_path, pki, web, broker):
    d = _app_dir(tmp_path, pki, web, broker, asyncio=True, cycles=2)
    online = broker.subscriber("keypin/aio-7/online", count=1, timeout=40)  # only the asyncio app says it
    (d / "main.py").write_text((ROOT / "main.py").read_text())
    p = subprocess.run([str(ROOT / "tools/upy"), "main.py"], cwd=d, check=False, capture_output=True, text=True,
                       timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "done: 2/2 cycles ok" in p.stdout, p.stdout
    assert online.result() == [("keypin/aio-7/online", b"1")]


def test_asyncio_app_keeps_running_under_hostile_retained_messages(tmp_path, pki, web, broker):
    """A retained 2-byte non-UTF-8 command and a retained 3 MB message on the fleet pins topic,
    with a 256 KiB heap: the asyncio app publishes its status every round and counts both
    (the command makes App.on_cmd raise: ignored and counted; the 3 MB one is never allocated)."""
    d = _app_dir(tmp_path, pki, web, broker, asyncio=True, cycles=2, update={"fleet": "f1"},
                 device_id="aio-8")
    broker.publish("keypin/aio-8/cmd", b"\xff\xfe", retain=True)
    broker.publish("keypin/fleet/f1/pins", b"x" * (3 * 1024 * 1024), retain=True)
    status = broker.subscriber("keypin/aio-8/status", count=2, timeout=40)
    (d / "main.py").write_text((ROOT / "main.py").read_text())
    import os
    try:
        p = subprocess.run([str(ROOT / "tools/upy"), "main.py"], cwd=d, check=False, capture_output=True,
                           text=True, timeout=90, env=dict(os.environ, KEYPIN_HEAP="256k"))
    finally:
        broker.publish("keypin/aio-8/cmd", b"", retain=True)
        broker.publish("keypin/fleet/f1/pins", b"", retain=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "done: 2/2 cycles ok" in p.stdout, p.stdout
    s = [json.loads(m) for _, m in status.result()]
    assert len(s) == 2, s
    assert s[-1]["messages"] == {"dropped": 1, "malformed": 1}, s[-1]


def _signed_app(tmp_path, pki, web, broker, **cfg):
    """An asyncio app whose pin store takes signed updates (fleet f1, signer s1) -> (dir, s1, new pin)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from test_updates import signer_of
    s1 = ed25519.Ed25519PrivateKey.generate()
    p = pki["pins"]
    d = _app_dir(tmp_path, pki, web, broker, asyncio=True, **cfg)
    (d / "pins.json").write_bytes(pin_document2(
        {"api": {"hosts": [HOST], "active": [p["active"]], "backups": [[p["b0"]]], "policy": "leaf"}},
        signer=signer_of(s1), fleet="f1"))
    return d, s1, pin(new_key())


def _run_main(d, heap=None):
    import os
    (d / "main.py").write_text((ROOT / "main.py").read_text())
    env = dict(os.environ, KEYPIN_HEAP=heap) if heap else None
    p = subprocess.run([str(ROOT / "tools/upy"), "main.py"], cwd=d, check=False, capture_output=True, text=True,
                       timeout=90, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.mark.parametrize("via", ["https", "mqtt"])
def test_asyncio_app_applies_a_signed_update(tmp_path, pki, web, broker, via):
    from test_updates import raw_update
    p = pki["pins"]
    dev_id = f"aio-upd-{via}"
    upd = {"fleet": "f1"} if via == "mqtt" else {"url": url(web.port, f"/files/{dev_id}.txt")}
    d, s1, new = _signed_app(tmp_path, pki, web, broker, cycles=2, device_id=dev_id, update=upd)
    data = raw_update(s1, 1, {"api": {"hosts": [HOST], "active": [p["active"]], "backups": [[p["b0"]], [new]],
                                      "policy": "leaf"}}, fleet="f1")
    if via == "https":
        (web.root / f"{dev_id}.txt").write_bytes(data)
        (web.root / f"{dev_id}.txt.version").write_text("1\n")
    else:
        broker.publish("keypin/fleet/f1/pins", data, retain=True)
    try:
        out = _run_main(d)
    finally:
        if via == "mqtt":
            broker.publish("keypin/fleet/f1/pins", b"", retain=True)
    assert f"update: applied version 1 via {via}" in out, out
    doc = read_document(d / "pins.json")
    assert doc["version"] == 1 and doc["sets"]["api"]["backups"] == [[p["b0"]], [new]], doc


def test_asyncio_app_answers_a_status_command(tmp_path, pki, web, broker):
    d = _app_dir(tmp_path, pki, web, broker, asyncio=True, cycles=2, period=2, device_id="aio-cmd")
    broker.publish("keypin/aio-cmd/cmd", b"status", retain=True)
    status = broker.subscriber("keypin/aio-cmd/status", count=3, timeout=40)
    try:
        out = _run_main(d)
    finally:
        broker.publish("keypin/aio-cmd/cmd", b"", retain=True)
    assert "command: status" in out, out
    assert len(status.result()) == 3, out  # two rounds + the one the command asked for


class _Banner:
    # a server context whose TLS sockets speak first: a line right after the handshake
    def __init__(self, ctx, line):
        self.ctx, self.line = ctx, line

    def wrap_socket(self, sock, **kw):
        s = self.ctx.wrap_socket(sock, **kw)
        s.sendall(self.line)
        return s


def test_a_server_that_speaks_first(tmp_path, pki):
    crt, key = pki["files"]["active"]
    with TLSServer(str(crt), str(key)) as srv:
        srv.ctx = _Banner(srv.ctx, b"220 hello\n")
        r = dev(store(tmp_path, pki), "connect", port=srv.port, banner=True)
    assert r["verdict"] == "active" and r["banner"] == "220 hello\n" and r["reply"] == "OK ping\n", r


def test_keepalive_pings_reach_the_broker(tmp_path, pki, broker):
    start = len(broker.log())
    r = dev(store(tmp_path, pki), "mqtt", port=broker.port, keepalive=1, supervise=True, sub="keypin/aio/ka",
            listen=3, id="ka")
    assert "error" not in r["mqtt"], r
    pings = broker.log()[start:].count("Received PINGREQ from kp-aio-ka")
    assert pings >= 3, broker.log()[start:][-2000:]  # one every keepalive/2 = 0.5 s for 3 s


class _SilentBroker(TLSServer):
    # answers CONNECT with CONNACK rc 0, then never again (no PINGRESP, no SUBACK)
    def _one(self, c):
        with self.ctx.wrap_socket(c, server_side=True) as s:
            self.handshakes += 1
            s.recv(4096)
            s.sendall(b"\x20\x02\x00\x00")
            while s.recv(4096):
                pass


def test_a_silent_broker_is_left_and_reconnected(tmp_path, pki):
    crt, key = pki["files"]["active"]
    with _SilentBroker(str(crt), str(key)) as srv:
        r = dev(store(tmp_path, pki), "mqtt", port=srv.port, keepalive=1, supervise=True, sub="keypin/aio/x",
                listen=5, id="silent")
    m = r["mqtt"]
    assert "error" not in m and m["connects"] >= 2 and srv.handshakes >= 2, r
    assert any("no answer from" in ln for ln in r["log"]), r["log"]


def test_an_open_stream_ends_when_its_key_is_retired(tmp_path, pki):
    """Connected to the active key; another connection meets the backup key's server and
    rotates (the active key is retired): the first stream's next write is refused, nothing sent."""
    crt, key = pki["files"]["active"]
    bcrt, bkey = pki["files"]["b0"]
    with TLSServer(str(crt), str(key)) as old, Nginx(tmp_path, str(bcrt), str(bkey)) as ng:
        r = dev(store(tmp_path, pki), "retire", port=old.port, url=url(ng.port))
        got = old.received
    assert r["first"] == "OK one\n" and r["rotation"] == "rotated", r
    assert r["after"]["error"] == "PinMismatch" and r["after"]["reason"] == "retired key", r
    assert got == b"one\n", got  # "two" never left the device
