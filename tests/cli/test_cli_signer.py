"""keypin signer / pinset set-signer / pinset sign / reports, and the device's Ed25519 against
signatures made by `cryptography` (keypin.ed25519 in the Unix port)."""
import base64
import hashlib
import json
import os
import pathlib
import random
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers.realservers import Mosquitto, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
P = ["sha256/" + base64.b64encode(hashlib.sha256(bytes([i])).digest()).decode() for i in range(8)]


def signer_of(key):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519/" + base64.b64encode(raw).decode()


def upy(tmp_path, script, *args):
    f = tmp_path / "dev_script.py"
    f.write_text(script)
    p = subprocess.run([str(ROOT / "tools/upy"), str(f), *map(str, args)], check=False, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, KEYPIN_NATIVE="0"))
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def new_doc(kp, f, *extra):
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "api.example.test", "--active", P[0],
           "--backup", P[1], *extra)
    assert r.rc == 0, r
    return r


def read(f):
    line1, line2, rest = f.read_bytes().split(b"\n")
    assert rest == b"" and line2 == b"sha256:" + hashlib.sha256(line1).hexdigest().encode()
    return json.loads(line1)


# ------------------------------------------------------------------------------------ signer


def test_signer_keygen_writes_a_private_key_and_prints_the_signer(kp, tmp_path):
    f = tmp_path / "signer.key"
    r = kp("signer", "keygen", "--out", f)
    assert r.rc == 0, r
    key = serialization.load_pem_private_key(f.read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert r.out == signer_of(key) + "\n"
    assert oct(os.stat(f).st_mode & 0o777) == "0o600"
    before = f.read_bytes()
    r = kp("signer", "keygen", "--out", f)
    assert r.rc == 1 and r.err.startswith("keypin: signer: refusing to overwrite") and f.read_bytes() == before


def test_signer_show_from_private_or_public_key(kp, tmp_path, pki):
    key = ed25519.Ed25519PrivateKey.generate()
    priv = pki.write("s.key", pki.pem(key))
    pub = pki.write("s.pub", pki.pub_pem(key))
    for f in (priv, pub):
        r = kp("signer", "show", "--key", f)
        assert r.rc == 0 and r.out.strip() == signer_of(key), r
    r = kp("signer", "show", "--key", pki.write("ec.key", pki.pem(pki.key("ec"))))
    assert r.rc == 1 and "no Ed25519 key" in r.err


def test_set_signer(kp, tmp_path):
    f = tmp_path / "pins.json"
    new_doc(kp, f)
    k1, k2 = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    r = kp("pinset", "set-signer", "--file", f, "--signer", signer_of(k1))
    assert r.rc == 0 and read(f)["signer"] == signer_of(k1) and read(f)["seq"] == 2, r
    r = kp("pinset", "set-signer", "--file", f, "--signer", signer_of(k2))
    assert r.rc == 1 and "pinset sign --new-signer" in r.err and read(f)["signer"] == signer_of(k1)
    assert kp("pinset", "set-signer", "--file", f, "--signer", signer_of(k2), "--force").rc == 0
    assert read(f)["signer"] == signer_of(k2)
    for bad in ("ed25519/AAAA", "ed25519/" + "A" * 42 + "==", "rsa/x"):
        r = kp("pinset", "set-signer", "--file", f, "--signer", bad, "--force")
        assert r.rc == 1, (bad, r)
    assert kp("pinset", "set-signer", "--file", f).rc == 1  # neither --signer nor --key


# the identity point, a point of order 8, y = p (non-canonical), and one of order 4
WEAK = ["0100000000000000000000000000000000000000000000000000000000000000",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000"]


def test_weak_signer_keys_refused_by_every_command(kp, tmp_path):
    # issue 12.5: with the identity as signer, an update "signed" by R = identity, S = 0 verifies
    f = tmp_path / "pins.json"
    new_doc(kp, f)
    before = f.read_bytes()
    keyf = tmp_path / "s.key"
    kp("signer", "keygen", "--out", keyf)
    for hx in WEAK:
        text = "ed25519/" + base64.b64encode(bytes.fromhex(hx)).decode()
        r = kp("pinset", "set-signer", "--file", f, "--signer", text)
        assert r.rc == 1 and "weak or invalid Ed25519 public key" in r.err, (hx, r)
        assert r.err.startswith("keypin: pinset: ")
        pem = tmp_path / "weak.pub"
        try:
            pub = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(hx))
        except ValueError:
            pub = None
        if pub is not None:  # a key file holding it: set-signer --key and signer show refuse it too
            pem.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
            r = kp("pinset", "set-signer", "--file", f, "--key", pem)
            assert r.rc == 1 and "weak" in r.err, (hx, r)
            r = kp("signer", "show", "--key", pem)
            assert r.rc == 1 and "weak" in r.err, (hx, r)
        assert f.read_bytes() == before
    assert kp("pinset", "set-signer", "--file", f, "--key", keyf).rc == 0
    ident = "ed25519/" + base64.b64encode(bytes.fromhex(WEAK[0])).decode()
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "1", "--fleet", "f1", "--new-signer", ident,
           "--out", tmp_path / "u.txt")
    assert r.rc == 1 and "weak" in r.err and not (tmp_path / "u.txt").exists(), r
    # a document that names a weak signer (edited by hand) is refused on read
    obj = json.loads(f.read_bytes().split(b"\n")[0])
    obj["signer"] = ident
    line = json.dumps(obj).encode()
    f.write_bytes(line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n")
    r = kp("pinset", "show", "--file", f)
    assert r.rc == 1 and "weak" in r.err


# ----------------------------------------------------------------------------------- sign


@pytest.fixture
def signed_setup(kp, tmp_path):
    f = tmp_path / "pins.json"
    new_doc(kp, f)
    keyf = tmp_path / "signer.key"
    signer = kp("signer", "keygen", "--out", keyf).out.strip()
    assert kp("pinset", "set-signer", "--file", f, "--key", keyf).rc == 0
    return f, keyf, signer


def test_sign_writes_the_two_line_format_and_records_the_version(kp, tmp_path, signed_setup):
    f, keyf, signer = signed_setup
    assert kp("pinset", "add-backup", "--file", f, "--set", "api", P[2]).rc == 0
    out = tmp_path / "update.txt"
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "3", "--out", out)
    assert r.rc == 1 and "give --fleet F" in r.err and not out.exists(), r  # no audience, no update
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "3", "--out", out, "--fleet", "f1",
           "--device", "dev-1", "--device", "dev-2")
    assert r.rc == 0, r
    assert r.out.startswith(f"wrote {f} (seq 4)\nsigned update version 3 (")
    assert "for fleet f1, devices dev-1, dev-2" in r.out
    line1, line2, rest = out.read_bytes().split(b"\n")
    assert rest == b"" and line2.startswith(b"ed25519:")
    body = json.loads(line1)
    # no seq (the device assigns it), no fleet of the device (the audience names who it is for)
    assert list(body) == ["format", "version", "signer", "audience", "retired", "sets"]
    assert body == {"format": "keypin-pins/2", "version": 3, "signer": signer,
                    "audience": {"fleet": "f1", "devices": ["dev-1", "dev-2"]}, "retired": [],
                    "sets": {"api": {"hosts": ["api.example.test"], "active": [P[0]], "backups": [[P[1]], [P[2]]],
                                     "policy": "leaf"}}}
    pub = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(signer[8:]))
    pub.verify(base64.b64decode(line2[8:]), line1)  # raises if it does not verify
    assert (tmp_path / "update.txt.version").read_text() == "3\n"
    doc = read(f)
    assert doc["version"] == 3 and doc["signer"] == signer
    # refusals: not newer, existing output, wrong key, no signer, a set without a backup
    assert kp("pinset", "set-fleet", "--file", f, "--fleet", "f1").rc == 0  # the default audience from now on
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "3", "--out", tmp_path / "u2.txt")
    assert r.rc == 1 and "not newer than the document's version 3" in r.err
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "4", "--out", out)
    assert r.rc == 1 and "exists" in r.err
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "4", "--out", tmp_path / "u6.txt",
           "--device", "a/b")
    assert r.rc == 1 and "bad --device" in r.err
    other = tmp_path / "other.key"
    kp("signer", "keygen", "--out", other)
    r = kp("pinset", "sign", "--file", f, "--key", other, "--version", "4", "--out", tmp_path / "u3.txt")
    assert r.rc == 1 and "would refuse" in r.err
    g = tmp_path / "nosigner.json"
    new_doc(kp, g)
    r = kp("pinset", "sign", "--file", g, "--key", keyf, "--version", "1", "--out", tmp_path / "u4.txt",
           "--fleet", "f1")
    assert r.rc == 1 and "no signer" in r.err and "set-signer" in r.err
    assert kp("pinset", "retire", "--file", f, "--set", "api", P[1]).rc == 0
    assert kp("pinset", "retire", "--file", f, "--set", "api", P[2], "--force").rc == 0
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "4", "--out", tmp_path / "u5.txt")
    assert r.rc == 1 and "no backup pin" in r.err
    assert not any((tmp_path / n).exists() for n in ("u2.txt", "u3.txt", "u4.txt", "u5.txt", "u6.txt"))
    assert read(f)["version"] == 3


