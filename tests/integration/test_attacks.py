"""Attack matrix: each attack against the device (Unix port) over loopback, real servers.

Every attack must end with no connection, no application byte sent and no pin state change:
for each row the device reports its error (kind, and the TLS layer's own error), the server
reports what it received, the pin document is compared byte for byte, the device's file layer
counts writes/renames/removes, and the device's open file descriptors are counted before and
after (the socket was closed). The table is written to build/attack-matrix.txt and shown in
pytest's terminal summary.
"""
import base64
import json
import pathlib
import ssl
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers import attackpki as ap
from helpers.mismatched import MismatchedServer
from helpers.pki import CA, new_key, pin, pin_document2
from helpers.rawtls import RawTLSServer
from helpers.realservers import Nginx
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"
MATRIX = ROOT / "build" / "attack-matrix.txt"
ROWS = []


# ---------------------------------------------------------------- fixtures

def _table():
    rows = sorted(ROWS, key=lambda r: r["n"])
    head = ("#", "attack", "device error", "TLS layer error", "srv hs", "app B", "pins.json", "fds", "result")
    lines = [[str(r["n"]), r["attack"], r["outcome"], r["tls"], r["hs"], r["app"], r["pins"], r["fds"],
              r["result"]] for r in rows]
    w = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]

    def fmt(cells):
        return " | ".join(f"{c:<{n}}" for c, n in zip(cells, w, strict=True)).rstrip()

    out = [fmt(head), "-+-".join("-" * n for n in w)] + [fmt(x) for x in lines]
    bad = sum(1 for r in rows if r["result"] != "PASS")
    out.append(f"{len(rows)} attacks: {len(rows) - bad} refused with no pin state change (TLS attacks: no "
               f"connection, no application byte; update attacks: refused payload), {bad} not")
    return out


class _Summary:
    """Shows the matrix in pytest's terminal summary (teardown output would be captured)."""

    def __init__(self):
        self.lines = None

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.write_sep("-", f"attack matrix ({MATRIX.relative_to(ROOT)})")
            for ln in self.lines:
                terminalreporter.write_line(ln)


