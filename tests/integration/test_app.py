"""The device application (main.py from a `keypin image`) in the Unix port against real
nginx (HTTPS) and mosquitto (MQTTS, password file) on loopback."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from helpers.pki import CA, new_key, pin, pin_document2, read_document
from helpers.realservers import Mosquitto, Nginx
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
# KEYPIN_TEST_LIB=DIR runs the device on the lib/ in DIR instead of the image's (to see a test fail
# on older device code)
LIB = os.environ.get("KEYPIN_TEST_LIB")
HOST = "device.example.test"
DEV = "dev-42"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    ca = CA("App")  # mitm is under the same CA: CA validity buys an attacker nothing
    keys = {n: new_key() for n in ("active", "b0", "b1", "mitm")}
    return {"dir": d, "files": {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()},
            "pins": {n: pin(k) for n, k in keys.items()}}


@pytest.fixture(scope="module")
def image(pki):
    """One x64 image built by the CLI; each test copies it (the tested artifact is the deployed one)."""
    d = pki["dir"]
    p = pki["pins"]
    (d / "pins-src.json").write_bytes(pin_document2({"fleet": {  # v2: a v1 document is a write at its first load
        "hosts": [HOST], "active": [p["active"]], "backups": [[p["b0"]], [p["b1"]]], "policy": "leaf"}}))
    (d / "config-src.json").write_text(json.dumps({"device_id": DEV}))
    out = d / "image"
    r = subprocess.run([str(ROOT / ".venv/bin/keypin"), "image", "--out", str(out), "--arch", "x64",
                        "--config", str(d / "config-src.json"), "--pins", str(d / "pins-src.json")],
                       check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "lib" / "keypin" / "tls.mpy").exists() and (out / "main.py").exists()
    return out


def pins_of(v):
    """A pin, a list of pins or a list of backup groups -> the flat list of pins (pin document v1 or v2)."""
    if isinstance(v, str):
        return [v]
    return [p for x in v for p in pins_of(x)]


class Servers:
    def __init__(self, workdir, pki, key="active"):
        crt, k = pki["files"][key]
        self.ng = Nginx(workdir, str(crt), str(k))
        self.mq = Mosquitto(workdir, str(crt), str(k), users={"dev": "secret"})
        self.pki = pki

    def switch(self, key):
        crt, k = self.pki["files"][key]
        self.ng.restart(str(crt), str(k))
        self.mq.restart(str(crt), str(k))

    def stop(self):
        self.ng.stop()
        self.mq.stop()


@pytest.fixture
def servers(tmp_path, pki):
    s = Servers(tmp_path, pki)
    yield s
    s.stop()


def device(image, tmp_path, https_port, mqtt_port):
    d = tmp_path / "device"
    shutil.copytree(image, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update({"mqtt": {"host": HOST, "port": mqtt_port, "user": "dev", "password": "secret",
                         "topic_prefix": "keypin", "tries": 2},
                "https": {"url": f"https://{HOST}:{https_port}/checkin", "interval": 300},
                "hosts": {HOST: "127.0.0.1"}, "pins": "pins.json", "period": 1})
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def run_cycle(d):
    env = dict(os.environ, MICROPYPATH=f".frozen:{LIB or str(d) + '/lib'}:{ROOT}/build/umqtt-pypi")
    p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c",
                        "exec(open('boot.py').read())\nimport main\nprint('GOOD', main.run(cycles=1))"],
                       cwd=d, env=env, check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "boot: Unix port, no Wi-Fi to join" in p.stdout
    good = int(p.stdout.strip().splitlines()[-1].split()[-1])
    return good, p.stdout


def test_one_cycle_status_and_checkin(image, tmp_path, servers):
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    sub = servers.mq.subscriber(f"keypin/{DEV}/status", count=1, timeout=30)
    before = (d / "pins.json").read_bytes()
    good, out = run_cycle(d)
    assert good == 1, out
    (_topic, payload), = sub.result()
    st = json.loads(payload)
    assert st["device"] == DEV and st["keypin"] and st["firmware"].startswith("micropython")
    assert pins_of(st["sets"]["fleet"]["active"]) == [servers.pki["pins"]["active"]] and st["seq"] == 1
    assert st["rotations"] == 0 and st["last_pin_failure"] is None
    reqs = [r for r in servers.ng.requests() if "/checkin" in r.get("request", "")]
    assert reqs and reqs[-1]["status"] == 200 and reqs[-1]["request"].startswith("POST /checkin")
    assert (d / "pins.json").read_bytes() == before  # no flash write on ordinary connections


def test_mitm_refused_and_nothing_sent(image, tmp_path, servers, pki):
    # real servers with another key under the same CA
    servers.switch("mitm")
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    good, out = run_cycle(d)
    assert good == 0
    fails = [ln for ln in out.splitlines() if "failed:" in ln]
    assert any("mqtt connect" in ln and "PinMismatch" in ln for ln in fails), out
    assert any("https check-in failed: PinMismatch" in ln for ln in fails), out
    assert not any("/checkin" in r.get("request", "") for r in servers.ng.requests())
    # recording TLS servers with the mitm key: not one application byte arrives
    crt, key = pki["files"]["mitm"]
    with TLSServer(str(crt), str(key)) as rh, TLSServer(str(crt), str(key)) as rm:
        d2 = device(image, tmp_path / "b", rh.port, rm.port)
        good, out = run_cycle(d2)
    assert good == 0
    assert rh.accepted >= 1 and rm.accepted >= 1, (rh.accepted, rm.accepted)
    assert rh.received == b"" and rm.received == b""  # no HTTP request, no MQTT CONNECT
    assert pins_of(read_document(d2 / "pins.json")["sets"]["fleet"]["active"]) == [pki["pins"]["active"]]


def test_key_switch_rotates_persists_and_refuses_old(image, tmp_path, servers, pki):
    p = pki["pins"]
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    servers.switch("b0")
    good, out = run_cycle(d)
    assert good == 1, out
    assert "keypin: rotated set 'fleet'" in out
    whole = read_document(d / "pins.json")
    doc = whole["sets"]["fleet"]
    assert pins_of(doc["active"]) == [p["b0"]] and pins_of(doc["backups"]) == [p["b1"]]
    assert pins_of(whole.get("retired", doc.get("retired"))) == [p["active"]]
    # a restarted device process keeps the new key, with no further write
    before = (d / "pins.json").read_bytes()
    # status is retained: the first message is the previous run's, the second this run's
    sub = servers.mq.subscriber(f"keypin/{DEV}/status", count=2, timeout=30)
    good, out = run_cycle(d)
    assert good == 1 and "rotated" not in out
    msgs = sub.result()
    assert json.loads(msgs[0][1])["rotations"] == 1
    st = json.loads(msgs[1][1])
    assert pins_of(st["sets"]["fleet"]["active"]) == [p["b0"]] and st["rotations"] == 0
    assert (d / "pins.json").read_bytes() == before
    # the old key is refused from now on, even with a CA-valid certificate
    servers.switch("active")
    good, out = run_cycle(d)
    assert good == 0 and "retired key" in out
    assert pins_of(read_document(d / "pins.json")["sets"]["fleet"]["active"]) == [p["b0"]]


def test_repl_test_reports_verdicts(image, tmp_path, servers):
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    env = dict(os.environ, MICROPYPATH=f".frozen:{d}/lib")
    p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c",
                        "import keypin.setup as ks\nprint('RESULT', ks.test())"],
                       cwd=d, env=env, check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("OK, key is the active pin") == 2 and "RESULT True" in p.stdout


def test_command_topic_and_running_loop(image, tmp_path, servers):
    """Two cycles with a 1 s period: a 'status' command sent on the command topic between them
    is answered with a fresh status message."""
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    cfg = json.loads((d / "config.json").read_text())
    cfg["period"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    env = dict(os.environ, MICROPYPATH=f".frozen:{LIB or str(d) + '/lib'}:{ROOT}/build/umqtt-pypi")
    first = servers.mq.subscriber(f"keypin/{DEV}/status", count=1, timeout=30)
    p = subprocess.Popen([str(ROOT / ".venv/bin/micropython"), "-c", "import main\nprint('GOOD', main.run(cycles=2))"],
                         cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert len(first.result()) == 1
        # retained status + the one the command triggers
        sub = servers.mq.subscriber(f"keypin/{DEV}/status", count=2, timeout=30)
        servers.mq.publish(f"keypin/{DEV}/cmd", "status")
        msgs = sub.result()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "keypin: command: status" in out, out
    assert len(msgs) == 2 and out.strip().endswith("GOOD 2"), (msgs, out)


# ---------------------------------------------------------------- issue 12.7 and 17.5

BIG = b"\x01" * (3 * 1024 * 1024)


def run_main(d, heap=None):
    """main.py as the board runs it (boot.py first), in the image's own files; -> (rc, output)."""
    env = dict(os.environ, MICROPYPATH=f".frozen:{LIB or str(d) + '/lib'}:{ROOT}/build/umqtt-pypi")
    argv = [str(ROOT / ".venv/bin/micropython")] + (["-X", f"heapsize={heap}"] if heap else [])
    p = subprocess.run(argv + ["-c", "exec(open('boot.py').read())\nexec(open('main.py').read())"],
                       cwd=d, env=env, check=False, capture_output=True, text=True, timeout=180)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("cmd", ["non-utf8", "3MB"])
