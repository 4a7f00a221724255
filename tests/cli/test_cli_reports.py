"""keypin reports through the real console script against a real mosquitto: verified TLS with
user and password, the 8883 default of --tls, readable TLS errors, reconnect after the broker
restarts, --json lines, and bad values refused without a traceback."""
import json
import pathlib
import socket
import subprocess
import threading
import time

import pytest
from helpers.pki import CA, new_key
from helpers.realservers import Mosquitto

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv/bin/keypin")
BATCH = {"device": "dev-j", "dropped": 1, "reports": [
    {"t": 1795900000, "host": "api.example.test", "port": 443, "set": "api", "reason": "unknown key",
     "chain": [[1, "sha256/AAAA"], [0, "sha256/BBBB"]], "fw": "micropython 1.29.0, keypin 0.1.0"}]}


def keypin(*argv, timeout=60):
    return subprocess.run([KEYPIN, *map(str, argv)], check=False, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tlsbroker(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports-tls")
    ca = CA("Reports TLS")
    crt, key = ca.write_chain(d, "mq", new_key(), "localhost")
    (d / "ca.pem").write_bytes(ca.root_pem())
    (d / "other-ca.pem").write_bytes(CA("Someone else").root_pem())
    b = Mosquitto(d, str(crt), str(key), users={"ops": "pw"})
    b.dir_ = d
    yield b
    b.stop()


def test_verified_tls_with_user_and_password(tlsbroker):
    tlsbroker.publish("keypin/dev-j/reports", json.dumps(BATCH), retain=True)
    try:
        r = keypin("reports", "--host", "localhost", "--port", tlsbroker.port, "--cafile", tlsbroker.dir_ / "ca.pem",
                   "--user", "ops", "--password", "pw", "--count", "1", "--timeout", "20")
    finally:
        tlsbroker.publish("keypin/dev-j/reports", b"", retain=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("keypin/dev-j/reports: 1 pin failure report from dev-j, 1 more dropped"), r.stdout
    assert "    presented: depth 1: sha256/AAAA\n               depth 0: sha256/BBBB" in r.stdout


def test_tls_errors_are_sentences(tlsbroker):
    r = keypin("reports", "--host", "localhost", "--port", tlsbroker.port, "--cafile", tlsbroker.dir_ / "other-ca.pem",
               "--user", "ops", "--password", "pw", "--timeout", "1")
    assert r.returncode == 1 and r.stderr.startswith("keypin: reports: TLS with localhost:"), r.stderr
    assert "certificate verify failed: unable to get local issuer certificate" in r.stderr
    assert "_ssl.c" not in r.stderr and "[SSL" not in r.stderr and "Traceback" not in r.stderr
    # TLS to the plain port: the broker does not speak TLS there
    r = keypin("reports", "--host", "127.0.0.1", "--port", tlsbroker.plain_port, "--insecure", "--timeout", "1",
               "--connect-timeout", "3")
    assert r.returncode == 1 and r.stderr.startswith("keypin: reports: "), r.stderr
    assert "_ssl.c" not in r.stderr and "Traceback" not in r.stderr
    r = keypin("reports", "--host", "localhost", "--cafile", tlsbroker.dir_ / "missing.pem")
    assert r.returncode == 1 and r.stderr.startswith("keypin: reports: --cafile "), r.stderr
    assert "No such file" in r.stderr and "Traceback" not in r.stderr


def test_tls_defaults_to_port_8883():
    """--tls without --port goes to 8883 (a listener there sees a TLS ClientHello), not 1883."""
    seen = []
    try:
        ls = socket.create_server(("127.0.0.1", 8883))
    except OSError:
        ls = None  # 8883 taken on this machine: the error message must still name it
    if ls is not None:
        ls.settimeout(15)

        def accept():
            try:
                c, _ = ls.accept()
                c.settimeout(10)
                seen.append(c.recv(1))
                c.close()
            except OSError:
                pass
        t = threading.Thread(target=accept)
        t.start()
    r = keypin("reports", "--host", "127.0.0.1", "--tls", "--timeout", "1", "--connect-timeout", "3")
    assert r.returncode == 1 and "127.0.0.1:8883" in r.stderr, r.stderr
    if ls is not None:
        t.join(20)
        ls.close()
        assert seen == [b"\x16"], seen  # a TLS handshake record arrived on 8883


def test_json_lines(tlsbroker):
    tlsbroker.publish("keypin/dev-j/reports", json.dumps(BATCH), retain=True)
    tlsbroker.publish("keypin/dev-k/reports", b"\xff\xfe junk", retain=True)
    try:
        r = keypin("reports", "--host", "127.0.0.1", "--port", tlsbroker.plain_port, "--user", "ops", "--password",
                   "pw", "--count", "2", "--timeout", "20", "--json")
    finally:
        tlsbroker.publish("keypin/dev-j/reports", b"", retain=True)
        tlsbroker.publish("keypin/dev-k/reports", b"", retain=True)
    assert r.returncode == 0, r.stderr
    objs = {o["topic"]: o for o in map(json.loads, r.stdout.splitlines())}
    assert set(objs) == {"keypin/dev-j/reports", "keypin/dev-k/reports"}
    j = objs["keypin/dev-j/reports"]
    assert j == {"command": "reports", "schema": 1, "topic": "keypin/dev-j/reports", "retained": True,
                 "device": "dev-j", "dropped": 1, "reports": BATCH["reports"]}
    k = objs["keypin/dev-k/reports"]
    assert k["error"] == "not a keypin report batch" and k["size"] == 7 and k["retained"] is True


def test_reconnects_after_the_broker_restarts(tmp_path):
    crt, key = CA("Reconnect").write_chain(tmp_path, "mq", new_key(), "localhost")
    b = Mosquitto(tmp_path, str(crt), str(key), users={"ops": "pw"})
    err = tmp_path / "err.txt"
    try:
        with open(err, "w") as ef:
            p = subprocess.Popen([KEYPIN, "reports", "--host", "127.0.0.1", "--port", str(b.plain_port), "--user",
                                  "ops", "--password", "pw", "--count", "1", "--timeout", "60"],
                                 stdout=subprocess.PIPE, stderr=ef, text=True)
            try:
                b.wait_log("Received SUBSCRIBE from keypin-reports-", timeout=20)
                time.sleep(0.5)
                b.restart()
                deadline = time.monotonic() + 40
                while "reconnected" not in err.read_text() and time.monotonic() < deadline and p.poll() is None:
                    time.sleep(0.2)
                assert "connection to 127.0.0.1:" in err.read_text() and "reconnected" in err.read_text(), \
                    err.read_text()
                time.sleep(0.5)  # the SUBSCRIBE after the reconnect
                b.publish("keypin/dev-r/reports", json.dumps({"device": "dev-r", "dropped": 0, "reports": []}))
                out, _ = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    finally:
        b.stop()
    assert p.returncode == 0, err.read_text()
    assert out.startswith("keypin/dev-r/reports: 0 pin failure reports from dev-r"), out


def test_bad_values_are_refused_readably():
    for args, want in ((("--timeout", "-1"), "argument --timeout: '-1': give 0 (no limit) or a positive number"),
                       (("--count", "many"), "argument --count: 'many' is not a whole number"),
                       (("--connect-timeout", "0"), "argument --connect-timeout: '0': a timeout must be more than 0"),
                       (("--port", "99999"), "argument --port: '99999': a port is 1..65535")):
        r = keypin("reports", "--host", "127.0.0.1", *args)
        assert r.returncode == 1 and r.stderr.startswith("keypin: reports: " + want), r.stderr
        assert "Traceback" not in r.stderr