@pytest.fixture(scope="module", autouse=True)
def matrix(request):
    summary = _Summary()
    request.config.pluginmanager.register(summary, "keypin-attack-matrix")
    yield ROWS
    if ROWS:
        summary.lines = _table()
        MATRIX.parent.mkdir(exist_ok=True)
        MATRIX.write_text("\n".join(summary.lines) + "\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("attacks")
    ca = CA("Attack")
    keys = {n: new_key() for n in ("active", "b0", "b1", "retired", "unknown", "evil")}
    files = {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()}
    (d / "ca.pem").write_bytes(ca.root_pem())
    return {"dir": d, "ca": ca, "keys": keys, "files": files, "pins": {n: pin(k) for n, k in keys.items()}}


def api_set(pki, policy="leaf", active=None, backups=None):
    p = pki["pins"]
    return {"hosts": [HOST], "active": active or p["active"],
            "backups": backups if backups is not None else [p["b0"], p["b1"]],
            "retired": [p["retired"]], "policy": policy}


def make_store(tmp_path, pki, policy="leaf", active=None, backups=None, **doc):
    # pin document v2, both current copies (as a device that has booted once): a v1 document is
    # stored as v2 at its first load, a write the "pin state unchanged" verdicts would count
    s = api_set(pki, policy, active, backups)
    path = tmp_path / "pins.json"
    path.write_bytes(pin_document2({"api": {"hosts": s["hosts"], "active": [s["active"]],
                                            "backups": [[b] for b in s["backups"]], "policy": policy}},
                                   retired=s["retired"], **doc))
    (tmp_path / "pins.json.2").write_bytes(path.read_bytes())
    return path


def device(store, port, timeout=10, cadata=None, extra=()):
    argv = [str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_attack.py"), str(store), HOST, str(port),
            f"timeout={timeout}"] + ([f"cadata={cadata}"] if cadata else []) + list(extra)
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- checking and recording

def _first_line(text):
    return next((ln.strip() for ln in text.split("\n") if ln.strip()), "")


def _short(r):
    if r["connected"]:
        return f"CONNECTED ({r.get('verdict')} -> {r.get('after')}), sent {r['sent']} B"
    e = r["error"]
    if e == "PinMismatch":
        return f"PinMismatch ({r['reason']})"
    if e == "CertError":
        return "CertError: " + _first_line(r["msg"].split(":", 2)[-1])[:34]
    if e == "OSError":
        return "OSError " + r["msg"][len("OSError"):][:48]
    return f"{e} {r['msg'][:48]}"


def _tls(r):
    t = r.get("tls_error")
    if not t:
        return "-"
    t = t.replace("\\n", "\n")
    if t.startswith("ValueError"):
        return "ValueError: " + _first_line(t[len("ValueError('"):])[:38]
    return t[len("OSError"):][:50] if t.startswith("OSError") else t[:50]


def judge(n, attack, r, store, before, app_bytes, handshakes, kinds):
    """Record the row, then assert the three outcomes (and the error kind)."""
    siblings = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name + ".")
                      and p.name != store.name + ".2")
    unchanged = store.read_bytes() == before and not r["fs_ops"] and not siblings
    closed = r["fds_after"] == r["fds_before"]
    ok = (not r["connected"] and app_bytes == 0 and unchanged and closed and handshakes in (0, None)
          and r["error"] in kinds)
    ROWS.append({"n": n, "attack": attack, "outcome": _short(r), "tls": _tls(r),
                 "hs": "-" if handshakes is None else str(handshakes), "app": str(app_bytes),
                 "pins": "unchanged" if unchanged else "CHANGED: " + ", ".join(
                     o.rsplit("/", 1)[-1] for o in r["fs_ops"] or siblings),
                 "fds": f"{r['fds_before']}->{r['fds_after']}", "result": "PASS" if ok else "FAIL"})
    assert not r["connected"], r
    assert app_bytes == 0, (app_bytes, r)
    assert handshakes in (0, None), handshakes
    assert store.read_bytes() == before, "pins.json changed"
    assert r["fs_ops"] == [] and siblings == [], (r["fs_ops"], siblings)
    assert closed, f"socket left open: fds {r['fds_before']} -> {r['fds_after']}"
    assert r["error"] in kinds, r


def run_tls(n, attack, tmp_path, pki, crt, key, kinds, policy="leaf", cadata=None, store_kw=None):
    store = make_store(tmp_path, pki, policy, **(store_kw or {}))
    before = store.read_bytes()
    with TLSServer(str(crt), str(key)) as srv:
        r = device(store, srv.port, cadata=cadata)
    judge(n, attack, r, store, before, len(srv.received), srv.handshakes, kinds)
    return r


def run_raw(n, attack, tmp_path, pki, kinds, timeout=10, **raw):
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with RawTLSServer(**raw) as srv:
        r = device(store, srv.port, timeout=timeout)
        # a client that sent application data would have sent a record of type 23
        judge(n, attack, r, store, before, srv.app_records, None, kinds)
        assert srv.hellos == 1
        assert all(t == 21 for t, _ in srv.after_hello), srv.after_hello  # alerts only
    return r, srv


REFUSED = ("PinMismatch", "CertError", "OSError", "Unsupported")  # any refusal; rows name the one expected


# ---------------------------------------------------------------- the attacks

def test_01_unknown_key_under_ca_valid_chain(tmp_path, pki):
    crt, key = pki["files"]["unknown"]
    r = run_tls(1, "unknown key, CA-valid chain (CA+pin mode)", tmp_path, pki, crt, key, ("PinMismatch",),
                cadata=pki["dir"] / "ca.pem")
    assert r["reason"] == "unknown key"


def test_02_self_signed_with_right_subject(tmp_path, pki):
    k = pki["keys"]["evil"]
    crt, key = ap.write_pair(tmp_path, "selfsigned", [ap.self_signed(k, HOST)], k)
    r = run_tls(2, "self-signed cert, right subject/SAN", tmp_path, pki, crt, key, ("PinMismatch",))
    assert r["reason"] == "unknown key"


