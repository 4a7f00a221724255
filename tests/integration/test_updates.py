"""Signed pin-set updates end to end: the device app (a `keypin image` in the Unix port) takes
updates made by `keypin pinset sign` from real nginx (HTTPS poll: <url>.version, then the update)
and from a retained message on real mosquitto; it refuses a bad signature, a replayed version, a
retired pin brought back and a set left without a backup, recording why; the signer rotates."""
import base64
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers.pki import CA, new_key, pin, pin_document2, read_document
from helpers.realservers import Mosquitto, Nginx

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv/bin/keypin")
HOST = "device.example.test"
DEV = "dev-7"
FLEET = "f1"
PINS_TOPIC = f"keypin/fleet/{FLEET}/pins"


def signer_of(key):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519/" + base64.b64encode(raw).decode()


def write_key(path, key):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def raw_update(key, version, sets, signer=None, fleet=FLEET, retired=()):
    """An update signed by `key` without the CLI's checks (for the updates the CLI refuses to make)."""
    body = {"format": "keypin-pins/2", "version": version, "signer": signer or signer_of(key),
            "audience": {"fleet": fleet}, "retired": list(retired), "sets": sets}
    line = json.dumps(body).encode()
    return line + b"\ned25519:" + base64.b64encode(key.sign(line)) + b"\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("updates")
    ca = CA("Updates")
    keys = {n: new_key() for n in ("active", "b0", "b1", "b2", "b3")}
    signers = {n: ed25519.Ed25519PrivateKey.generate() for n in ("s1", "s2", "evil")}
    return {"dir": d, "files": {"active": ca.write_chain(d, "active", keys["active"], HOST)},
            "pins": {n: pin(k) for n, k in keys.items()}, "signers": signers,
            "keyfiles": {n: write_key(d / f"{n}.key", k) for n, k in signers.items()}}


def fleet_set(p, active="active", backups=("b0", "b1"), hosts=(HOST,)):
    return {"hosts": list(hosts), "active": [p[active]], "backups": [[p[b]] for b in backups], "policy": "leaf"}


@pytest.fixture(scope="module")
def image(pki):
    d = pki["dir"]
    (d / "pins-src.json").write_bytes(pin_document2({"fleet": fleet_set(pki["pins"])},
                                                    signer=signer_of(pki["signers"]["s1"]), fleet=FLEET))
    (d / "config-src.json").write_text(json.dumps({"device_id": DEV}))
    out = d / "image"
    r = subprocess.run([KEYPIN, "image", "--out", str(out), "--arch", "x64", "--config", str(d / "config-src.json"),
                        "--pins", str(d / "pins-src.json")], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "lib/keypin/update.mpy").exists() and (out / "lib/keypin/ed25519.mpy").exists()
    return out


@pytest.fixture(scope="module")
def servers(pki):
    crt, key = pki["files"]["active"]
    ng = Nginx(pki["dir"], str(crt), str(key))
    mq = Mosquitto(pki["dir"], str(crt), str(key), users={"dev": "secret"})
    yield ng, mq
    ng.stop()
    mq.stop()


def device(image, tmp_path, servers, https=True, mqtt_update=True, name="update.txt"):
    ng, mq = servers
    d = tmp_path / "device"
    shutil.copytree(image, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update({"mqtt": {"host": HOST, "port": mq.port, "user": "dev", "password": "secret", "tries": 2},
                "hosts": {HOST: "127.0.0.1"}, "pins": "pins.json", "period": 1, "update": {}})
    if https:
        cfg["update"]["url"] = f"https://{HOST}:{ng.port}/files/{name}"
    if mqtt_update:
        cfg["update"]["fleet"] = FLEET
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def run_cycle(d, cycles=1):
    """main.run(cycles) in the Unix port -> (good cycles, output). A retained MQTT message arrives
    some time after the connection: MQTT cases run two cycles (the app polls in between)."""
    env = dict(os.environ, MICROPYPATH=f".frozen:{d}/lib:{ROOT}/build/umqtt-pypi")
    p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c",
                        f"import main\nprint('GOOD', main.run(cycles={cycles}))"],
                       check=False, cwd=d, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return int(p.stdout.strip().splitlines()[-1].split()[-1]), p.stdout


