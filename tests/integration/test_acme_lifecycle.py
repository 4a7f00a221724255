"""The Let's Encrypt lifecycle end to end (pebble + certbot + nginx + mosquitto + the device in
the Unix port), and the certbot renewal guard `keypin certbot-hook`."""
import base64
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from helpers.pki import new_key, pin_document
from helpers.realservers import Pebble, certbot

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "lab" / "demo"))

import demo

KEYPIN = str(ROOT / ".venv/bin/keypin")


def test_lifecycle_story(tmp_path):
    lines = []
    st = demo.Story(tmp_path, out=lines.append)
    steps = st.run()
    text = "\n".join(lines)
    assert [r["title"] for r in steps] == ["first connection", "renewal 1", "renewal 2", "CA changed root + renewal",
                                           "server moved to backup 1", "device restart",
                                           "stolen old key, fresh CA cert", "software update (A/B, pinned)"], text
    for r in steps:
        assert r["ok"], f"step {r['n']} {r['title']}: {r['saw']}\n{r['log']}"
    # renewals and the root change: connected, no rotation, no flash write
    for r in steps[:4]:
        assert r["connected"] and not r["rotated"] and not r["wrote"] and r["active"] == st.pins["primary"]
    comp = steps[4]
    assert comp["connected"] and comp["rotated"] and comp["wrote"]
    assert comp["active"] == st.pins["backup1"] and st.pins["primary"] in comp["retired"]
    assert steps[5]["connected"] and not steps[5]["wrote"]
    last = steps[6]
    assert not last["connected"] and "retired key" in last["log"] and not last["wrote"]
    assert "| 7 | stolen old key, fresh CA cert |" in st.summary()
    assert "ota: release 1 committed in slot_a" in steps[7]["log"]  # step 8 (keypin.ota), pins kept
    # both protocols were really used in every good step
    for r in steps[:6]:
        assert "mqtt: connected to" in r["log"] and "https: check-in" in r["log"] and "-> 200" in r["log"]


def _pin_of_pem_key(path):
    k = serialization.load_pem_private_key(pathlib.Path(path).read_bytes(), None)
    der = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256/" + base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def pebble(tmp_path):
    p = Pebble(tmp_path / "pebble")
    yield p
    p.stop()


def test_certbot_hook_guards_renewals(tmp_path, pebble):
    dom = "device.example.test"
    first = certbot(pebble, tmp_path, dom, key_type="ecdsa", reuse_key=True)
    key_pin = _pin_of_pem_key(first["privkey"])
    pins = tmp_path / "pins.json"
    backup = new_key().public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    bpin = "sha256/" + base64.b64encode(hashlib.sha256(backup).digest()).decode()
    pins.write_bytes(pin_document({"fleet": {"hosts": [dom], "active": key_pin, "backups": [bpin],
                                             "retired": [], "policy": "leaf"}}))
    live = tmp_path / "serving"
    marker = tmp_path / "reloaded"
    hook = (f"{KEYPIN} certbot-hook --pinset {pins} --install {live} "
            f"--reload 'sh -c \"echo reload >> {marker}\"'")
    # a --reuse-key renewal passes the guard: installed and reloaded
    certbot(pebble, tmp_path, dom, reuse_key=True, renew=True, deploy_hook=hook)
    assert marker.read_text() == "reload\n"
    assert _pin_of_pem_key(live / "privkey.pem") == key_pin
    served = (live / "fullchain.pem").read_bytes()
    leaf = (live / "leaf.pem").read_bytes()  # the lean device listener's file (H5): certbot's cert.pem
    assert leaf == first["cert"].read_bytes() and served.startswith(leaf) and leaf.count(b"BEGIN") == 1
    # a renewal that forgot --reuse-key (new key) is blocked: nothing installed, no reload
    renewed = certbot(pebble, tmp_path, dom, reuse_key=False, renew=True, deploy_hook=hook)
    assert _pin_of_pem_key(renewed["privkey"]) != key_pin  # certbot did make a new key
    assert marker.read_text() == "reload\n"
    assert (live / "fullchain.pem").read_bytes() == served and (live / "leaf.pem").read_bytes() == leaf
    assert _pin_of_pem_key(live / "privkey.pem") == key_pin
    # the same check by hand shows why
    p = subprocess.run([KEYPIN, "certbot-hook", "--pinset", str(pins), "--cert", str(renewed["cert"])],
                       check=False, capture_output=True, text=True, env=dict(os.environ))
    assert p.returncode == 1
    assert "keypin: certbot-hook: NOT reloading" in p.stderr and "--reuse-key" in p.stderr
    assert "not pinned" in p.stdout
    assert json.loads(pins.read_text().splitlines()[0])["sets"]["fleet"]["active"] == key_pin