def test_hostile_retained_messages_do_not_stop_the_app(image, tmp_path, servers, cmd):
    """A retained 2-byte non-UTF-8 or 3 MB message on the command topic and a 3 MB one on the
    fleet pins topic (seen failing first: every connect failed with UnicodeError/MemoryError, no
    status, no check-in). The app connects, publishes its status (with the counts), checks in and
    polls its update URL, in a 256 KiB heap that could never hold one of those messages."""
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    cfg = json.loads((d / "config.json").read_text())
    cfg["update"] = {"url": f"https://{HOST}:{servers.ng.port}/files/pins-update.txt", "fleet": "f1"}
    cfg["cycles"], cfg["period"] = 2, 1
    (d / "config.json").write_text(json.dumps(cfg))
    (servers.ng.root / "pins-update.txt.version").write_text("0\n")  # nothing newer than the device's
    mq = servers.mq
    mq.publish(f"keypin/{DEV}/cmd", b"\xff\xfe" if cmd == "non-utf8" else BIG, retain=True)
    mq.publish("keypin/fleet/f1/pins", BIG, retain=True)
    sub = mq.subscriber(f"keypin/{DEV}/status", count=2, timeout=60)
    rc, out = run_main(d, heap="256k")
    assert rc == 0 and "done: 2/2 cycles ok" in out, out
    want = {"dropped": 1, "malformed": 1} if cmd == "non-utf8" else {"dropped": 2, "malformed": 0}
    assert json.loads(sub.result()[1][1])["messages"] == want, out  # the second cycle's status
    dropped = [ln for ln in out.splitlines() if "-byte message on" in ln and "dropped" in ln]
    ignored = [ln for ln in out.splitlines() if "message on" in ln and "ignored (UnicodeError" in ln]
    assert (len(dropped), len(ignored)) == ((1, 1) if cmd == "non-utf8" else (2, 0)), out
    assert any("keypin/fleet/f1/pins dropped (limit 8192)" in ln for ln in dropped), out
    reqs = [r["request"] for r in servers.ng.requests()]
    assert any(r.startswith("POST /checkin") for r in reqs), reqs
    assert any("/files/pins-update.txt.version" in r for r in reqs), reqs


