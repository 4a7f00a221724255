"""Fault injection: a power cut after every write step (create, torn write, flush, rename,
remove) of every flash mutation: store edits, the rotation commit, a signed-update apply,
the report ring's write and clear; and after each pin-store mutation the corruption of each
current copy (P, P.2) at each part (header, JSON body, hash line, a changed pin with the old
hash, a raised seq with an attacker's pin). After each fault the state is exactly old or new, no
retired pin is lost, the device still connects to the real server, and the server holding the
retired key is refused (one bad copy never bricks the device nor revives a retired key)."""
import json
import pathlib
import subprocess

from helpers.pki import CA, new_key, pin
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"


def test_power_cuts_everywhere(tmp_path):
    ca = CA("Faults")
    keys = {n: new_key() for n in ("a", "b0", "b1")}
    files = {n: ca.write_chain(tmp_path, n, k, HOST) for n, k in keys.items()}
    work = tmp_path / "dev"
    work.mkdir()
    with TLSServer(*map(str, files["a"])) as sa, TLSServer(*map(str, files["b0"])) as sb, \
            TLSServer(*map(str, files["b1"])) as sr:
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_faults.py"), str(work),
                            str(sa.port), str(sb.port), str(sr.port), pin(keys["a"]), pin(keys["b0"]),
                            pin(keys["b1"])],
                           check=False, capture_output=True, text=True, timeout=900)
        # the checks send no application byte, least of all to the retired key's server
        assert sa.received == b"" and sb.received == b"" and sr.received == b""
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"fault injection: {r['total']} cut points: {r['cuts']}")
    print(f"corruption of one copy: {r['corrupt_total']} cases: {r['corrupt']}")
    assert r["third"] == [], r["third"]
    assert r["lost"] == [], r["lost"]
    assert r["noconnect"] == [], r["noconnect"]
    assert r["retired_accepted"] == [], r["retired_accepted"]
    assert r["corrupt_bad"] == [], r["corrupt_bad"]
    muts = {"store put (new set)", "store add_backup", "store add_active", "store join group", "store retire",
            "rotation commit", "signed update apply"}
    assert set(r["cuts"]) == muts | {"report ring write", "report ring clear"}, r["cuts"]
    for name, n in r["cuts"].items():
        assert n >= 1, name
    assert set(r["corrupt"]) == muts and all(n == 14 for n in r["corrupt"].values()), r["corrupt"]
    assert r["total"] >= 60, r


def _confirm_run(tmp_path, sets, mode, n=2, others=()):
    """dev_confirm.py against a real HTTPS server (mqtt modes: mosquitto) holding the key `sets` gets."""
    from helpers.httpserver import HTTPSServer
    from helpers.pki import pin_document2
    from helpers.realservers import Mosquitto
    ca = CA("Confirm")
    key = new_key()
    crt, k = ca.write_chain(tmp_path, "srv", key, HOST)
    st = tmp_path / "pins.json"
    st.write_bytes(pin_document2(sets(pin(key))))
    srv = Mosquitto(tmp_path, str(crt), str(k)) if mode.startswith("mqtt") else HTTPSServer(str(crt), str(k))
    try:
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_confirm.py"), str(st), HOST,
                            str(srv.port), mode, str(n), *others], check=False, capture_output=True, text=True, timeout=120)
    finally:
        srv.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stdout, pin(key)


def test_confirm_commits_a_rotation_that_empties_other_sets(tmp_path):
    # H8 "H2": the rotation retires A and B; 'mqtt' is left with no pin and 'web' without a
    # backup. Before the fix the commit failed validation, every request to the backup server
    # failed and nothing rotated, forever. Now: served, rotated, the emptied sets kept.
    A, B, W = pin(new_key()), pin(new_key()), pin(new_key())
    def sets(c):
        return {"api": {"hosts": [HOST], "active": [A], "backups": [[B], [c]], "policy": "leaf"},
                "mqtt": {"hosts": ["mq.example.test"], "active": [A], "backups": [[B]], "policy": "leaf"},
                "web": {"hosts": ["w.example.test"], "active": [W], "backups": [[A]], "policy": "leaf"}}
    r, out, c = _confirm_run(tmp_path, sets, "plain", others=["mq.example.test", "w.example.test"])
    assert r["results"][:2] == ["status 200 verdict rotated", "status 200 verdict active"], out
    # the emptied set refuses its host (fail closed); 'web' refuses a key it never had
    assert r["results"][2].startswith("mq.example.test: PinMismatch"), out
    assert r["results"][3].startswith("w.example.test: PinMismatch"), out
    assert sorted(r["retired"]) == sorted([A, B]) and r["sets"]["api"]["active"] == [c], out
    assert r["sets"]["mqtt"] == {"hosts": ["mq.example.test"], "active": [], "backups": [], "policy": "leaf",
                                 "allow_no_backup": True}, out
    assert r["sets"]["web"]["backups"] == [] and r["sets"]["web"]["allow_no_backup"] is True, out


def test_confirm_keeps_the_request_when_the_rotation_cannot_be_written(tmp_path):
    # flash full: the rotation cannot commit; the genuine response still serves the request
    # (verdict stays "backup"), one log line and a store note; nothing on flash changed
    A = pin(new_key())
    def sets(c):
        return {"api": {"hosts": [HOST], "active": [A], "backups": [[c]], "policy": "leaf"}}
    r, out, c = _confirm_run(tmp_path, sets, "full")
    assert r["results"] == ["status 200 verdict backup"] * 2, out
    assert r["seq"] == 1 and r["retired"] == [] and r["sets"]["api"]["active"] == [A], out
    assert len(r["notes"]) == 2 and "not committed" in r["notes"][0] and "ENOSPC" in r["notes"][0], r["notes"]
    assert out.count(f"keypin: rotation of set 'api' to {c} not committed") == 2, out


def test_confirm_fails_the_request_when_the_presented_key_was_retired_meanwhile(tmp_path):
    A, Z = pin(new_key()), pin(new_key())
    def sets(c):
        return {"api": {"hosts": [HOST], "active": [A], "backups": [[c], [Z]], "policy": "leaf"}}
    r, out, c = _confirm_run(tmp_path, sets, "retired", n=1)
    assert r["results"][0].startswith("StoreError: "), out
    assert c in r["retired"] and r["sets"]["api"]["active"] == [A], out


def test_mqtt_connect_releases_the_socket_when_the_presented_key_was_retired_meanwhile(tmp_path):
    # H8: mqtt.py / aio_mqtt.py leaked the TLS socket when confirm() raised after the CONNACK
    A, Z = pin(new_key()), pin(new_key())
    def sets(c):
        return {"api": {"hosts": [HOST], "active": [A], "backups": [[c], [Z]], "policy": "leaf"}}
    for mode in ("mqtt", "mqtt-aio"):
        (tmp_path / mode).mkdir()
        r, out, c = _confirm_run(tmp_path / mode, sets, mode, n=1)
        assert r["results"][0].startswith("StoreError: "), out
        assert r["results"][0].endswith("; fds +0"), out
        assert c in r["retired"] and r["sets"]["api"]["active"] == [A], out
