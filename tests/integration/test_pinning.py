"""Core pinning in the Unix port against real TLS servers on loopback (issue 3)."""
import json
import pathlib
import subprocess

import pytest
from helpers.pki import CA, new_key, pin, pin_document2, read_document
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = CA("Pinning")
    keys = {n: new_key() for n in ("active", "b0", "b1", "b2", "retired", "unknown")}
    files = {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()}
    (d / "ca.pem").write_bytes(ca.root_pem())
    other = CA("Other")
    (d / "other-ca.pem").write_bytes(other.root_pem())
    return {"dir": d, "ca": ca, "keys": keys, "files": files,
            "pins": {n: pin(k) for n, k in keys.items()}}


def make_store(tmp_path, pki, policy="leaf", active=None, backups=None, retired=None):
    p = pki["pins"]
    sets = {"api": {"hosts": [HOST], "active": active or p["active"],
                    "backups": backups if backups is not None else [p["b0"], p["b1"], p["b2"]],
                    "retired": retired if retired is not None else [p["retired"]], "policy": policy}}
    path = tmp_path / "pins.json"
    s = sets["api"]  # both v2 copies, as the device keeps them (a v1 document or a P alone is a write at load)
    doc = pin_document2({"api": {"hosts": s["hosts"], "active": [s["active"]],
                                 "backups": [[b] for b in s["backups"]], "policy": policy}}, retired=s["retired"])
    path.write_bytes(doc)
    (tmp_path / "pins.json.2").write_bytes(doc)
    return path


def client(store, port, mode="confirm", cadata=None, host=HOST):
    args = [str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_client.py"), str(store), host,
            str(port), mode] + ([str(cadata)] if cadata else [])
    p = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def serve(pki, name):
    crt, key = pki["files"][name]
    return TLSServer(str(crt), str(key))


def test_active_key_accepted_without_store_write(tmp_path, pki):
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with serve(pki, "active") as srv:
        r = client(store, srv.port)
    assert r["ok"] and r["verdict"] == "active" and r["reply"] == "OK ping\n"
    assert r["writes"] == 0 and store.read_bytes() == before
    assert srv.received == b"ping\n"


def test_backup_accepted_and_committed_on_confirm(tmp_path, pki):
    store = make_store(tmp_path, pki)
    p = pki["pins"]
    with serve(pki, "b0") as srv:
        r = client(store, srv.port, "confirm")
    assert r["ok"] and r["verdict"] == "backup" and r["backup"] == 0 and r["after"] == "rotated"
    assert r["active"] == p["b0"] and r["backups"] == [p["b1"], p["b2"]]
    assert p["active"] in r["retired"] and p["retired"] in r["retired"]
    assert r["writes"] == 2 and r["seq"] == 2  # one commit: the two current copies (pin document v2)
    doc = read_document(store)
    assert doc["sets"]["api"]["active"] == [p["b0"]]


def test_no_commit_without_confirm(tmp_path, pki):
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with serve(pki, "b0") as srv:
        r = client(store, srv.port, "noconfirm")
    assert r["ok"] and r["verdict"] == "backup"
    assert r["writes"] == 0 and store.read_bytes() == before and r["active"] == pki["pins"]["active"]


def test_jump_to_backup_2_retires_0_and_1(tmp_path, pki):
    store = make_store(tmp_path, pki)
    p = pki["pins"]
    with serve(pki, "b2") as srv:
        r = client(store, srv.port, "confirm")
    assert r["ok"] and r["backup"] == 2
    assert r["active"] == p["b2"] and r["backups"] == []
    for k in ("active", "b0", "b1", "retired"):
        assert p[k] in r["retired"], k
    # then the old active and skipped backups are refused
    for k in ("active", "b0"):
        with serve(pki, k) as srv:
            r2 = client(store, srv.port)
        assert not r2["ok"] and r2["error"] == "PinMismatch" and "retired" in r2["msg"], r2
        assert srv.received == b""


def test_retired_key_refused_in_complete_chain(tmp_path, pki):
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with serve(pki, "retired") as srv:
        r = client(store, srv.port)
    assert not r["ok"] and r["error"] == "PinMismatch" and "retired key" in r["msg"]
    assert srv.received == b"" and store.read_bytes() == before and r["writes"] == 0