def test_sign_with_a_new_signer(kp, tmp_path, signed_setup):
    f, keyf, _signer = signed_setup
    k2 = tmp_path / "signer2.key"
    s2 = kp("signer", "keygen", "--out", k2).out.strip()
    out = tmp_path / "update.txt"
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "1", "--new-signer", s2, "--out", out,
           "--fleet", "f1")
    assert r.rc == 0 and "new signer" in r.out, r
    body = json.loads(out.read_bytes().split(b"\n")[0])
    assert body["signer"] == s2 and read(f)["signer"] == s2
    # from now on the document wants the new key
    r = kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "2", "--out", tmp_path / "u2.txt",
           "--fleet", "f1")
    assert r.rc == 1 and "would refuse" in r.err
    assert kp("pinset", "sign", "--file", f, "--key", k2, "--version", "2", "--out", tmp_path / "u2.txt",
              "--fleet", "f1").rc == 0


DEV_CHECK = """
import json, sys
from keypin.store import PinStore
from keypin.update import check, Refused
st = PinStore(sys.argv[1])
out = []
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        out.append(check(st, data)["version"])
    except Refused as e:
        out.append(str(e))
print(json.dumps(out))
"""


def test_the_device_accepts_what_the_cli_signs(kp, tmp_path, signed_setup):
    f, keyf, _ = signed_setup
    assert kp("pinset", "set-fleet", "--file", f, "--fleet", "f1").rc == 0
    device = tmp_path / "device-pins.json"
    device.write_bytes(f.read_bytes())  # provisioned with the signer and the fleet
    out = tmp_path / "update.txt"
    assert kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "1", "--out", out).rc == 0
    bad = tmp_path / "bad.txt"
    data = bytearray(out.read_bytes())
    data[data.index(b"api.example.test")] = ord("b")
    bad.write_bytes(bytes(data))
    other = tmp_path / "other.txt"
    assert kp("pinset", "sign", "--file", f, "--key", keyf, "--version", "2", "--out", other,
              "--fleet", "f2").rc == 0
    got = upy(tmp_path, DEV_CHECK, device, out, bad, other)
    assert got[0] == 1 and "bad signature" in got[1], got
    assert got[2] == "not for this device: fleet 'f2' (device is in 'f1')", got