def serve(ng, name, data, version):
    (ng.root / name).write_bytes(data)
    (ng.root / (name + ".version")).write_text(f"{version}\n")


def retain(mq, data):
    mq.publish(PINS_TOPIC, data, retain=True)


def state(d):
    return json.loads((d / "keypin-state.json").read_text())


def sign_with_cli(pki, tmp_path, version, sets, signer="s1", new_signer=None, doc_version=0):
    """keypin pinset set-signer + pinset sign, as an operator does."""
    src = tmp_path / f"ops-{version}.json"
    src.write_bytes(pin_document2(sets, version=doc_version, fleet=FLEET))
    r = subprocess.run([KEYPIN, "pinset", "set-signer", "--file", str(src), "--key", str(pki["keyfiles"][signer])],
                       check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"update-{version}.txt"
    argv = [KEYPIN, "pinset", "sign", "--file", str(src), "--key", str(pki["keyfiles"][signer]),
            "--version", str(version), "--out", str(out)]
    if new_signer:
        argv += ["--new-signer", str(pki["keyfiles"][new_signer])]
    r = subprocess.run(argv, check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"update-{version}.txt.version").read_text() == f"{version}\n"
    return out.read_bytes()


def test_update_over_https_applied_then_only_the_version_is_polled(image, tmp_path, servers, pki):
    ng, mq = servers
    p = pki["pins"]
    data = sign_with_cli(pki, tmp_path, 1, {"fleet": fleet_set(p, backups=("b0", "b1", "b2"))})
    serve(ng, "https-1.txt", data, 1)
    d = device(image, tmp_path, servers, mqtt_update=False, name="https-1.txt")
    sub = mq.subscriber(f"keypin/{DEV}/status", count=1, timeout=30)
    good, out = run_cycle(d)
    assert good == 1, out
    assert "update: applied version 1 via https" in out
    doc = read_document(d / "pins.json")
    assert doc["version"] == 1 and doc["sets"]["fleet"]["backups"] == [[p["b0"]], [p["b1"]], [p["b2"]]]
    assert doc["signer"] == signer_of(pki["signers"]["s1"])
    st = json.loads(sub.result()[0][1])
    assert st["version"] == 1 and st["last_update"]["ok"] is True and st["last_update"]["via"] == "https"
    assert state(d)["last"]["version"] == 1
    reqs = [r["request"] for r in ng.requests() if "https-1.txt" in r.get("request", "")]
    assert reqs == ["GET /files/https-1.txt.version HTTP/1.1", "GET /files/https-1.txt HTTP/1.1"], reqs
    # next cycle: the small version check only; no download, no flash write
    before = {n: (d / n).read_bytes() for n in ("pins.json", "keypin-state.json")}
    good, out = run_cycle(d)
    assert good == 1 and "update:" not in out, out
    reqs = [r["request"] for r in ng.requests() if "https-1.txt" in r.get("request", "")]
    assert reqs[2:] == ["GET /files/https-1.txt.version HTTP/1.1"], reqs
    assert {n: (d / n).read_bytes() for n in before} == before


def test_update_over_mqtt_retained_applied_once(image, tmp_path, servers, pki):
    _, mq = servers
    p = pki["pins"]
    retain(mq, sign_with_cli(pki, tmp_path, 3, {"fleet": fleet_set(p, backups=("b0", "b2"))}))
    d = device(image, tmp_path, servers, https=False)
    good, out = run_cycle(d, 2)
    assert good == 2, out
    assert out.count("update: applied version 3 via mqtt") == 1, out
    doc = read_document(d / "pins.json")
    assert doc["version"] == 3 and doc["sets"]["fleet"]["backups"] == [[p["b0"]], [p["b2"]]]
    # the retained message comes again at every connect: nothing happens, nothing is written
    before = (d / "pins.json").read_bytes(), (d / "keypin-state.json").read_bytes()
    good, out = run_cycle(d, 2)
    assert good == 2 and "update:" not in out, out
    assert ((d / "pins.json").read_bytes(), (d / "keypin-state.json").read_bytes()) == before
    retain(mq, b"")  # clear the retained update for the other tests


REFUSALS = ["bad-signature", "replay", "retired", "no-backup", "other-fleet", "stranded-host", "renamed-retired"]


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_updates_record_why(image, tmp_path, servers, pki, case):
    ng, mq = servers
    p = pki["pins"]
    s1, evil = pki["signers"]["s1"], pki["signers"]["evil"]
    via = "mqtt" if case in ("bad-signature", "retired", "other-fleet") else "https"
    name = f"refuse-{case}.txt"
    d = device(image, tmp_path, servers, https=via == "https", mqtt_update=via == "mqtt", name=name)
    if case == "bad-signature":
        data, want = raw_update(evil, 5, {"fleet": fleet_set(p)}, signer=signer_of(s1)), "bad signature"
    elif case == "replay":
        # version 2 is applied; then the server offers the older version 1 again
        serve(ng, name, raw_update(s1, 2, {"fleet": fleet_set(p, backups=("b0", "b1", "b2"))}), 2)
        good, out = run_cycle(d)
        assert "update: applied version 2 via https" in out, out
        data, want = raw_update(s1, 1, {"fleet": fleet_set(p, backups=("b3",))}), "not newer than the device's 2"
    elif case == "retired":
        # backup b0 was retired on the device (ks.retire); an update brings it back
        doc = read_document(d / "pins.json")
        doc["sets"]["fleet"] = fleet_set(p, backups=("b1",))
        (d / "pins.json").write_bytes(pin_document2(doc["sets"], seq=5, signer=doc["signer"], fleet=FLEET,
                                                    retired=[p["b0"]]))
        data, want = raw_update(s1, 1, {"fleet": fleet_set(p, backups=("b1", "b0"))}), "retired"
    elif case == "other-fleet":
        # issue 12.3: fleet A's genuine update (same signer) on this fleet's topic
        data, want = raw_update(s1, 4, {"a": fleet_set(p, backups=("b2",), hosts=("a.example.test",))},
                                fleet="plant-a"), "not for this device: fleet 'plant-a'"
    elif case == "stranded-host":
        # a genuine update for this fleet that leaves the device's MQTT/update host in no set
        data, want = raw_update(s1, 4, {"other": fleet_set(p, backups=("b2",), hosts=("other.example.test",))}), \
            f"host '{HOST}' would be in no pin set"
    elif case == "renamed-retired":
        # issue 12.4: version 2 renames the set and the operator retires b0; version 3 brings b0 back
        serve(ng, name, raw_update(s1, 2, {"renamed": fleet_set(p, backups=("b1", "b2"))}, retired=[p["b0"]]), 2)
        good, out = run_cycle(d)
        assert "update: applied version 2 via https" in out, out
        assert read_document(d / "pins.json")["retired"] == [p["b0"]]
        data, want = raw_update(s1, 3, {"fleet": fleet_set(p, backups=("b0", "b1"))}), "was retired"
    else:
        data, want = raw_update(s1, 1, {"fleet": {**fleet_set(p, backups=()), "allow_no_backup": True}}), "no backup"
    before = (d / "pins.json").read_bytes()
    if via == "mqtt":
        retain(mq, data)
    else:
        # the version file says "newer" so the update is fetched; the signed body decides
        serve(ng, name, data, 9)
    sub = mq.subscriber(f"keypin/{DEV}/status", count=2, timeout=30)
    try:
        good, out = run_cycle(d, 2 if via == "mqtt" else 1)
    finally:
        if via == "mqtt":
            retain(mq, b"")
    assert good == (2 if via == "mqtt" else 1), out  # a refused update does not stop the device
    assert "update: refused version" in out and want in out, out
    assert (d / "pins.json").read_bytes() == before
    last = state(d)["last"]
    assert last["ok"] is False and want in last["reason"] and last["via"] == via, last
    msgs = [json.loads(m) for _, m in sub.result()]
    if via == "https":  # checked before the MQTT connection: in this cycle's status already
        assert msgs[-1]["last_update"]["reason"] == last["reason"]


def test_signer_rotation(image, tmp_path, servers, pki):
    ng, _ = servers
    p = pki["pins"]
    sets = {"fleet": fleet_set(p)}
    d = device(image, tmp_path, servers, mqtt_update=False, name="rot.txt")
    # version 1, signed by s1, names s2 as the signer from now on
    serve(ng, "rot.txt", sign_with_cli(pki, tmp_path, 1, sets, new_signer="s2"), 1)
    good, out = run_cycle(d)
    assert good == 1
    assert "update: applied version 1 via https" in out and "signer is now " + signer_of(pki["signers"]["s2"]) in out
    assert read_document(d / "pins.json")["signer"] == signer_of(pki["signers"]["s2"])
    # s1 is no longer trusted
    serve(ng, "rot.txt", raw_update(pki["signers"]["s1"], 2, {"fleet": fleet_set(p, backups=("b0", "b2"))}), 2)
    good, out = run_cycle(d)
    assert good == 1 and "bad signature" in out and read_document(d / "pins.json")["version"] == 1
    # s2 is
    serve(ng, "rot.txt", sign_with_cli(pki, tmp_path, 2, {"fleet": fleet_set(p, backups=("b0", "b2"))},
                                       signer="s2", doc_version=1), 2)
    good, out = run_cycle(d)
    assert good == 1 and "update: applied version 2 via https" in out, out
    assert read_document(d / "pins.json")["sets"]["fleet"]["backups"] == [[p["b0"]], [p["b2"]]]


# ------------------------------------------------------- issue 18: a staged rolling key change


def test_rolling_key_change_and_a_compromise_during_the_roll(tmp_path, pki):
    """Nodes of one host name move from key OLD to key NEW: step 1 adds NEW to the keys in service
    by a signed update, step 2 moves the nodes, step 3 retires OLD by a second update (keypin pinset
    add-active / retire --force / sign). Devices connect to every node throughout: none refuses a
    node that serves a key in service, none rotates, none trusts OLD after step 3. A compromise
    during the roll (the nodes move to backup group 1) rotates and retires the whole group."""
    ca = CA("Rolling")
    keys = {n: new_key() for n in ("old", "new", "backup")}
    pins = {n: pin(k) for n, k in keys.items()}
    nodes = {}
    try:
        for n, k in keys.items():
            d = tmp_path / f"node-{n}"
            d.mkdir()
            crt, key = ca.write_chain(d, n, k, HOST)
            nodes[n] = Nginx(d, str(crt), str(key))
        ports = {n: ng.port for n, ng in nodes.items()}
        ops = tmp_path / "pins.json"
        keyf = pki["keyfiles"]["s1"]

        def kp(*argv):
            r = subprocess.run([KEYPIN, *map(str, argv)], check=False, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            return r

        kp("pinset", "new", "--file", ops, "--name", "api", "--host", HOST, "--active", pins["old"],
           "--backup", pins["backup"], "--fleet", FLEET)
        kp("pinset", "set-signer", "--file", ops, "--key", keyf)
        device = tmp_path / "device-pins.json"
        device.write_bytes(ops.read_bytes())  # provisioned
        kp("pinset", "add-active", "--file", ops, "--set", "api", pins["new"])
        kp("pinset", "sign", "--file", ops, "--key", keyf, "--version", "1", "--out", tmp_path / "u1.txt")
        kp("pinset", "retire", "--file", ops, "--set", "api", "--force", pins["old"])
        kp("pinset", "sign", "--file", ops, "--key", keyf, "--version", "2", "--out", tmp_path / "u2.txt")

        def run(store, steps):
            f = tmp_path / "steps.json"
            f.write_text(json.dumps(steps))
            p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_rolling.py"), str(store),
                                str(f)], check=False, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stdout + p.stderr
            return json.loads(p.stdout.strip().splitlines()[-1])

        o, n, b = ports["old"], ports["new"], ports["backup"]
        got = run(device, [["get", o], ["get", n],                          # before step 1: NEW is unknown
                           ["offer", str(tmp_path / "u1.txt")],              # step 1
                           ["get", o], ["get", n], ["get", o], ["get", n],  # step 2: nodes on either key
                           ["offer", str(tmp_path / "u2.txt")],              # step 3
                           ["get", n], ["get", o]])
        seen = [x[:4] for x in got]
        assert seen == [["get", o, 200, "active"], ["get", n, "refused", "unknown key"],
                        ["offer", "applied", "applied", got[2][3]],
                        ["get", o, 200, "active"], ["get", n, 200, "active"], ["get", o, 200, "active"],
                        ["get", n, 200, "active"],
                        ["offer", "applied", "applied", got[7][3]],
                        ["get", n, 200, "active"], ["get", o, "refused", "retired key"]], got
        assert got[3][-1]["active"] == [pins["old"], pins["new"]] and got[3][-1]["retired"] == []
        assert got[-1][-1] == {"active": [pins["new"]], "backups": [[pins["backup"]]], "retired": [pins["old"]]}
        # a compromise during the roll: the nodes move to backup group 1
        device2 = tmp_path / "device2-pins.json"
        ops.write_bytes(b"")
        ops.unlink()
        kp("pinset", "new", "--file", ops, "--name", "api", "--host", HOST, "--active", pins["old"],
           "--backup", pins["backup"], "--fleet", FLEET)
        kp("pinset", "set-signer", "--file", ops, "--key", keyf)
        device2.write_bytes(ops.read_bytes())
        got = run(device2, [["offer", str(tmp_path / "u1.txt")], ["get", n], ["get", b], ["get", o], ["get", n],
                            ["get", b]])
        assert [x[:4] for x in got[1:]] == [["get", n, 200, "active"], ["get", b, 200, "rotated"],
                                            ["get", o, "refused", "retired key"], ["get", n, "refused", "retired key"],
                                            ["get", b, 200, "active"]], got
        assert got[-1][-1] == {"active": [pins["backup"]], "backups": [], "retired": [pins["old"], pins["new"]]}
    finally:
        for ng in nodes.values():
            ng.stop()


def test_a_bad_copy_of_the_pin_document_is_logged_and_reported(image, tmp_path, servers, pki):
    """Issue 12.1: the device falls back to its second current copy, logs it, repairs, keeps working,
    and the fallback reaches the operator as a pin-failure report over pinned MQTT."""
    _, mq = servers
    d = device(image, tmp_path, servers, https=False, mqtt_update=False)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["update"]  # no update path: MQTT status and reports only
    (d / "config.json").write_text(json.dumps(cfg))
    good, out = run_cycle(d)
    assert good == 1, out
    assert (d / "pins.json.2").read_bytes() == (d / "pins.json").read_bytes()  # the second copy
    b = bytearray((d / "pins.json").read_bytes())
    b[12] ^= 1
    (d / "pins.json").write_bytes(bytes(b))
    sub = mq.subscriber(f"keypin/{DEV}/reports", count=1, timeout=30)
    try:
        good, out = run_cycle(d)
        assert good == 1, out
        assert "keypin: store: pins.json: integrity check failed; using pins.json.2 (seq " in out, out
        msg = json.loads(sub.result()[0][1])
    finally:
        mq.publish(f"keypin/{DEV}/reports", b"", retain=True)
    assert [r["reason"] for r in msg["reports"]] == [l.split("keypin: ", 1)[1] for l in out.splitlines()
                                                     if l.startswith("keypin: store: ")], (msg, out)
    assert (d / "pins.json").read_bytes() == (d / "pins.json.2").read_bytes()  # repaired


def test_ca_anchors_arrive_change_and_go_by_signed_update(tmp_path, pki):
    """Issue 15.4: a signed update adds a set's CA certificate (the device then connects in CA+pin
    mode: CERT_REQUIRED with it as the trust anchor), replaces it with another CA's (the same server
    now fails CA verification: the anchor is really used), and removes it (pin-only again)."""
    from cryptography.hazmat.primitives import serialization as ser
    ca, other = CA("Anchor"), CA("Other")
    k = new_key()
    d = tmp_path / "node"
    d.mkdir()
    crt, key = ca.write_chain(d, "node", k, HOST)
    ng = Nginx(d, str(crt), str(key))
    try:
        def b64(c):
            return base64.b64encode(c.public_bytes(ser.Encoding.DER)).decode()

        s1 = pki["signers"]["s1"]
        base = {"hosts": [HOST], "active": [pin(k)], "backups": [[pki["pins"]["b0"]]], "policy": "leaf"}
        u = [raw_update(s1, 1, {"api": {**base, "ca": [b64(ca.root)]}}),
             raw_update(s1, 2, {"api": {**base, "ca": [b64(other.root)]}}),
             raw_update(s1, 3, {"api": base})]
        for i, data in enumerate(u, 1):
            (tmp_path / f"u{i}.txt").write_bytes(data)
        store = tmp_path / "pins.json"
        store.write_bytes(pin_document2({"api": base}, signer=signer_of(s1), fleet=FLEET))
        steps = [["get", ng.port]]
        for i in (1, 2, 3):
            steps += [["offer", str(tmp_path / f"u{i}.txt")], ["get", ng.port]]
        f = tmp_path / "steps.json"
        f.write_text(json.dumps(steps))
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_rolling.py"), str(store), str(f)],
                           check=False, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        got = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        ng.stop()
    assert [x[:3] for x in got] == [["get", ng.port, 200], ["offer", "applied", "applied"], ["get", ng.port, 200],
                                    ["offer", "applied", "applied"], ["get", ng.port, "error"],
                                    ["offer", "applied", "applied"], ["get", ng.port, 200]], got
    assert "CertError" in got[4][3] and "verification failed" in got[4][3], got


def test_a_device_migrated_from_v1_adopts_its_configured_fleet_and_takes_updates(image, tmp_path, servers, pki):
    # H8 "M4": a v1 store migrates with fleet null, which refuses every signed update (for good:
    # no update may set the fleet). The app adopts config update.fleet into a null store fleet,
    # once, logged: the fleet's retained update over real mosquitto is then applied.
    from helpers.pki import pin_document
    _, mq = servers
    p = pki["pins"]
    d = device(image, tmp_path, servers, https=False)
    v1 = {"fleet": {"hosts": [HOST], "active": p["active"], "backups": [p["b0"]], "retired": [], "policy": "leaf"}}
    for x in ("pins.json.2", "pins.json.new", "pins.json.2.new"):
        (d / x).unlink(missing_ok=True)
    (d / "pins.json").write_bytes(pin_document(v1, seq=3, version=2, signer=signer_of(pki["signers"]["s1"])))
    retain(mq, sign_with_cli(pki, tmp_path, 40, {"fleet": fleet_set(p, backups=("b0", "b3"))}))
    good, out = run_cycle(d, 2)
    assert good == 2, out
    assert out.count(f"keypin: store: fleet None -> '{FLEET}'") == 1, out
    assert "update: applied version 40 via mqtt" in out, out
    doc = read_document(d / "pins.json")
    assert doc["fleet"] == FLEET and doc["version"] == 40 and doc["sets"]["fleet"]["backups"] == [[p["b0"]], [p["b3"]]]
    good, out = run_cycle(d, 1)  # adopted once: no second write of the fleet
    assert "fleet None" not in out, out