def test_03_retired_key(tmp_path, pki):
    crt, key = pki["files"]["retired"]
    r = run_tls(3, "retired key (complete CA chain)", tmp_path, pki, crt, key, ("PinMismatch",))
    assert r["reason"] == "retired key"


def test_04_backup_certificate_without_its_private_key(tmp_path, pki):
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    crt, _ = pki["files"]["b0"]
    _, wrong = pki["files"]["evil"]
    with MismatchedServer(str(crt), str(wrong)) as srv:
        r = device(store, srv.port)
    judge(4, "backup 0 cert, wrong private key (tlslite-ng)", r, store, before, srv.app_bytes, srv.handshakes_ok,
          ("OSError",))
    assert "VERIFY_FAILED" in r["msg"]


def test_05_pinned_key_at_wrong_depth_policy_leaf(tmp_path, pki):
    # a correctly signed chain: rogue leaf <- active pinned key as intermediate <- backup 0 as root
    k = pki["keys"]
    certs = ap.chain([k["evil"], k["active"], k["b0"]], HOST, "WrongDepth")
    crt, key = ap.write_pair(tmp_path, "wrongdepth", certs, k["evil"])
    r = run_tls(5, "active pin at depth 1, backup at 2 (policy leaf)", tmp_path, pki, crt, key, ("PinMismatch",))
    assert r["reason"] == "unknown key"


def test_06_hostname_mismatch_ca_plus_pin(tmp_path, pki):
    # the pinned key itself, in a CA-valid certificate for another name: mbedTLS must refuse
    crt, key = pki["ca"].write_chain(tmp_path, "othername", pki["keys"]["active"], "other.example.test")
    r = run_tls(6, "hostname/SNI mismatch, pinned key (CA+pin)", tmp_path, pki, crt, key, ("CertError", "OSError"),
                cadata=pki["dir"] / "ca.pem")
    assert "CN" in r["msg"] or "verification failed" in r["msg"]


def test_07_garbage_certificate_message(tmp_path, pki):
    run_raw(7, "Certificate message: garbage DER", tmp_path, pki, REFUSED, mode="cert",
            certs=[b"\x30\x82\x01\x00" + b"garbage!" * 32])


