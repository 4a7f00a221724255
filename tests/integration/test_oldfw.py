"""Firmware without verify_callback: getpeercert(True) before any byte, else refuse.

The older firmware is a stand-in (tests/integration/dev_oldfw.py) over the Unix port's real
tls module, since the Unix port itself has verify_callback and lacks getpeercert.
"""
import json
import pathlib
import subprocess

import pytest
from helpers.pki import CA, new_key, pin, pin_document
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("oldfw")
    ca = CA("Old")
    keys = {n: new_key() for n in ("active", "b0", "evil")}
    return d, {n: ca.write_chain(d, n, k, "device.example.test") for n, k in keys.items()}, \
        {n: pin(k) for n, k in keys.items()}


def run(pki, server, variant):
    d, files, pins = pki
    st = d / f"pins-{variant}-{server}.json"
    st.write_bytes(pin_document({"s": {"hosts": ["device.example.test"], "active": pins["active"],
                                       "backups": [pins["b0"]], "retired": [], "policy": "leaf"}}))
    crt, key = files[server]
    with TLSServer(str(crt), str(key)) as srv:
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_oldfw.py"), str(st),
                            str(srv.port), variant], check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), srv


def test_peercert_path_accepts_active_and_backup(pki):
    r, _ = run(pki, "active", "peercert")
    assert r["ok"] and r["verdict"] == "active" and r["reply"] == "OK ping\n"
    r, _ = run(pki, "b0", "peercert")
    assert r["ok"] and r["verdict"] == "backup"


def test_peercert_path_refuses_unknown_before_any_byte(pki):
    r, srv = run(pki, "evil", "peercert")
    assert not r["ok"] and r["error"] == "PinMismatch"
    assert srv.received == b""


def test_neither_hook_refuses_to_connect(pki):
    r, srv = run(pki, "active", "neither")
    assert not r["ok"] and r["error"] == "Unsupported" and "refusing an unpinned connection" in r["msg"]
    assert srv.received == b""
