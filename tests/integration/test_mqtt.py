"""keypin.mqtt in the Unix port against a real mosquitto (TLS + password) on loopback."""
import json
import os
import pathlib
import subprocess

import pytest
from helpers.pki import CA, new_key, pin, pin_document2, read_document
from helpers.realservers import Mosquitto
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENS = ["legacy", "current"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("mqtt")
    ca = CA("MQTT")
    keys = {n: new_key() for n in ("active", "b0", "evil")}
    files = {n: ca.write_chain(d, n, k, "device.example.test") for n, k in keys.items()}
    return {"dir": d, "files": files, "pins": {n: pin(k) for n, k in keys.items()}}


@pytest.fixture(scope="module")
def broker(pki):
    crt, key = pki["files"]["active"]
    b = Mosquitto(pki["dir"], str(crt), str(key), users={"dev": "secret"})
    yield b
    b.stop()


def store(tmp_path, pki):
    p = pki["pins"]
    path = tmp_path / "pins.json"
    # v2, both current copies (a v1 document is stored as v2 at its first load: a write)
    path.write_bytes(pin_document2({"mq": {"hosts": ["device.example.test"], "active": [p["active"]],
                                           "backups": [[p["b0"]]], "policy": "leaf"}}))
    (tmp_path / "pins.json.2").write_bytes(path.read_bytes())
    return path


def dev(st, port, gen, sc="publish", flag=None, background=False, heap=None):
    argv = [str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_mqtt.py"), str(st), str(port), gen, sc]
    if flag:
        argv.append(str(flag))
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    env = dict(os.environ, KEYPIN_HEAP=heap) if heap else None
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=90, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("gen", GENS)
def test_pinned_publish_reaches_subscriber(tmp_path, pki, broker, gen):
    sub = broker.subscriber(f"keypin/test/{gen}", count=1, timeout=20)
    r = dev(store(tmp_path, pki), broker.port, gen)
    assert r["ok"], r
    assert r["legacy"] == (gen == "legacy") and r["verdict"] == "active"
    assert sub.result() == [(f"keypin/test/{gen}", b"hello 1")]


@pytest.mark.parametrize("gen", GENS)
def test_mitm_gets_no_connect_and_no_password(tmp_path, pki, gen):
    crt, key = pki["files"]["evil"]
    with TLSServer(str(crt), str(key)) as rec:
        r = dev(store(tmp_path, pki), rec.port, gen)
    assert not r["ok"] and r["error"] == "PinMismatch", r
    assert rec.accepted == 1 and rec.received == b""  # no CONNECT, no user name, no password


@pytest.mark.parametrize("gen", GENS)
def test_rotation_confirmed_after_connack(tmp_path, pki, gen):
    crt, key = pki["files"]["b0"]
    b = Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"})
    try:
        st = store(tmp_path, pki)
        r = dev(st, b.port, gen)
    finally:
        b.stop()
    assert r["ok"] and r["verdict"] == "rotated", r
    doc = read_document(st)
    assert doc["sets"]["mq"]["active"] in (pki["pins"]["b0"], [pki["pins"]["b0"]])  # pin document v1 or v2
    assert pki["pins"]["active"] in doc.get("retired", doc["sets"]["mq"].get("retired"))


@pytest.mark.parametrize("gen", GENS)
def test_refused_connack_does_not_rotate(tmp_path, pki, gen):
    """The broker holding backup 0 refuses the login (CONNACK return code 5): no rotation
    (issue 12.11: confirming before CONNACK is checked makes this test fail)."""
    crt, key = pki["files"]["b0"]
    b = Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"})
    try:
        st = store(tmp_path, pki)
        before = st.read_bytes()
        r = dev(st, b.port, gen, "badpass")
    finally:
        b.stop()
    assert not r["ok"], r
    assert st.read_bytes() == before, "pins.json changed: rotated after a refused login"


@pytest.mark.parametrize("cmd", ["non-utf8", "3MB"])
@pytest.mark.parametrize("gen", GENS)
def test_hostile_retained_messages(tmp_path, pki, broker, gen, cmd):
    """A retained 2-byte non-UTF-8 message or a 3 MB one on the command topic, and a 3 MB one on
    the pins topic: connect, subscribe and polling go on, the big ones are dropped without being
    read into memory (a 256 KiB heap could not hold them), the bad one is counted, and the client
    publishes afterwards."""
    big = b"\x01" * (3 * 1024 * 1024)
    broker.publish("keypin/test/hostile/cmd", b"\xff\xfe" if cmd == "non-utf8" else big, retain=True)
    broker.publish("keypin/test/hostile/pins", big, retain=True)
    try:
        sub = broker.subscriber(f"keypin/test/{gen}", count=1, timeout=60)
        r = dev(store(tmp_path, pki), broker.port, gen, "hostile", heap="256k")
        assert r["ok"], r
        assert sub.result() == [(f"keypin/test/{gen}", b"alive")]
        assert r["got"] == [] and (r["dropped"], r["malformed"]) == ((1, 1) if cmd == "non-utf8" else (2, 0)), r
    finally:
        broker.publish("keypin/test/hostile/cmd", b"", retain=True)
        broker.publish("keypin/test/hostile/pins", b"", retain=True)


def test_broker_restart_survived_with_backoff(tmp_path, pki, broker):
    flag = tmp_path / "restarted"
    sub1 = broker.subscriber("keypin/test/legacy", count=1, timeout=30)
    p = dev(store(tmp_path, pki), broker.port, "legacy", "restart", flag, background=True)
    assert sub1.result() == [("keypin/test/legacy", b"hello 1")]
    broker.restart()
    sub2 = broker.subscriber("keypin/test/legacy", count=1, timeout=30)
    flag.write_text("x")
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, out + err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["ok"] and r["reconnected"], r
    assert sub2.result() == [("keypin/test/legacy", b"hello 2")]


def test_backoff_is_exponential_with_jitter():
    script = ("from keypin.mqtt import backoff\n"
              "print([backoff(i) for i in range(8)])\n"
              "print(len(set(backoff(3) for _ in range(50))))\n")
    p = subprocess.run([str(ROOT / "tools/upy"), "-c", script], capture_output=True, text=True, check=True)
    vals, distinct = p.stdout.split("\n")[:2]
    vals = json.loads(vals)
    for i, v in enumerate(vals):
        d = min(60, 1 << i) * 1000
        assert d // 2 <= v <= d, (i, v)
    assert int(distinct) > 10  # jitter


def test_failed_connects_leak_no_socket(tmp_path, pki):
    """Every failed attempt (TCP refused) releases its socket: a broker outage must not use up
    the board's sockets (lwIP has about 10)."""
    st = store(tmp_path, pki)
    script = ("import gc, os, sys\nfrom keypin import mqtt\nfrom keypin.store import PinStore\n"
              "c = mqtt.Client(b'x', 'device.example.test', 1, store=PinStore(sys.argv[1]), addr='127.0.0.1',"
              " log=lambda m: None)\n"
              "n = len(os.listdir('/proc/self/fd'))\n"
              "try:\n    c.ensure(tries=8, sleep_ms=lambda d: None)\nexcept OSError:\n    pass\n"
              "gc.collect()\nprint(n, len(os.listdir('/proc/self/fd')), c.failures)\n")
    f = tmp_path / "leak.py"
    f.write_text(script)
    p = subprocess.run([str(ROOT / "tools/upy"), str(f), str(st)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    before, after, failures = map(int, p.stdout.split())
    assert failures == 8 and after == before, p.stdout


@pytest.mark.parametrize("reply", ["drip", "silent"])
@pytest.mark.parametrize("gen", GENS)
def test_a_dripping_or_silent_broker_cannot_hold_the_client(tmp_path, pki, gen, reply):
    """After a genuine handshake the broker drips its CONNACK one byte every 1.5 s (each within a
    2 s per-read timeout), or never answers: timeout=2 is one deadline for handshake + CONNACK
    (seen failing first: the old client had no timeout at all and waited for the whole CONNACK,
    or for ever)."""
    from helpers.scripted import ScriptedHTTPS
    crt, key = pki["files"]["active"]
    connack = b"\x20\x02\x00\x00"
    drip = 1.5 if reply == "drip" else None
    with ScriptedHTTPS(crt, key, connack if drip else b"", drip=drip, end="hold", until=None, hold=12) as srv:
        p = subprocess.Popen([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_mqtt.py"),
                              str(store(tmp_path, pki)), str(srv.port), gen, "drip"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert out.strip(), err
    r = json.loads(out.strip().splitlines()[-1])
    assert not r["ok"] and r["error"] == "OSError" and "110" in r["msg"] + str(r.get("errno")), r
    assert srv.sent < len(connack) if drip else srv.client_hung_up is False, (srv.sent, r)