def test_08_truncated_certificate(tmp_path, pki):
    der = ap.der(pki["ca"].leaf(pki["keys"]["active"], HOST))
    run_raw(8, "Certificate message: pinned cert truncated", tmp_path, pki, REFUSED, mode="cert",
            certs=[der[:len(der) // 2]])


def test_09_certificate_message_cut_short(tmp_path, pki):
    der = ap.der(pki["ca"].leaf(pki["keys"]["active"], HOST))
    run_raw(9, "Certificate message cut, server closes", tmp_path, pki, REFUSED, mode="cert",
            certs=[der], cut=200)


def test_10_ber_certificate_with_pinned_key(tmp_path, pki):
    # mbedTLS parses BER lengths; keypin's strict DER grammar must refuse the certificate
    der = ap.nonminimal_serial(ap.der(pki["ca"].leaf(pki["keys"]["active"], HOST)))
    r, _ = run_raw(10, "pinned cert, non-minimal DER length", tmp_path, pki, ("PinMismatch",), mode="cert",
                   certs=[der])
    assert r["reason"] == "malformed certificate" and "non-minimal length" in r["msg"]


def test_11_oversized_chain(tmp_path, pki):
    # 11 certificates of ~10 KiB each (> 100 KB), the pinned key at the leaf: mbedTLS refuses the
    # Certificate message (bigger than its 16 KiB input buffer) before any callback
    k = pki["keys"]
    certs = ap.chain([k["active"]] + [new_key() for _ in range(10)], HOST, "Big", pad=10000)
    size = sum(len(ap.der(c)) for c in certs)
    assert size >= 100_000
    crt, key = ap.write_pair(tmp_path, "big", certs, k["active"])
    r = run_tls(11, f"oversized chain {size // 1000} KB (pinned leaf)", tmp_path, pki, crt, key, REFUSED)
    assert "BAD_INPUT_DATA" in (r["tls_error"] or "")


def test_12_ten_deep_chain_pin_at_depth_5(tmp_path, pki):
    k = pki["keys"]
    keys = [k["evil"]] + [new_key() for _ in range(9)]
    keys[5] = k["active"]
    crt, key = ap.write_pair(tmp_path, "deep", ap.chain(keys, HOST), k["evil"])
    run_tls(12, "10-deep chain, active pin at depth 5", tmp_path, pki, crt, key, REFUSED)


def test_13_ten_deep_chain_pinned_leaf(tmp_path, pki):
    # documents a limit: mbedTLS refuses chains of 10 or more certificates
    # (MBEDTLS_X509_MAX_INTERMEDIATE_CA = 8) before keypin sees them, even with the pinned leaf
    k = pki["keys"]
    keys = [k["active"]] + [new_key() for _ in range(9)]
    crt, key = ap.write_pair(tmp_path, "deepleaf", ap.chain(keys, HOST), k["active"])
    r = run_tls(13, "10-deep chain, pinned leaf (limit)", tmp_path, pki, crt, key, REFUSED)
    assert "X509_FATAL_ERROR" in (r["tls_error"] or "")


def test_14_pin_beyond_checked_depth_policy_any(tmp_path, pki):
    # 9 certificates (mbedTLS accepts 9), the active pin at depth 8: keypin hashes depths 0..7 only
    k = pki["keys"]
    keys = [k["evil"]] + [new_key() for _ in range(8)]
    keys[8] = k["active"]
    certs = ap.chain(keys, HOST)
    crt, key = ap.write_pair(tmp_path, "deep9", certs, k["evil"])
    top = tmp_path / "deep9-top.pem"
    top.write_bytes(ap.pem(certs[-1:]))  # policy any needs CA+pin mode: the chain's own top as anchor
    r = run_tls(14, "9-deep chain, pin at depth 8 (policy any, CA+pin)", tmp_path, pki, crt, key,
                ("PinMismatch",), policy="any", cadata=top)
    assert r["reason"] == "unknown key" and "deeper certificates not checked" in r["msg"]


def test_15_stalled_handshake(tmp_path, pki):
    t0 = time.monotonic()
    r, srv = run_raw(15, "server stalls after ClientHello", tmp_path, pki, REFUSED, timeout=2, mode="stall")
    assert 1500 <= r["ms"] <= 5000, r["ms"]
    assert "110" in (r["tls_error"] or ""), r  # ETIMEDOUT from the socket
    assert srv.client_closed is not None and srv.client_closed - srv.hello_at < 4.5
    assert time.monotonic() - t0 < 15


def _legacy_server(crt, key, version):
    srv = TLSServer(str(crt), str(key), max_version=version)
    srv.ctx.minimum_version = version
    srv.ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return srv


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ssl.TLSVersion.TLSv1/TLSv1_1, on purpose
@pytest.mark.parametrize("n,label,version", [(16, "TLSv1.1", ssl.TLSVersion.TLSv1_1),
                                             (17, "TLSv1.0", ssl.TLSVersion.TLSv1)])
def test_16_17_downgrade_openssl(tmp_path, pki, n, label, version):
    # the genuine server key, but only an old protocol (OpenSSL at SECLEVEL 0 allows it here)
    crt, key = pki["files"]["active"]
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with _legacy_server(crt, key, version) as srv:
        r = device(store, srv.port)
    judge(n, f"downgrade to {label} (OpenSSL, pinned key)", r, store, before, len(srv.received), srv.handshakes,
          REFUSED)
    assert "BAD_PROTOCOL_VERSION" in (r["tls_error"] or ""), r


def test_18_downgrade_sslv3_raw(tmp_path, pki):
    der = ap.der(pki["ca"].leaf(pki["keys"]["active"], HOST))
    r, _ = run_raw(18, "downgrade: SSLv3 ServerHello (raw)", tmp_path, pki, REFUSED, mode="version", certs=[der],
                   version=0x0300)
    assert "BAD_PROTOCOL_VERSION" in (r["tls_error"] or ""), r


def test_19_policy_any_ca_mode_rogue_leaf(tmp_path, pki):
    # policy any with CA+pin: the replayed intermediate does not sign the rogue leaf: refused
    ca, k = pki["ca"], pki["keys"]
    rogue = ap.rogue_under(ca.inter, k["evil"], HOST)
    crt, key = ap.write_pair(tmp_path, "rogue-ca", [rogue, ca.inter], k["evil"])
    run_tls(19, "policy any + CA: rogue leaf, replayed pinned int.", tmp_path, pki, crt, key,
            ("CertError", "OSError"), policy="any", cadata=pki["dir"] / "ca.pem",
            store_kw={"active": pin(ca.int_key), "backups": [pki["pins"]["b0"]]})


# Found by this matrix and fixed: with policy 'any' in pin-only mode (no cadata) mbedTLS runs with
# CERT_OPTIONAL and does not enforce chain signatures, so a rogue leaf sent with the (public) pinned
# intermediate certificate matched at depth 1. keypin now refuses policy 'any' without cadata
# (keypin.Unsupported, before any byte is sent).


def test_20_policy_any_pin_only_rogue_leaf_replayed_intermediate(tmp_path, pki):
    ca, k = pki["ca"], pki["keys"]
    rogue = ap.rogue_under(ca.inter, k["evil"], HOST)
    crt, key = ap.write_pair(tmp_path, "rogue", [rogue, ca.inter], k["evil"])
    run_tls(20, "policy any, pin-only: rogue leaf + replayed int.", tmp_path, pki, crt, key, REFUSED,
            policy="any", store_kw={"active": pin(ca.int_key), "backups": [pki["pins"]["b0"]]})


def test_21_policy_any_pin_only_forced_rotation(tmp_path, pki):
    # backup 0 is a second intermediate CA key whose certificate is public; the attacker replays it
    ca, k = pki["ca"], pki["keys"]
    b_int = ap.cert(k["b0"], ap.name("Attack Backup Intermediate CA"), ca.root_key, ca.root.subject, ca=True)
    rogue = ap.rogue_under(b_int, k["evil"], HOST)
    crt, key = ap.write_pair(tmp_path, "rogue-b", [rogue, b_int], k["evil"])
    run_tls(21, "policy any, pin-only: rogue leaf + replayed backup int.", tmp_path, pki, crt, key, REFUSED,
            policy="any", store_kw={"active": pin(ca.int_key), "backups": [pki["pins"]["b0"]]})


# Found by this matrix and fixed: a handshake that failed before the verify callback ran (timeout,
# EOF, protocol version, unparsable certificate) was reported as PinMismatch; it is the OSError now.


def test_22_stall_is_reported_as_a_transport_error(tmp_path, pki):
    store = make_store(tmp_path, pki)
    with RawTLSServer("stall") as srv:
        r = device(store, srv.port, timeout=2)
    assert not r["connected"]
    assert r["error"] == "OSError" and r["errno"] == 110, r


# ---------------------------------------------------------------- signed pin updates (keypin.update)

def signer_of(key):
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519/" + base64.b64encode(raw).decode()


def signed_update(key, version, sets, signer):
    line = json.dumps({"format": "keypin-pins/2", "version": version, "signer": signer,
                       "audience": {"fleet": "f1"}, "retired": [], "sets": sets}).encode()
    return line + b"\ned25519:" + base64.b64encode(key.sign(line)) + b"\n"


@pytest.fixture(scope="module")
def web(pki, tmp_path_factory):
    crt, key = pki["files"]["active"]
    ng = Nginx(tmp_path_factory.mktemp("attack-web"), str(crt), str(key))
    yield ng
    ng.stop()


def run_update(n, attack, tmp_path, pki, web, signer, data, claimed_version, store=None):
    """The device (store version 3, signer s1) polls a pin update over pinned HTTPS from the genuine
    server, which serves what an attacker put there; it must refuse it and keep its pins."""
    store = store or make_store(tmp_path, pki, version=3, signer=signer_of(signer))
    before = store.read_bytes()
    name = f"update-{n}.txt"
    (web.root / name).write_bytes(data)
    (web.root / f"{name}.version").write_text(f"{claimed_version}\n")
    r = device(store, web.port, extra=[f"update=https://{HOST}:{web.port}/files/{name}",
                                       f"state={tmp_path / 'keypin-state.json'}"])
    pin_ops = [o for o in r["fs_ops"] if "/pins.json" in o]
    siblings = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name + ".")
                      and p.name != store.name + ".2")
    two = store.parent / (store.name + ".2")
    unchanged = store.read_bytes() == before and not pin_ops and not siblings and \
        (not two.exists() or two.read_bytes() == before)
    last = r.get("update_last") or {}
    ok = r["error"] is None and r.get("update") == "refused" and unchanged and r.get("store_version") == 3
    ROWS.append({"n": n, "attack": attack,
                 "outcome": f"update {r.get('update')}: {str(last.get('reason'))[:36]}" if r["error"] is None
                 else f"{r['error']} {r.get('msg', '')[:40]}",
                 "tls": "- (genuine server)", "hs": "-", "app": "GET only", "fds": f"{r['fds_before']}->{r['fds_after']}",
                 "pins": "unchanged" if unchanged else "CHANGED: " + ", ".join(o.rsplit("/", 1)[-1] for o in pin_ops),
                 "result": "PASS" if ok else "FAIL"})
    assert r["error"] is None, r
    assert r["update"] == "refused", r
    assert store.read_bytes() == before and pin_ops == [] and siblings == [], (pin_ops, siblings)
    assert r["store_version"] == 3
    assert r["fds_after"] == r["fds_before"]
    return last


@pytest.fixture(scope="module")
def signers():
    return {n: ed25519.Ed25519PrivateKey.generate() for n in ("s1", "evil")}


def test_23_forged_pin_update(tmp_path, pki, web, signers):
    # the attacker's own key signs a newer update that moves the device to its key
    p = pki["pins"]
    sets = {"api": {"hosts": [HOST], "active": [p["evil"]], "backups": [[p["unknown"]]], "policy": "leaf"}}
    data = signed_update(signers["evil"], 4, sets, signer_of(signers["s1"]))
    last = run_update(23, "forged pin update (attacker-signed, v4)", tmp_path, pki, web, signers["s1"], data, 4)
    assert last["reason"].startswith("bad signature"), last


def test_24_replayed_older_signed_update(tmp_path, pki, web, signers):
    # a genuine update, signed by the device's signer, but older (version 2) than what it has (3)
    p = pki["pins"]
    sets = {"api": {"hosts": [HOST], "active": [p["active"]], "backups": [[p["retired"]], [p["b0"]]],
                    "policy": "leaf"}}
    data = signed_update(signers["s1"], 2, sets, signer_of(signers["s1"]))
    last = run_update(24, "replayed older signed update (v2 < v3)", tmp_path, pki, web, signers["s1"], data, 99)
    assert "not newer" in last["reason"], last


# ---- pin document v2 (issue 12.3, 12.5): audience, weak signer, stranded host


def v2_store(tmp_path, pki, signer, fleet="plant-b"):
    """A device of fleet `fleet` (pin document v2), version 3, signer `signer` (text)."""
    from helpers.pki import pin_document2
    s = api_set(pki)
    path = tmp_path / "pins.json"
    path.write_bytes(pin_document2({"api": {"hosts": s["hosts"], "active": [s["active"]],
                                            "backups": [[b] for b in s["backups"]], "policy": "leaf"}},
                                   version=3, signer=signer, fleet=fleet, retired=s["retired"]))
    # a device that has booted once holds both current copies
    (tmp_path / "pins.json.2").write_bytes(path.read_bytes())
    return path


def test_25_genuine_update_for_another_fleet(tmp_path, pki, web, signers):
    # two fleets share the signer: fleet A's genuine update reaches a device of fleet B
    p = pki["pins"]
    sets = {"a": {"hosts": ["a.example.test"], "active": [p["b0"]], "backups": [[p["b1"]]], "policy": "leaf"}}
    line = json.dumps({"format": "keypin-pins/2", "version": 4, "signer": signer_of(signers["s1"]),
                       "audience": {"fleet": "plant-a"}, "retired": [], "sets": sets}).encode()
    data = line + b"\ned25519:" + base64.b64encode(signers["s1"].sign(line)) + b"\n"
    store = v2_store(tmp_path, pki, signer_of(signers["s1"]))
    last = run_update(25, "genuine update for another fleet (same signer)", tmp_path, pki, web, signers["s1"],
                      data, 4, store=store)
    assert last["reason"] == "not for this device: fleet 'plant-a' (device is in 'plant-b')", last


def test_26_update_forged_for_a_weak_signer(tmp_path, pki, web, signers):
    # the device was provisioned with the identity point as signer: R = identity, S = 0 verifies anything
    p = pki["pins"]
    ident = "ed25519/" + base64.b64encode(b"\x01" + bytes(31)).decode()
    sets = {"api": {"hosts": [HOST], "active": [p["evil"]], "backups": [[p["unknown"]]], "policy": "leaf"}}
    line = json.dumps({"format": "keypin-pins/2", "version": 4, "signer": ident, "audience": {"fleet": "plant-b"},
                       "retired": [], "sets": sets}).encode()
    data = line + b"\ned25519:" + base64.b64encode(b"\x01" + bytes(63)) + b"\n"
    store = v2_store(tmp_path, pki, ident)
    last = run_update(26, "update forged for a small-order signer key", tmp_path, pki, web, signers["s1"], data, 4,
                      store=store)
    assert last["reason"].startswith("bad signer on the device"), last


# ---------------------------------------------------------------- the protocol layer (issue 12.5-12.7, 12.11)
# A genuine handshake (the active key, or backup 0 for the rotation rows), then an attack on the
# HTTP or MQTT exchange: the device must refuse the reply, write no file and no pin, rotate
# nothing without a genuine reply, and close its socket.


def judge_proto(n, attack, r, store, before, kinds, extra_ok, app, tls_cell):
    pin_ops = [o for o in r["fs_ops"] if "/pins.json" in o]
    siblings = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name + ".")
                      and p.name != store.name + ".2")
    unchanged = store.read_bytes() == before and not pin_ops and not siblings
    closed = r["fds_after"] == r["fds_before"]
    ok = r["error"] in kinds and unchanged and closed and extra_ok
    if r["error"]:
        outcome = _short(dict(r, connected=False))
    elif "status" in r:
        outcome = f"status {r['status']} reported, verdict stays {r.get('verdict')}"
    else:
        outcome = f"kept going: dropped {r.get('dropped')}, malformed {r.get('malformed')}, published"
    ROWS.append({"n": n, "attack": attack, "outcome": outcome,
                 "tls": tls_cell, "hs": "-", "app": app, "fds": f"{r['fds_before']}->{r['fds_after']}",
                 "pins": "unchanged" if unchanged else "CHANGED: " + ", ".join(
                     o.rsplit("/", 1)[-1] for o in pin_ops or siblings),
                 "result": "PASS" if ok else "FAIL"})
    assert r["error"] in kinds, r
    assert unchanged, ("pins.json changed", pin_ops, siblings)
    assert closed, f"socket left open: fds {r['fds_before']} -> {r['fds_after']}"
    assert extra_ok, r


