"""The lean device listener (issue 13): devices get an endpoint that presents the leaf alone,
browsers keep the full chain. Real nginx (one process, two listeners) and mosquitto (a full-chain
and a lean broker) serve the files `keypin certbot-hook --install` put in place from a certbot
lineage of a Let's Encrypt Generation Y look-alike chain (tests/helpers/geny.py); the device runs
in the Unix port."""
import json
import pathlib
import ssl
import subprocess

import pytest
from helpers.geny import GenY, LeanNginx, certificate_message_bytes, wire_certificate_message
from helpers.pki import new_key, pin
from helpers.realservers import HOST as LOOPBACK
from helpers.realservers import Mosquitto, binary

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv" / "bin" / "keypin")
HOST = "device.example.test"


def keypin(*args, env=None):
    return subprocess.run([KEYPIN, *map(str, args)], check=False, capture_output=True, text=True, timeout=60,
                          env=env)


def make_pins(d, key):
    f = d / "pins.json"
    r = keypin("pinset", "new", "--file", f, "--name", "fleet", "--host", HOST, "--active", pin(key),
               "--backup", pin(new_key()), "--backup", pin(new_key()))
    assert r.returncode == 0, r.stderr
    return f


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("lean")
    ch = GenY.build("ecdsa", d / "issued", HOST)
    live = d / "live"  # certbot's lineage layout
    live.mkdir()
    (live / "cert.pem").write_bytes(ch.files["leaf"].read_bytes())
    (live / "fullchain.pem").write_bytes(ch.files["fullchain"].read_bytes())
    (live / "privkey.pem").write_bytes(ch.files["privkey"].read_bytes())
    pins = make_pins(d, ch.key)
    inst = d / "ssl"
    r = keypin("certbot-hook", "--pinset", pins, "--install", inst, env={"RENEWED_LINEAGE": str(live), "PATH": ""})
    assert r.returncode == 0, r.stderr
    full, leaf, key = inst / "fullchain.pem", inst / "leaf.pem", inst / "privkey.pem"
    servers = []
    try:
        ng = LeanNginx(d, certfile=full, keyfile=key, listeners={"lean": (leaf, key)}, protocols=("TLSv1.2",))
        servers.append(ng)
        mq_full = Mosquitto(d, str(full), str(key), users={"dev": "secret"})
        servers.append(mq_full)
        mq_lean = Mosquitto(d, str(leaf), str(key), users={"dev": "secret"})
        servers.append(mq_lean)
        yield {"dir": d, "chain": ch, "pins": pins, "ng": ng, "mq_full": mq_full, "mq_lean": mq_lean}
    finally:
        for s in servers:
            s.stop()


def device(store, *targets):
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_lean.py"), str(store), *targets],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def flash(store):
    """Every file of the device's pin store (the document and its copies), by name."""
    return {f.name: f.read_bytes() for f in store.parent.glob(store.name + "*")}


def presented(port):
    """The DER certificates a listener presents (CPython, no verification)."""
    from keypin_cli.tlsprobe import fetch_chain
    ch = fetch_chain(LOOPBACK, port, HOST, timeout=5)
    assert ch.complete
    return ch.certs


def test_hook_installed_a_lean_and_a_full_listener_for_one_key(site):
    ch, ng = site["chain"], site["ng"]
    full, lean = presented(ng.port), presented(ng.lean_port)
    assert full == ch.ders() and len(full) == 4  # leaf, YE1, Root YE by X2, X2 by X1
    assert lean == [ch.ders()[0]]  # the same leaf (same key) alone
    for mq in (site["mq_full"], site["mq_lean"]):
        assert len(presented(mq.port)) == (4 if mq is site["mq_full"] else 1)


