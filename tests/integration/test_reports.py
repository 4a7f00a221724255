"""Pin-failure reports end to end: the device app (a `keypin image` in the Unix port) records
reports while real nginx and mosquitto present an attacker's key (same CA), publishes them over
the next pinned MQTT connection to the real servers and clears them; `keypin reports` prints
them. A flood of MITM handshakes writes flash at most as often as the rate limit allows."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from helpers.pki import CA, new_key, pin, pin_document2, read_document
from helpers.realservers import Mosquitto, Nginx

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv/bin/keypin")
HOST = "device.example.test"
DEV = "dev-r"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    ca = CA("Reports")
    keys = {n: new_key() for n in ("active", "b0", "mitm")}
    return {"dir": d, "files": {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()},
            "pins": {n: pin(k) for n, k in keys.items()}}


def pins_doc(p):
    # v2 (a v1 document is stored as v2 at its first load: the flood test checks the store is never written)
    return pin_document2({"fleet": {"hosts": [HOST], "active": [p["active"]], "backups": [[p["b0"]]], "policy": "leaf"}})


@pytest.fixture(scope="module")
def image(pki):
    d = pki["dir"]
    (d / "pins-src.json").write_bytes(pins_doc(pki["pins"]))
    (d / "config-src.json").write_text(json.dumps({"device_id": DEV}))
    out = d / "image"
    r = subprocess.run([KEYPIN, "image", "--out", str(out), "--arch", "x64", "--config", str(d / "config-src.json"),
                        "--pins", str(d / "pins-src.json")], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def servers(tmp_path, pki):
    crt, key = pki["files"]["mitm"]
    ng = Nginx(tmp_path, str(crt), str(key))
    mq = Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"})
    yield ng, mq
    ng.stop()
    mq.stop()


def device(image, tmp_path, ng, mq):
    d = tmp_path / "device"
    shutil.copytree(image, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update({"mqtt": {"host": HOST, "port": mq.port, "user": "dev", "password": "secret", "tries": 2},
                "https": {"url": f"https://{HOST}:{ng.port}/checkin", "interval": 300},
                "hosts": {HOST: "127.0.0.1"}, "pins": "pins.json", "period": 1,
                "reports": {"size": 8, "min_interval": 300, "max_writes": 4}})
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def run_cycle(d):
    env = dict(os.environ, MICROPYPATH=f".frozen:{d}/lib:{ROOT}/build/umqtt-pypi")
    p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c", "import main\nprint('GOOD', main.run(cycles=1))"],
                       check=False, cwd=d, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return int(p.stdout.strip().splitlines()[-1].split()[-1]), p.stdout


def check_report(r, pki, port):
    p = pki["pins"]
    assert r["host"] == HOST and r["port"] == port and r["set"] == "fleet" and r["reason"] == "unknown key"
    assert [0, p["mitm"]] in r["chain"]  # the presented chain's pins, leaf included
    assert r["pins"] == {"active": [p["active"]], "backups": [[p["b0"]]]}  # the configured pins (document v2)
    assert r["fw"].startswith("micropython ") and "keypin " in r["fw"]
    assert isinstance(r["t"], int) and r["t"] > 1700000000  # the Unix port's clock is set


def test_reports_recorded_under_mitm_then_published_and_cleared(image, tmp_path, servers, pki):
    ng, mq = servers
    d = device(image, tmp_path, ng, mq)
    good, out = run_cycle(d)
    assert good == 0 and "PinMismatch" in out, out
    ring = json.loads((d / "keypin-reports.json").read_text())
    # the first report reached flash at once; the next ones (same boot, < min_interval) stayed in RAM
    assert len(ring["reports"]) == 1 and ring["dropped"] == 0, ring
    check_report(ring["reports"][0], pki, mq.port)
    assert not any(n.startswith("keypin-reports.json.") for n in os.listdir(d))  # no temp file left
    # a second boot under attack: one more flash write, appended to the ring
    good, out = run_cycle(d)
    assert good == 0
    ring = json.loads((d / "keypin-reports.json").read_text())
    assert len(ring["reports"]) == 2
    ports = {r["port"] for r in ring["reports"]}
    assert ports <= {mq.port, ng.port}
    # the real key is back: the reports go out over the pinned MQTT connection, then are cleared
    crt, key = pki["files"]["active"]
    ng.restart(str(crt), str(key))
    mq.restart(str(crt), str(key))
    sub = mq.subscriber(f"keypin/{DEV}/reports", count=1, timeout=30)
    before = (d / "pins.json").read_bytes()
    good, out = run_cycle(d)
    assert good == 1, out
    assert f"mqtt: 2 pin-failure report(s) published to keypin/{DEV}/reports and cleared" in out, out
    ((topic, payload),) = sub.result()
    assert topic == f"keypin/{DEV}/reports"
    msg = json.loads(payload)
    assert msg["device"] == DEV and msg["dropped"] == 0 and len(msg["reports"]) == 2
    for r in msg["reports"]:
        check_report(r, pki, r["port"])
    assert not (d / "keypin-reports.json").exists()
    assert (d / "pins.json").read_bytes() == before
    # the next cycle has nothing to report and writes nothing
    good, out = run_cycle(d)
    assert good == 1 and "pin-failure report" not in out, out
    assert not (d / "keypin-reports.json").exists()
    # the operator's view: keypin reports (retained message, TLS port without verification)
    r = subprocess.run([KEYPIN, "reports", "--host", "127.0.0.1", "--port", str(mq.port), "--insecure",
                        "--user", "dev", "--password", "secret", "--count", "1", "--timeout", "20"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith(f"keypin/{DEV}/reports: 2 pin failure reports from {DEV}  [retained"), text
    assert f"{HOST}:{mq.port}  set fleet: unknown key" in text or f"{HOST}:{ng.port}  set fleet: unknown key" in text
    assert f"depth 0: {pki['pins']['mitm']}" in text and f"active {pki['pins']['active']}" in text
    assert f"backup 1 {pki['pins']['b0']}" in text and "firmware:  micropython" in text


def test_flood_of_mitm_handshakes_stays_within_the_flash_rate_limit(tmp_path, servers, pki):
    ng, _ = servers
    store = tmp_path / "pins.json"
    store.write_bytes(pins_doc(pki["pins"]))
    before = store.read_bytes()
    n, min_interval, max_writes = 400, 1, 3
    ring_path = tmp_path / "keypin-reports.json"
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_reports.py"), str(store),
                        str(ng.port), str(n), str(min_interval), str(max_writes), str(ring_path)],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["refused"] == n
    # at most one write per min_interval, and never more than max_writes in one boot
    bound = min(max_writes, 1 + int(r["elapsed"] // min_interval))
    assert 1 <= r["writes"] <= bound, r
    assert r["ops"] == 2 * r["writes"]  # each write: the temp file, then one rename
    assert r["items"] == 8 and r["dropped"] == n - 8, r  # bounded ring; the rest counted
    ring = json.loads(ring_path.read_text())
    assert len(ring["reports"]) <= 8
    assert store.read_bytes() == before  # the pin store was never written
    assert not any("/checkin" in q.get("request", "") for q in ng.requests())  # nothing sent to the attacker
    print(f"flood: {n} MITM handshakes in {r['elapsed']:.1f} s -> {r['writes']} flash writes (bound {bound})")


def test_reports_off_when_configured_off(image, tmp_path, servers):
    ng, mq = servers
    d = device(image, tmp_path, ng, mq)
    cfg = json.loads((d / "config.json").read_text())
    cfg["reports"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    good, out = run_cycle(d)
    assert good == 0 and "PinMismatch" in out
    assert not (d / "keypin-reports.json").exists()
    assert read_document(d / "pins.json")["seq"] == 1