def test_update_url_404_is_reported_and_the_cycle_is_good(image, tmp_path, servers):
    """issue 17.5: the update URL answers 404 with a body larger than the version check's 32 bytes."""
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    cfg = json.loads((d / "config.json").read_text())
    cfg["update"] = {"url": f"https://{HOST}:{servers.ng.port}/nothing/pins-update.txt"}
    (d / "config.json").write_text(json.dumps(cfg))
    good, out = run_cycle(d)
    assert "answered 404: no update published there" in out, out
    assert "max_body" not in out and "update check failed" not in out, out
    assert good == 1, out


def test_main_exits_nonzero_when_not_started(image, tmp_path, servers):
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    (d / "pins.json").write_bytes(b"not a pin document\n")
    rc, out = run_main(d)
    assert "not started: StoreError" in out and rc == 1, (rc, out)


def test_config_checked_by_one_schema_on_device_and_cli(image, tmp_path, servers):
    """issue 17.5: {"mqtt": {"port": "8883"}, "typo_key": 1}: `keypin image --config` refuses it with
    the device's own schema, and a device holding it does not start (no TypeError later)."""
    bad = {"mqtt": {"host": HOST, "port": "8883"}, "typo_key": 1}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    r = subprocess.run([str(ROOT / ".venv/bin/keypin"), "image", "--out", str(tmp_path / "img"), "--arch", "x64",
                        "--config", str(f)], check=False, capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("keypin: image: ") and "mqtt.port must be an integer port" in r.stderr, r.stderr
    assert "unknown key 'typo_key'" in r.stderr and not (tmp_path / "img").exists()
    d = device(image, tmp_path, servers.ng.port, servers.mq.port)
    cfg = json.loads((d / "config.json").read_text())
    cfg["mqtt"]["port"] = str(servers.mq.port)
    cfg["typo_key"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    rc, out = run_main(d)
    assert rc == 1 and "not started: ConfigError" in out and "mqtt.port must be an integer port" in out, out
    assert "TypeError" not in out
    # an unknown key alone is said at start and ignored: the device keeps running
    cfg["mqtt"]["port"] = servers.mq.port
    cfg["cycles"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    rc, out = run_main(d)
    assert rc == 0 and "unknown key(s) ignored: typo_key" in out and "done: 1/1 cycles ok" in out, out


def test_a_dripping_checkin_server_cannot_stretch_the_cycle(image, tmp_path, servers, pki):
    """issue 12.6: the check-in server (the pinned key) drips its reply one byte every 0.25 s; with
    https.timeout 2 the check-in fails with the deadline, the rest of the cycle (status over MQTT)
    goes on, and the server could not deliver its reply (seen failing first: the old app waited for
    the whole dripped reply, ~20 s, and counted a good check-in)."""
    from helpers.scripted import ScriptedHTTPS
    crt, key = pki["files"]["active"]
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"x" * 40
    with ScriptedHTTPS(crt, key, reply, drip=0.25, end="hold") as srv:
        d = device(image, tmp_path, srv.port, servers.mq.port)
        cfg = json.loads((d / "config.json").read_text())
        cfg["https"]["timeout"] = 2
        (d / "config.json").write_text(json.dumps(cfg))
        sub = servers.mq.subscriber(f"keypin/{DEV}/status", count=1, timeout=30)
        good, out = run_cycle(d)
    assert good == 0 and "https check-in failed: OSError" in out and "deadline" in out, out
    assert "mqtt: status published" in out and len(sub.result()) == 1, out
    assert srv.sent < len(reply), (srv.sent, out)