def test_device_pins_and_connects_through_both_and_never_rotates(site):
    store = site["dir"] / "device-pins.json"
    store.write_bytes(site["pins"].read_bytes())
    device(store)  # first boot: the store completes its own copies (pin document v2) before any connection
    before = flash(store)
    ng, mqf, mql = site["ng"], site["mq_full"], site["mq_lean"]
    subs = {n: b.subscriber(f"keypin/lean/{n}", count=1, timeout=30) for n, b in (("mqfull", mqf), ("mqlean", mql))}
    r = device(store, f"https:full:{ng.port}", f"https:lean:{ng.lean_port}", f"mqtt:mqfull:{mqf.port}",
               f"mqtt:mqlean:{mql.port}", f"https:lean2:{ng.lean_port}")
    for n in ("full", "lean", "lean2"):
        assert r[n] == {"ok": True, "status": 200, "verdict": "active"}, r
    for n in ("mqfull", "mqlean"):
        assert r[n] == {"ok": True, "verdict": "active"}, r
        assert subs[n].result() == [(f"keypin/lean/{n}", f"via {n}".encode())]
    # never rotates: no flash write, the store is byte for byte what it was
    assert r["writes"] == 0 and flash(store) == before
    active = r["active"] if isinstance(r["active"], list) else [r["active"]]  # one pin, or a group of them
    assert active == [pin(site["chain"].key)]
    vias = [q["uri"] for q in ng.requests() if q["uri"].startswith("/checkin?via=")]
    assert sorted(vias) == ["/checkin?via=full", "/checkin?via=lean", "/checkin?via=lean2"]