def _fin_relay(n, attack, tmp_path, pki, web, path):
    # real nginx serves 100 KiB; a relay on the path forwards 16 KiB of it and sends a FIN
    from helpers.scripted import FinRelay
    (web.root / "f100k.bin").write_bytes(bytes(range(256)) * 400)
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with FinRelay(web.port, 16 * 1024) as relay:
        r = device(store, relay.port, extra=[f"http={path}", f"save={tmp_path / 'download.bin'}"])
    judge_proto(n, attack, r, store, before, ("HTTPError",), relay.fins == 1 and r["files"] == [], "GET only",
                "- (genuine key)")
    return r


def test_31_fin_relay_cuts_a_close_delimited_download(tmp_path, pki, web):
    r = _fin_relay(31, "FIN relay cuts a close-delimited download (save)", tmp_path, pki, web, "/nolen/f100k.bin")
    assert "cannot be proven" in r["msg"] or "not saved" in r["msg"], r


def test_32_fin_relay_cuts_a_chunked_download(tmp_path, pki, web):
    _fin_relay(32, "FIN relay cuts a chunked download (save)", tmp_path, pki, web, "/chunked/f100k.bin")


def _scripted(n, attack, tmp_path, pki, reply, kinds, extra=(), drip=None, key="active", timeout=10):
    from helpers.scripted import ScriptedHTTPS
    crt, k = pki["files"][key]
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with ScriptedHTTPS(crt, k, reply, drip=drip, end="hold" if drip else "fin") as srv:
        r = device(store, srv.port, timeout=timeout, extra=["http=/x", *extra])
    return r, srv, store, before