def test_unknown_key_refused_zero_bytes_and_okhttp_report(tmp_path, pki):
    store = make_store(tmp_path, pki)
    p = pki["pins"]
    with serve(pki, "unknown") as srv:
        r = client(store, srv.port)
    assert not r["ok"] and r["error"] == "PinMismatch"
    msg = r["msg"]
    assert "Certificate pinning failure! (unknown key)" in msg
    assert f"depth 0: {p['unknown']}" in msg
    assert "depth 1: sha256/" in msg
    assert f"active: {p['active']}" in msg and f"backup 1: {p['b0']}" in msg and f"backup 3: {p['b2']}" in msg
    assert srv.received == b"" and srv.accepted == 1
    assert r["writes"] == 0


def test_backup_certificate_without_its_private_key(tmp_path, pki):
    """Serve backup 0's certificate with the unknown key: mbedTLS must fail the handshake."""

    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    from helpers.mismatched import MismatchedServer
    crt, _ = pki["files"]["b0"]
    _, wrong_key = pki["files"]["unknown"]
    with MismatchedServer(str(crt), str(wrong_key)) as srv:
        r = client(store, srv.port, "confirm")
    assert not r["ok"], r
    assert r["error"] == "OSError" and "VERIFY_FAILED" in r["msg"], r
    assert srv.app_bytes == 0
    assert store.read_bytes() == before and r["writes"] == 0 and r["active"] == pki["pins"]["active"]


def test_policy_any_with_intermediate_pin(tmp_path, pki):
    ca = pki["ca"]
    ipin = pin(ca.int_key)
    cadata = pki["dir"] / "ca.pem"
    store = make_store(tmp_path, pki, policy="any", active=ipin,
                       backups=[pki["pins"]["b0"]], retired=[])
    with serve(pki, "unknown") as srv:  # any leaf key under the pinned intermediate
        r = client(store, srv.port, cadata=cadata)
        # without a trust anchor the chain's signatures are not enforced: refused outright
        r2 = client(store, srv.port)
    assert srv.received == b"ping\n"  # only the CA+pin connection sent anything
    assert r["ok"] and r["verdict"] == "active", r
    assert not r2["ok"] and r2["error"] == "Unsupported" and "CA+pin mode" in r2["msg"], r2
    store2 = make_store(tmp_path, pki, policy="leaf", active=ipin, backups=[pki["pins"]["b0"]], retired=[])
    with serve(pki, "unknown") as srv:
        r = client(store2, srv.port, cadata=cadata)
    assert not r["ok"] and r["error"] == "PinMismatch" and srv.received == b""


def test_ca_plus_pin_mode(tmp_path, pki):
    store = make_store(tmp_path, pki)
    d = pki["dir"]
    with serve(pki, "active") as srv:
        good = client(store, srv.port, cadata=d / "ca.pem")
        bad = client(store, srv.port, cadata=d / "other-ca.pem")
    assert good["ok"] and good["verdict"] == "active", good
    assert not bad["ok"] and bad["error"] == "CertError" and "verification failed" in bad["msg"], bad
    assert srv.received == b"ping\n"  # only the good connection sent anything


def test_policy_any_refuses_a_retired_key_above_the_leaf(tmp_path, pki):
    """Issue 12 point 11: under policy any, a retired key anywhere in the chain is refused, even
    when the leaf itself is in service (the intermediate's key was compromised and retired).
    Checking retired pins only at depth 0 would accept this connection."""
    ca = pki["ca"]
    cadata = pki["dir"] / "ca.pem"
    store = make_store(tmp_path, pki, policy="any", active=pki["pins"]["active"],
                       backups=[pki["pins"]["b0"]], retired=[pin(ca.int_key)])
    before = store.read_bytes()
    with serve(pki, "active") as srv:
        r = client(store, srv.port, cadata=cadata)
    assert not r["ok"] and r["error"] == "PinMismatch" and "retired key" in r["msg"], r
    assert srv.received == b"" and store.read_bytes() == before