DEV_VERIFY = """
import json, sys
from binascii import unhexlify
from keypin.ed25519 import verify
with open(sys.argv[1]) as f:
    cases = json.load(f)
print(json.dumps([verify(unhexlify(pk), unhexlify(m), unhexlify(s)) for pk, m, s in cases]))
"""


def test_device_ed25519_against_cryptography_signatures(tmp_path):
    rnd = random.Random(8032)
    cases, want = [], []
    for i in range(24):
        key = ed25519.Ed25519PrivateKey.generate()
        pk = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        msg = rnd.randbytes(rnd.choice([0, 1, 31, 64, 111, 112, 127, 128, 129, 500, 1500]) + i % 3)
        sig = key.sign(msg)
        cases.append((pk, msg, sig))
        want.append(True)
        k = rnd.randrange(64)  # one flipped bit anywhere in the signature
        bad = bytearray(sig)
        bad[k] ^= 1 << rnd.randrange(8)
        cases.append((pk, msg, bytes(bad)))
        want.append(False)
        cases.append((pk, msg + b"x", sig))
        want.append(False)
    f = tmp_path / "cases.json"
    f.write_text(json.dumps([[a.hex(), b.hex(), c.hex()] for a, b, c in cases]))
    assert upy(tmp_path, DEV_VERIFY, f) == want