def test_33_negative_chunk_size(tmp_path, pki):
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-10\r\n" + b"A" * 5000 + b"\r\n0\r\n\r\n")
    r, _, store, before = _scripted(33, "", tmp_path, pki, reply, ("HTTPError",), extra=["max_body=1000"])
    judge_proto(33, "negative chunk size past max_body=1000", r, store, before, ("HTTPError",),
                "bad chunk size" in r.get("msg", ""), "GET only", "- (genuine key)")


def test_34_slow_drip_response(tmp_path, pki):
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"x" * 40
    r, srv, store, before = _scripted(34, "", tmp_path, pki, reply, ("OSError",), drip=0.25, timeout=2)
    judge_proto(34, "response dripped 1 B/0.25 s (timeout=2)", r, store, before, ("OSError",),
                r.get("errno") == 110 and srv.sent < len(reply), f"GET; {srv.sent}/{len(reply)} B out", "- (genuine key)")


def test_35_backup_key_server_answers_404(tmp_path, pki):
    # the server holding backup 0 is real nginx answering 404: a reply, but not a good one
    crt, key = pki["files"]["b0"]
    ng = Nginx(tmp_path, str(crt), str(key))
    try:
        store = make_store(tmp_path, pki)
        before = store.read_bytes()
        r = device(store, ng.port, extra=["http=/no-such-page"])
    finally:
        ng.stop()
    judge_proto(35, "backup-key server answers 404 (nginx)", r, store, before, (None,),
                r.get("status") == 404 and r.get("verdict") == "backup", "GET; 404 back", "- (backup 0)")