def test_browsers_need_the_full_chain_listener(site):
    """A CA-verifying client (a browser) trusts the root and verifies the full chain; the lean
    listener is for pinned devices only."""
    ctx = ssl.create_default_context(cafile=str(site["chain"].files["anchor"]))
    import socket
    with socket.create_connection((LOOPBACK, site["ng"].port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname=HOST) as t:
        assert t.getpeercert()["subject"] == ((("commonName", HOST),),)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"), \
            socket.create_connection((LOOPBACK, site["ng"].lean_port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname=HOST):
        pass


def test_check_tells_the_operator_which_listener(site):
    ng, pins = site["ng"], site["pins"]
    r = keypin("check", "--host", f"{LOOPBACK}:{ng.lean_port}", "--sni", HOST, "--pinset", pins)
    assert r.returncode == 0, r.stderr
    lean_bytes = wire_certificate_message(ng.lean_port, HOST)
    assert lean_bytes == certificate_message_bytes(site["chain"].ders()[:1])
    assert r.stdout.splitlines()[0] == (f"listener: leaf only (a lean device listener): 1 certificate, "
                                        f"{lean_bytes:,}-byte Certificate message; devices verify no chain signatures")
    assert r.stdout.splitlines()[-1] == "OK: depth 0 matches the active pin of set fleet"
    r = keypin("check", "--host", f"{LOOPBACK}:{ng.port}", "--sni", HOST, "--pinset", pins)
    assert r.returncode == 0, r.stderr
    full_bytes = wire_certificate_message(ng.port, HOST)
    assert full_bytes > 3 * lean_bytes
    assert r.stdout.splitlines()[0] == (
        f"listener: full chain: 4 certificates, {full_bytes:,}-byte Certificate message; a device's mbedTLS checks "
        "3 link signatures (3 P-384) at every handshake; devices pin the leaf key only: give them a lean "
        "listener (the leaf alone, docs/operations.md)")
    r = keypin("check", "--host", f"{LOOPBACK}:{ng.lean_port}", "--sni", HOST, "--pinset", pins, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["listener"] == {"kind": "leaf-only", "certificates": 1,
                                                "certificate_message_bytes": lean_bytes, "link_signatures": []}
    r = keypin("check", "--host", f"{LOOPBACK}:{ng.port}", "--sni", HOST, "--pinset", pins, "--json")
    assert json.loads(r.stdout)["listener"] == {"kind": "full-chain", "certificates": 4,
                                                "certificate_message_bytes": full_bytes,
                                                "link_signatures": ["P-384", "P-384", "P-384"]}
    # the MQTT listeners too
    r = keypin("check", "--host", f"{LOOPBACK}:{site['mq_lean'].port}", "--sni", HOST, "--pinset", pins)
    assert r.returncode == 0 and r.stdout.startswith("listener: leaf only"), r


def test_check_keeps_chain_verifying_sets_on_the_full_chain(site, tmp_path):
    """A set with policy any (its devices run CA+pin mode): check says the lean listener refuses its
    devices, and does not send them there from the full-chain listener."""
    ch, ng = site["chain"], site["ng"]
    f = tmp_path / "any.json"
    r = keypin("pinset", "new", "--file", f, "--name", "ca", "--host", HOST, "--active", pin(ch.key),
               "--backup", pin(new_key()), "--policy", "any")
    assert r.returncode == 0, r.stderr
    r = keypin("check", "--host", f"{LOOPBACK}:{ng.lean_port}", "--sni", HOST, "--pinset", f)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(
        "; but this set's devices verify the chain (policy any or a CA anchor): they are refused here, "
        "serve them the full chain")
    r = keypin("check", "--host", f"{LOOPBACK}:{ng.port}", "--sni", HOST, "--pinset", f)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("listener: full chain: 4 certificates") and "lean" not in first


def test_ca_and_pin_devices_need_the_full_chain(site):
    """A device in CA+pin mode (cadata = the root) connects through the full-chain listener and is
    refused by the lean one: no request reaches nginx from it, the store is not written."""
    store = site["dir"] / "ca-device-pins.json"
    store.write_bytes(site["pins"].read_bytes())
    device(store)
    before = flash(store)
    ng, anchor = site["ng"], site["chain"].files["anchor"]
    r = device(store, f"https:cafull:{ng.port}::{anchor}", f"https:calean:{ng.lean_port}::{anchor}")
    assert r["cafull"] == {"ok": True, "status": 200, "verdict": "active"}, r
    assert r["calean"]["ok"] is False, r
    vias = [q["uri"] for q in ng.requests() if q["uri"].startswith("/checkin?via=ca")]
    assert vias == ["/checkin?via=cafull"]
    assert r["writes"] == 0 and flash(store) == before


def test_lean_listener_by_server_name_on_the_same_port(tmp_path):
    """The other nginx layout of docs/operations.md: one port, the device name (SNI) gets the leaf
    alone, the browsers' name the full chain; the certificate names both."""
    dev_name = "devices.example.test"
    ch = GenY.build("ecdsa", tmp_path / "issued", HOST, names=(dev_name,))
    f = tmp_path / "pins.json"
    r = keypin("pinset", "new", "--file", f, "--name", "fleet", "--host", dev_name, "--active", pin(ch.key),
               "--backup", pin(new_key()))
    assert r.returncode == 0, r.stderr
    with LeanNginx(tmp_path, certfile=ch.files["fullchain"], keyfile=ch.files["privkey"],
                   listeners={"lean": (ch.files["leaf"], ch.files["privkey"], dev_name)},
                   protocols=("TLSv1.2",)) as ng:
        assert ng.lean_port == ng.port
        from keypin_cli.tlsprobe import fetch_chain
        assert fetch_chain(LOOPBACK, ng.port, dev_name, timeout=5).certs == ch.ders()[:1]
        assert fetch_chain(LOOPBACK, ng.port, HOST, timeout=5).certs == ch.ders()
        device(f)
        before = flash(f)
        d = device(f, f"https:bysni:{ng.port}:{dev_name}")
        assert d["bysni"] == {"ok": True, "status": 200, "verdict": "active"}, d
        assert d["writes"] == 0 and flash(f) == before
        assert [q["sni"] for q in ng.requests() if q["uri"] == "/checkin?via=bysni"] == [dev_name]
        r = keypin("check", "--host", f"{LOOPBACK}:{ng.port}", "--sni", dev_name, "--pinset", f)
        assert r.returncode == 0 and r.stdout.startswith("listener: leaf only"), r


def test_lean_listener_is_no_way_around_the_pin(site, tmp_path):
    """A lean listener presenting another key's leaf is refused like any other: no request at nginx."""
    other = GenY.build("ecdsa", tmp_path / "other", HOST)
    store = tmp_path / "pins.json"
    store.write_bytes(site["pins"].read_bytes())
    device(store)
    before = flash(store)
    with LeanNginx(tmp_path, other, protocols=("TLSv1.2",)) as ng:
        r = device(store, f"https:lean:{ng.lean_port}")
        assert r["lean"]["ok"] is False and "unknown key" in r["lean"]["msg"], r
        assert not [q for q in ng.requests() if q["uri"].startswith("/checkin")]
    assert r["writes"] == 0 and flash(store) == before


def test_nginx_and_mosquitto_are_here():
    binary("nginx")
    binary("mosquitto")
