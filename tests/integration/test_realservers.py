"""The real-server helpers (tests/helpers/realservers.py) against the real binaries.

No skips: a missing binary fails the test with "apt-get install <pkg>".
"""
import hashlib
import http.client
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import realservers as rs
from helpers.pki import CA, key_pem, new_key, x509

HOST = "web.example.test"


@pytest.fixture(scope="module")
def ca():
    return CA("Realservers")


@pytest.fixture
def pair(ca, tmp_path):
    """Two (cert, key) file pairs for HOST from the same CA, different keys."""
    return [ca.write_chain(tmp_path, f"srv{i}", new_key(), HOST) for i in range(2)]


def unverified():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def fetch(port, method, path, body=None, ctx=None):
    c = http.client.HTTPSConnection(rs.HOST, port, context=ctx or unverified(), timeout=5)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def gone(srv, *ports):
    """The process was reaped, its group is empty and no port accepts connections."""
    assert srv.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.proc.pid, 0)
    assert not any(rs.port_open(p) for p in ports)
    assert srv not in rs._LIVE
    return True


def test_missing_binary_names_the_package(monkeypatch):
    monkeypatch.setitem(rs.BINARIES, "nginx", ("/nonexistent/nginx", "nginx-light"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(rs.MissingBinary, match="apt-get install nginx-light"):
        rs.binary("nginx")


# ---------------------------------------------------------------- nginx

def test_nginx_serves_given_cert_and_routes(ca, pair, tmp_path):
    (crt, key), _ = pair
    with rs.Nginx(tmp_path, crt, key) as web:
        assert rs.served_leaf_der(web.port) == rs.leaf_der(crt)
        # the chain verifies against the CA root (intermediate sent) for the right name
        ctx = ssl.create_default_context(cadata=ca.root_pem().decode())
        with socket.create_connection((rs.HOST, web.port), timeout=5) as s, \
                ctx.wrap_socket(s, server_hostname=HOST) as t:
            assert t.version() in ("TLSv1.2", "TLSv1.3")
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            c = unverified()
            c.minimum_version = c.maximum_version = version
            assert fetch(web.port, "GET", "/checkin", ctx=c)[0] == 200

        st, hd, body = fetch(web.port, "GET", "/checkin")
        assert (st, hd["content-type"], body.strip()) == (200, "application/json", b'{"ok": true}')
        st, hd, body = fetch(web.port, "POST", "/checkin", body=b'{"id": "dev1"}')
        assert (st, body.strip()) == (200, b'{"ok": true}')

        (web.root / "fw.bin").write_bytes(b"\x01\x02" * 3000)
        st, hd, body = fetch(web.port, "GET", "/files/fw.bin")
        assert (st, body, hd["content-length"]) == (200, b"\x01\x02" * 3000, "6000")
        st, hd, body = fetch(web.port, "GET", "/chunked/fw.bin")
        assert (st, body, hd.get("transfer-encoding")) == (200, b"\x01\x02" * 3000, "chunked")
        assert "content-length" not in hd

        st, hd, _ = fetch(web.port, "GET", "/redirect/2")
        assert (st, hd["location"]) == (302, f"https://{rs.HOST}:{web.port}/redirect/1")
        st, hd, _ = fetch(web.port, "GET", "/redirect/1")
        assert (st, hd["location"]) == (302, f"https://{rs.HOST}:{web.port}/checkin")
        st, hd, _ = fetch(web.port, "GET", "/redirect-away")
        assert (st, hd["location"]) == (302, "https://elsewhere.example.test/")
        st, hd, body = fetch(web.port, "GET", "/big")
        assert st == 200 and body == rs.Nginx.big_content() and len(body) == 200 * 1024
        assert fetch(web.port, "GET", "/elsewhere")[0] == 404

        reqs = web.requests()
        checkins = [r for r in reqs if r["uri"] == "/checkin"]
        assert [r["method"] for r in checkins] == ["GET", "GET", "GET", "POST"]
        assert {r["ssl_protocol"] for r in checkins} == {"TLSv1.2", "TLSv1.3"}
        post = checkins[-1]
        assert post["request"] == "POST /checkin HTTP/1.1" and post["status"] == 200
        assert post["body_length"] == len(b'{"id": "dev1"}')
        chunked = next(r for r in reqs if r["uri"] == "/chunked/fw.bin")
        assert chunked["transfer_encoding"] == "chunked"
        assert web.access_log.exists() and str(web.access_log).startswith(str(tmp_path.resolve()))
    assert gone(web, web.port)


def test_nginx_reload_and_restart_switch_certs(pair, tmp_path):
    (crt1, key1), (crt2, key2) = pair
    web = rs.Nginx(tmp_path, crt1, key1)
    try:
        assert rs.served_leaf_der(web.port) == rs.leaf_der(crt1)
        master = web.proc.pid
        web.reload(certfile=crt2, keyfile=key2)
        assert rs.served_leaf_der(web.port) == rs.leaf_der(crt2)
        assert web.proc.pid == master  # same master: a real reload, not a restart
        assert fetch(web.port, "GET", "/checkin")[0] == 200
        port = web.port
        web.restart(certfile=crt1, keyfile=key1)
        assert web.port == port and web.proc.pid != master
        assert rs.served_leaf_der(web.port) == rs.leaf_der(crt1)
    finally:
        web.stop()
    assert gone(web, web.port)
    web.stop()  # idempotent


def test_nginx_reload_with_wrong_key_fails_fast_and_keeps_serving(pair, tmp_path):
    (crt1, key1), (crt2, _) = pair
    with rs.Nginx(tmp_path, crt1, key1) as web:
        t = time.monotonic()
        with pytest.raises(rs.ServerError, match="refused"):
            web.reload(certfile=crt2)  # new cert, old key: nginx refuses, keeps the old config
        assert time.monotonic() - t < 5
        assert rs.served_leaf_der(web.port) == rs.leaf_der(crt1)


def test_nginx_bad_key_fails_with_log_tail(pair, tmp_path):
    (crt1, _), (_, key2) = pair  # certificate and key do not match
    with pytest.raises(rs.ServerError, match="key values mismatch"):
        rs.Nginx(tmp_path, crt1, key2)
    assert not rs._LIVE


# ---------------------------------------------------------------- mosquitto

def test_mosquitto_tls_password_roundtrip_restart(ca, pair, tmp_path):
    (crt1, key1), (crt2, key2) = pair
    with rs.Mosquitto(tmp_path, crt1, key1) as mq:
        assert mq.port != mq.plain_port
        assert rs.served_leaf_der(mq.port) == rs.leaf_der(crt1)
        # TLS listener: full chain verifies against the root; password checked
        ctx = ssl.create_default_context(cadata=ca.root_pem().decode())
        assert rs.mqtt_connack(mq.port, "dev", "secret", tls=ctx, server_hostname=HOST) == 0
        assert rs.mqtt_connack(mq.port, "dev", "wrong", tls=True) == 5
        assert rs.mqtt_connack(mq.plain_port) == 5  # no anonymous on the plain listener either

        sub = mq.subscriber("keypin/#", count=2, timeout=10)
        mq.publish("keypin/dev1/status", b"\x00online\n")
        mq.publish("keypin/dev1/empty", b"")
        assert sub.result() == [("keypin/dev1/status", b"\x00online\n"), ("keypin/dev1/empty", b"")]
        with pytest.raises(rs.MosquittoClientError, match="not authori"):
            mq.publish("keypin/x", b"y", password="wrong")
        mq.publish("keypin/retained", b"r", retain=True)
        assert mq.subscribe("keypin/retained", timeout=5) == [("keypin/retained", b"r")]
        assert "Sending CONNACK to keypin-probe (0, 0)" in mq.log()
        assert "Sending CONNACK to 127.0.0.1 (0, 5)" in mq.log()  # the refused ones

        ports = (mq.port, mq.plain_port)
        mq.restart(certfile=crt2, keyfile=key2)
        assert (mq.port, mq.plain_port) == ports
        assert rs.served_leaf_der(mq.port) == rs.leaf_der(crt2)
        assert rs.mqtt_connack(mq.port, "dev", "secret", tls=True) == 0
        assert mq.log().count("running") >= 2
    assert gone(mq, mq.port, mq.plain_port)


def test_mosquitto_port_in_use_fails_with_log_tail(pair, tmp_path):
    (crt, key), _ = pair
    with socket.socket() as s:
        s.bind((rs.HOST, 0))
        s.listen(1)
        taken = s.getsockname()[1]
        with pytest.raises(rs.ServerError, match="Address already in use"):
            rs.Mosquitto(tmp_path, crt, key, port=taken)
    assert not rs._LIVE


# ---------------------------------------------------------------- pebble + certbot

def _cert(path):
    return x509.load_pem_x509_certificate(pathlib.Path(path).read_bytes())


def key_spki_sha256(path):
    key = serialization.load_pem_private_key(pathlib.Path(path).read_bytes(), None)
    return hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def test_pebble_certbot_issue_renew_csr_and_new_root(tmp_path):
    domain = "device.example.test"
    with rs.Pebble(tmp_path) as ca:
        root = x509.load_pem_x509_certificate(ca.roots().encode())
        inter = x509.load_pem_x509_certificate(ca.intermediates().encode())

        hook = tmp_path / "deployed"
        first = rs.certbot(ca, tmp_path, domain, deploy_hook=f"echo $RENEWED_LINEAGE > {hook}")
        leaf = _cert(first["cert"])
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName) == [domain]
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
        leaf.verify_directly_issued_by(inter)
        inter.verify_directly_issued_by(root)
        assert _cert(first["chain"]) == inter
        assert first["fullchain"].read_text().count("BEGIN CERTIFICATE") == 2
        assert rs.spki_sha256(first["cert"]) == key_spki_sha256(first["privkey"])
        assert hook.read_text().strip().endswith(f"live/{domain}")
        pin0 = rs.spki_sha256(first["cert"])

        renewed = rs.certbot(ca, tmp_path, domain, renew=True, reuse_key=True)
        assert _cert(renewed["cert"]).serial_number != leaf.serial_number
        assert rs.spki_sha256(renewed["cert"]) == pin0

        rekeyed = rs.certbot(ca, tmp_path, domain, renew=True, reuse_key=False)
        pin1 = rs.spki_sha256(rekeyed["cert"])
        assert pin1 != pin0

        (tmp_path / "fixed.key").write_bytes(key_pem(new_key()))
        fromcsr = rs.certbot(ca, tmp_path, domain, key=tmp_path / "fixed.key")
        assert rs.spki_sha256(fromcsr["cert"]) == key_spki_sha256(tmp_path / "fixed.key")
        assert fromcsr["privkey"] == tmp_path / "fixed.key"
        _cert(fromcsr["cert"]).verify_directly_issued_by(inter)

        ca.restart()  # raises unless the root changed
        root2 = x509.load_pem_x509_certificate(ca.roots().encode())
        assert root2 != root and rs.spki_sha256(root2) != rs.spki_sha256(root)
        # certbot still works after the restart (pebble forgot the account) and keeps the key
        again = rs.certbot(ca, tmp_path, domain, renew=True)
        assert rs.spki_sha256(again["cert"]) == pin1
        _cert(again["chain"]).verify_directly_issued_by(root2)
    assert gone(ca, ca.port, ca.mgmt_port)


# ---------------------------------------------------------------- nothing left behind

_CHILD = r"""
import json, os, pathlib, sys, time
sys.path.insert(0, sys.argv[1])
from helpers import realservers as rs
d = pathlib.Path(sys.argv[2]); crt, key = sys.argv[3], sys.argv[4]
web = rs.Nginx(d, crt, key); mq = rs.Mosquitto(d, crt, key); ca = rs.Pebble(d)
sub = mq.subscriber("never", timeout=60)
pids = [web.proc.pid, mq.proc.pid, ca.proc.pid, sub.proc.pid]
print(json.dumps({"pids": pids}), flush=True)
if sys.argv[5] == "hang":
    time.sleep(60)
"""


def _pids_of_group(pgid):
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getpgid(int(p.name)) == pgid:
                    out.append(int(p.name))
            except ProcessLookupError:
                pass
    return out


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_process_left_behind(pair, tmp_path, how):
    """atexit stops servers of a process that forgot to; a SIGKILLed parent takes them along."""
    (crt, key), _ = pair
    tests_dir = pathlib.Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tests_dir), str(tmp_path), str(crt), str(key),
                              "hang" if how == "sigkill" else "exit"], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(child.stdout.readline())
        if how == "sigkill":
            child.kill()
        child.wait(20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_pids_of_group(p) for p in info["pids"]):
        time.sleep(0.05)
    assert [p for p in info["pids"] if _pids_of_group(p)] == []