def test_36_backup_key_server_answers_garbage(tmp_path, pki):
    # a TLS server with backup 0's key that does not speak HTTP
    crt, key = pki["files"]["b0"]
    store = make_store(tmp_path, pki)
    before = store.read_bytes()
    with TLSServer(str(crt), str(key)) as srv:
        r = device(store, srv.port, extra=["http=/"])
    judge_proto(36, "backup-key server answers garbage", r, store, before, ("HTTPError",),
                "status line" in r.get("msg", ""), "GET; garbage back", "- (backup 0)")


def test_37_backup_key_broker_refuses_the_login(tmp_path, pki):
    from helpers.realservers import Mosquitto
    crt, key = pki["files"]["b0"]
    b = Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"})
    try:
        store = make_store(tmp_path, pki)
        before = store.read_bytes()
        r = device(store, b.port, extra=["mqtt=dev:wrong"])
    finally:
        b.stop()
    judge_proto(37, "backup-key broker refuses login (CONNACK 5)", r, store, before, ("MQTTException", "MQTTError"),
                True, "CONNECT; CONNACK 5", "- (backup 0)")


def test_38_hostile_retained_messages(tmp_path, pki):
    from helpers.realservers import Mosquitto
    crt, key = pki["files"]["active"]
    b = Mosquitto(tmp_path, str(crt), str(key), users={"dev": "secret"})
    try:
        b.publish("keypin/test/hostile/cmd", b"\xff\xfe", retain=True)
        b.publish("keypin/test/hostile/pins", b"\x01" * (3 * 1024 * 1024), retain=True)
        sub = b.subscriber("keypin/test/attack", count=1, timeout=60)
        store = make_store(tmp_path, pki)
        before = store.read_bytes()
        r = device(store, b.port, extra=["mqtt=dev:secret", "hostile=1"])
        got = sub.result()
    finally:
        b.stop()
    judge_proto(38, "retained 2 B non-UTF-8 + 3 MB on subscribed topics", r, store, before, (None,),
                (r.get("dropped"), r.get("malformed"), r.get("got")) == (1, 1, 0) and got == [
                    ("keypin/test/attack", b"alive")], "SUBSCRIBE; 3 MB drained", "- (genuine key)")