# --------------------------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    from helpers.pki import CA, new_key
    d = tmp_path_factory.mktemp("reports-cli")
    crt, key = CA("Reports CLI").write_chain(d, "mq", new_key(), "device.example.test")
    b = Mosquitto(d, str(crt), str(key), users={"ops": "pw"})
    yield b
    b.stop()


BATCH = {"device": "dev-1", "dropped": 2, "reports": [
    {"t": 1795900000, "host": "api.example.test", "port": 443, "set": "api", "reason": "unknown key",
     "chain": [[1, P[5]], [0, P[6]]], "pins": {"active": P[0], "backups": [P[1], P[2]]},
     "fw": "micropython 1.29.0, keypin 0.1.0"},
    {"t": None, "host": "api.example.test", "port": 8883, "set": "api", "reason": "retired key",
     "chain": [[0, P[3]]], "fw": "micropython 1.29.0, keypin 0.1.0"}]}


def test_reports_prints_each_batch_as_a_block(kp, broker):
    broker.publish("keypin/dev-1/reports", json.dumps(BATCH), retain=True)
    broker.publish("keypin/dev-2/reports", b"not json", retain=True)
    try:
        r = kp("reports", "--host", "127.0.0.1", "--port", broker.plain_port, "--user", "ops", "--password", "pw",
               "--count", "2", "--timeout", "20")
    finally:
        broker.publish("keypin/dev-1/reports", b"", retain=True)
        broker.publish("keypin/dev-2/reports", b"", retain=True)
    assert r.rc == 0, r
    blocks = r.out.split("keypin/")[1:]
    one = next(b for b in blocks if b.startswith("dev-1"))
    assert one.splitlines() == [
        ("dev-1/reports: 2 pin failure reports from dev-1, 2 more dropped (ring full)  "
        "[retained: sent before you subscribed]"),
        "  report 1: 2026-11-28 21:06:40Z  api.example.test:443  set api: unknown key",
        f"    presented: depth 1: {P[5]}",
        f"               depth 0: {P[6]}",
        f"    pinned:    active {P[0]}",
        f"               backup 1 {P[1]}",
        f"               backup 2 {P[2]}",
        "    firmware:  micropython 1.29.0, keypin 0.1.0",
        "  report 2: time unknown  api.example.test:8883  set api: retired key",
        f"    presented: depth 0: {P[3]}",
        "    firmware:  micropython 1.29.0, keypin 0.1.0"]
    assert any(b.startswith("dev-2/reports: not a keypin report batch") for b in blocks), r.out


def test_reports_live_message_and_errors(kp, broker):
    import threading
    import time

    def later():
        time.sleep(1.0)
        broker.publish("keypin/dev-3/reports", json.dumps({"device": "dev-3", "dropped": 0, "reports": []}))
    t = threading.Thread(target=later)
    t.start()
    r = kp("reports", "--host", "127.0.0.1", "--port", broker.plain_port, "--user", "ops", "--password", "pw",
           "--count", "1", "--timeout", "20")
    t.join()
    assert r.rc == 0 and r.out.startswith("keypin/dev-3/reports: 0 pin failure reports from dev-3\n"), r
    assert "retained" not in r.out
    r = kp("reports", "--host", "127.0.0.1", "--port", broker.plain_port, "--user", "ops", "--password", "bad",
           "--timeout", "1")
    assert r.rc == 1 and r.err.startswith("keypin: reports: ") and "refused the connection" in r.err, r
    r = kp("reports", "--host", "127.0.0.1", "--port", free_port(), "--timeout", "1")
    assert r.rc == 1 and "cannot connect" in r.err, r
    r = kp("reports", "--host", "127.0.0.1", "--port", broker.plain_port, "--user", "ops", "--password", "pw",
           "--count", "1", "--timeout", "1")
    assert r.rc == 0 and r.out == "" and "0 of 1 report message(s) within 1 s" in r.err, r
