# Device tests for keypin.update (signed pin-set updates) and keypin.report (the failure-report
# ring): the apply/refuse rules, the recorded reasons, signer rotation, power cuts at every
# step of an apply, and the flash-write rate limits. Signatures come from a small test-only
# Ed25519 signer over keypin.ed25519's curve code (checked against RFC 8032 below);
# signatures made by `cryptography` are checked in tests/cli/test_cli_signer.py.
import json
import os
from binascii import b2a_base64, unhexlify

import keypin
from dev_store import FaultFS, PowerCut
from keypin import ed25519 as E
from keypin.pindoc import encode
from keypin.pins import format_pin
from keypin.report import Ring
from keypin.store import _FS, PinStore
from keypin.update import Updater, check

_L = 2 ** 252 + 27742317777372353535851937790883648493
_B = E._decode((46316835694926478169428394003475163141307993866256225615783033603165251855960).to_bytes(32, "little"))


def _mul(k, p):
    q = (0, 1, 1, 0)
    while k:
        if k & 1:
            q = E._add(q, p)
        p = E._dbl(p)
        k >>= 1
    return q


def keypair(seed):
    h = E._sha512(seed)
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return a, h[32:], E._encode(_mul(a, _B))


def sign(key, msg):
    a, pre, pub = key
    r = int.from_bytes(E._sha512(pre + msg), "little") % _L
    rr = E._encode(_mul(r, _B))
    k = int.from_bytes(E._sha512(rr + pub + msg), "little") % _L
    return rr + ((r + k * a) % _L).to_bytes(32, "little")


def signer_of(key):
    return "ed25519/" + b2a_base64(key[2])[:-1].decode()


K1 = keypair(b"\x01" * 32)
K2 = keypair(b"\x02" * 32)
EVIL = keypair(b"\x03" * 32)


_n = [0]


def fresh():
    _n[0] += 1
    d = f"{os.getenv('KEYPIN_TMP')}/update{_n[0]}"
    os.mkdir(d)
    return d + "/pins.json"


def P(i):
    return format_pin(bytes([i]) * 32)


def SET(active, backups, hosts=("h",), ca=None):
    # active: an int or a list of ints; backups: ints (a group of one) or lists of ints (a group)
    act = active if isinstance(active, list) else [active]
    s = {"hosts": list(hosts), "active": [P(a) for a in act],
         "backups": [[P(x) for x in (g if isinstance(g, list) else [g])] for g in backups], "policy": "leaf"}
    if ca is not None:
        s["ca"] = ca
    return s


FLEET = "f1"


def mkstore(signer=K1, sets=None, version=0, fs=None, retired=(4,), fleet=FLEET):
    path = fresh()
    doc = {"format": "keypin-pins/2", "seq": 1, "version": version,
           "signer": signer if isinstance(signer, str) else signer_of(signer) if signer else None,
           "fleet": fleet, "retired": [P(r) for r in retired], "sets": sets or {"api": SET(1, [2])}}
    with open(path, "wb") as f:
        f.write(encode(doc))
    return PinStore(path, fs=fs)


def upd(key, version, sets, signer=None, extra=None, audience=None, retired=(), sig=None):
    body = {"format": "keypin-pins/2", "version": version, "signer": signer or signer_of(key),
            "audience": audience or {"fleet": FLEET}, "retired": [P(r) for r in retired], "sets": sets}
    if extra:
        body.update(extra)
    line = json.dumps(body).encode()
    return line + b"\ned25519:" + b2a_base64(sig or sign(key, line))[:-1] + b"\n"


def raw(path):
    with open(path, "rb") as f:
        return f.read()


def state(st):
    return json.loads(raw(st.path.rsplit("/", 1)[0] + "/keypin-state.json"))


def updater(st, device_id="dev-1", hosts=()):
    return Updater(st, st.path.rsplit("/", 1)[0] + "/keypin-state.json", log=lambda *a: None,
                   device_id=device_id, hosts=hosts)


def test_test_signer_matches_rfc8032():
    key = keypair(unhexlify("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert key[2] == unhexlify("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert sign(key, b"") == unhexlify(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


def test_valid_update_applied_and_recorded():
    st = mkstore()
    u = updater(st)
    new = {"api": SET(1, [2, 3]), "web": SET(5, [6], hosts=["w"])}
    assert u.offer(upd(K1, 1, new), "test") == "applied"
    st2 = PinStore(st.path)
    assert st2.doc["version"] == 1 and st2.seq == 2 and st2.doc["signer"] == signer_of(K1)
    assert st2.get("api")["backups"] == [[P(2)], [P(3)]] and st2.get("web")["active"] == [P(5)]
    assert st2.doc["retired"] == [P(4)] and st2.doc["fleet"] == FLEET  # kept: the update cannot drop them
    s = state(st)
    assert s["version"] == 1 and s["last"]["ok"] is True and s["last"]["via"] == "test"
    # the same update again (a retained message at every connect) changes nothing, writes nothing
    before = raw(st.path)
    assert u.offer(upd(K1, 1, new), "mqtt") == "current"
    assert updater(st).offer(upd(K1, 1, new), "mqtt") == "current"  # also after a reboot
    assert raw(st.path) == before


def _refused(st, data, want):
    before = raw(st.path)
    u = updater(st)
    assert u.offer(data, "test") == "refused"
    assert raw(st.path) == before, "store written on a refusal"
    last = state(st)["last"]
    assert last["ok"] is False and want in last["reason"], last
    assert [u.last[k] for k in ("version", "ok", "reason")] == [last[k] for k in ("version", "ok", "reason")]
    return last


def test_bad_signature_refused():
    st = mkstore()
    new = {"api": SET(1, [2, 3])}
    last = _refused(st, upd(EVIL, 1, new, signer=signer_of(K1)), "bad signature")
    assert last["version"] == 1
    d = bytearray(upd(K1, 1, new))
    d[d.index(b'"h"') + 1] = ord("x")  # one byte of the signed line changed
    _refused(st, bytes(d), "bad signature")
    assert PinStore(st.path).doc["version"] == 0


def test_old_or_equal_version_refused():
    st = mkstore()
    u = updater(st)
    assert u.offer(upd(K1, 2, {"api": SET(1, [2, 3])}), "test") == "applied"
    _refused(st, upd(K1, 1, {"api": SET(1, [2, 5])}), "not newer than the device's 2")
    _refused(st, upd(K1, 2, {"api": SET(1, [2, 6])}), "not newer")
    assert PinStore(st.path).get("api")["backups"] == [[P(2)], [P(3)]]


def test_retired_pin_refused_in_any_role_and_set():
    for sets in ({"api": SET(1, [2, 4])}, {"api": SET(4, [2])}, {"api": SET([1, 4], [2])},
                 {"api": SET(1, [[2, 4]])}, {"api": SET(1, [2]), "other": SET(7, [4], hosts=["o"])}):
        st = mkstore()
        last = _refused(st, upd(K1, 1, sets), "was retired")
        assert P(4) in last["reason"]


def test_retired_pins_survive_a_set_rename_and_never_return():
    # issue 12.4: update N renames the set; update N+1 lists the retired key as a backup
    st = mkstore()
    u = updater(st)
    assert u.offer(upd(K1, 1, {"renamed": SET(1, [2, 3])}), "test") == "applied"
    assert PinStore(st.path).doc["retired"] == [P(4)]
    _refused(st, upd(K1, 2, {"renamed": SET(1, [2, 4])}), "was retired")
    _refused(st, upd(K1, 2, {"again": SET(4, [2])}), "was retired")
    # the operator's retired list is added to the device's (union); it may not name a pin in use
    assert u.offer(upd(K1, 3, {"renamed": SET(1, [3])}, retired=(2, 9)), "test") == "applied"
    assert PinStore(st.path).doc["retired"] == [P(2), P(9), P(4)]
    _refused(st, upd(K1, 4, {"renamed": SET(1, [3])}, retired=(3,)), "invalid")


def test_update_for_another_fleet_or_device_refused():
    # issue 12.3: two fleets share a signer; fleet A's genuine update reaches fleet B's devices
    st = mkstore()
    last = _refused(st, upd(K1, 1, {"api": SET(1, [2, 3])}, audience={"fleet": "A"}), "not for this device")
    assert "fleet 'A'" in last["reason"] and "'f1'" in last["reason"], last
    _refused(st, upd(K1, 1, {"api": SET(1, [2, 3])}, audience={"fleet": FLEET, "devices": ["dev-2"]}),
             "device 'dev-1'")
    assert updater(st).offer(upd(K1, 1, {"api": SET(1, [2, 3])},
                                 audience={"fleet": FLEET, "devices": ["dev-2", "dev-1"]}), "t") == "applied"
    # a device in no fleet takes no update at all
    st = mkstore(fleet=None)
    last = _refused(st, upd(K1, 1, {"api": SET(1, [2, 3])}), "not for this device")
    assert "no fleet" in last["reason"]
    # v1 updates name no audience: malformed
    line = json.dumps({"format": "keypin-pins/1", "version": 1, "signer": signer_of(K1),
                       "sets": {"api": {"hosts": ["h"], "active": P(1), "backups": [P(2)], "retired": [],
                                        "policy": "leaf"}}}).encode()
    _refused(mkstore(), line + b"\ned25519:" + b2a_base64(sign(K1, line))[:-1], "malformed")


def test_update_that_strands_a_configured_host_refused():
    # issue 12.3: the device's own hosts (MQTT, check-in, update URL) must stay in some set
    st = mkstore(sets={"api": SET(1, [2]), "mq": SET(5, [6], hosts=["broker"])})
    u = updater(st, hosts=("broker", "h"))
    assert u.offer(upd(K1, 1, {"api": SET(1, [2, 3])}), "test") == "refused"
    assert u.last["reason"] == "host 'broker' would be in no pin set", u.last
    assert PinStore(st.path).doc["version"] == 0
    assert u.offer(upd(K1, 1, {"api": SET(1, [2, 3]), "mq2": SET(7, [8], hosts=["broker"])}), "t") == "applied"


def test_update_making_a_configured_host_unconnectable_refused():
    # H8 "M3": policy "any" without "ca" cannot connect unless the app gives cadata: an update
    # that does this to a host the device must reach is refused (nothing changed)
    st = mkstore(sets={"api": SET(1, [2])})
    bad = dict(SET(1, [2]), policy="any")
    before = raw(st.path)
    u = updater(st, hosts=("h",))
    assert u.offer(upd(K1, 1, {"api": bad}), "t") == "refused", u.last
    assert u.last["reason"] == "host 'h' would be unconnectable: set 'api' has policy 'any' without 'ca' " \
        "and the app has no cadata", u.last
    assert raw(st.path) == before and PinStore(st.path).get("api")["policy"] == "leaf"
    # with the app's cadata, or for a host the device does not need, the same update is fine
    u = Updater(st, st.path.rsplit("/", 1)[0] + "/keypin-state.json", log=lambda *a: None,
                device_id="dev-1", hosts=("h",), cadata=True)
    assert u.offer(upd(K1, 1, {"api": bad}), "t") == "applied"
    st2 = mkstore(sets={"api": SET(1, [2]), "mq": SET(5, [6], hosts=["broker"])})
    assert updater(st2, hosts=("broker",)).offer(upd(K1, 1, {"api": bad, "mq": SET(5, [6], hosts=["broker"])}),
                                                 "t") == "applied"


def test_a_migrated_store_takes_its_fleets_update_once_the_fleet_is_set():
    # H8 "M4": a v1 store migrates with fleet null (every update refused); set_fleet (ks.fleet,
    # or the app from config update.fleet) makes it take its fleet's updates
    st = mkstore(fleet=None)
    _refused(st, upd(K1, 1, {"api": SET(1, [2, 3])}), "device is in no fleet")
    st.set_fleet(FLEET)
    assert updater(st).offer(upd(K1, 1, {"api": SET(1, [2, 3])}), "t") == "applied"
    assert PinStore(st.path).doc["fleet"] == FLEET


def test_weak_signer_refused():
    # issue 12.5: the identity point as signer: R = identity, S = 0 "verifies" any message
    ident = "ed25519/" + b2a_base64(b"\x01" + bytes(31))[:-1].decode()
    forged = b"\x01" + bytes(63)
    st = mkstore(signer=ident)
    _refused(st, upd(K1, 1, {"api": SET(9, [8])}, signer=ident, sig=forged), "bad signer on the device")
    assert PinStore(st.path).get("api")["active"] == [P(1)]
    # and an update cannot install one
    _refused(mkstore(), upd(K1, 1, {"api": SET(1, [2])}, signer=ident), "bad signer")
    from keypin.update import signer_key
    for bad in (ident, "ed25519/" + b2a_base64(bytes(32))[:-1].decode()):
        try:
            signer_key(bad)
        except ValueError as e:
            assert "small order" in str(e) or "canonical" in str(e), e
        else:
            raise AssertionError(bad)


def _ca_ders():
    from dev_store import _ca_ders as ders  # (tests/device is on the path: tests/device/runner.py)
    return ders()


def test_ca_anchors_added_replaced_removed_by_update():
    # issue 15.4: a set's CA certificates travel in signed updates under the same rules
    (der, capin), (der2, _) = _ca_ders()
    b64, b64b = b2a_base64(der)[:-1].decode(), b2a_base64(der2)[:-1].decode()
    st = mkstore()
    u = updater(st)
    assert u.offer(upd(K1, 1, {"api": SET(1, [2], ca=[b64])}), "t") == "applied"
    st2 = PinStore(st.path)
    assert st2.ca_ders("api") == [der] and st2.ca_ders("api") is st2.ca_ders("api")
    assert u.offer(upd(K1, 2, {"api": SET(1, [2], ca=[b64b])}), "t") == "applied"
    assert PinStore(st.path).ca_ders("api") == [der2]
    assert u.offer(upd(K1, 3, {"api": SET(1, [2])}), "t") == "applied"
    assert PinStore(st.path).ca_ders("api") is None
    # a CA whose key is retired on the device is refused
    from keypin.pins import parse_pin
    st = mkstore(retired=(4,))
    doc = st._copy()
    doc["retired"].append(capin)
    st.replace(doc)
    parse_pin(capin)
    last = _refused(st, upd(K1, 1, {"api": SET(1, [2], ca=[b64])}), "was retired")
    assert capin in last["reason"]
    _refused(mkstore(), upd(K1, 1, {"api": SET(1, [2], ca=["not base64!"])}), "invalid")


def test_set_without_backup_refused():
    st = mkstore()
    s = SET(1, [])
    _refused(st, upd(K1, 1, {"api": s}), "no backup group")
    s["allow_no_backup"] = True  # an update may not insist
    _refused(st, upd(K1, 1, {"api": s, "web": SET(5, [6], hosts=["w"])}), "no backup group")


def test_no_signer_on_the_device_refused():
    st = mkstore(signer=None)
    _refused(st, upd(K1, 1, {"api": SET(1, [2, 3])}), "no signer")


def test_malformed_refused():
    st = mkstore()
    good = upd(K1, 1, {"api": SET(1, [2, 3])})
    line, sig = good.split(b"\n")[:2]
    for data, want in ((b"garbage", "malformed"), (line, "malformed"), (line + b"\n", "malformed"),
                       (line + b"\ned25519:AAAA\n", "malformed"), (line + b"\n" + sig + b"\nmore\n", "malformed"),
                       (b"[1]\n" + sig, "malformed"), (good + b" " * 9000, "malformed"),
                       (upd(K1, 1, {"api": SET(1, [2, 3])}, extra={"seq": 9}), "malformed"),
                       (upd(K1, 1, {"api": SET(1, [2, 3])}, signer="ed25519/AAAA"), "bad signer"),
                       (upd(K1, 1, {}), "malformed"),
                       (upd(K1, "2", {"api": SET(1, [2, 3])}), "not newer"),
                       (upd(K1, 1, {"bad name!": SET(1, [2, 3])}), "invalid"),
                       (upd(K1, 1, {"api": dict(SET(1, [2, 3]), hosts=7)}), "malformed"),
                       (upd(K1, 1, {"api": dict(SET(1, [2, 3]), active=P(1))}), "malformed"),
                       (upd(K1, 1, {"api": dict(SET(1, [2, 3]), backups=[P(2)])}), "malformed"),
                       (upd(K1, 1, {"api": SET(1, [2, 3])}, audience={"fleet": 3}), "malformed"),
                       (upd(K1, 1, {"api": SET(1, [2, 3])}, audience={"fleet": FLEET, "x": 1}), "malformed"),
                       (upd(K1, 1, {"api": SET(1, [2, 3])}, extra={"retired": "x"}), "malformed")):
        try:
            check(st, data)
        except keypin.KeypinError as e:
            assert want in str(e), (data[:40], str(e))
        else:
            raise AssertionError(f"accepted: {data[:60]!r}")
    assert line + b"\n" + sig == good[:-1]
    assert check(st, good[:-1])["version"] == 1  # the final newline is optional


def test_signer_rotation():
    st = mkstore()
    u = updater(st)
    assert u.offer(upd(K1, 1, {"api": SET(1, [2, 3])}, signer=signer_of(K2)), "test") == "applied"
    assert PinStore(st.path).doc["signer"] == signer_of(K2)
    # the old signer is no longer trusted, the new one is
    assert u.offer(upd(K1, 2, {"api": SET(1, [2, 5])}), "test") == "refused"
    assert "bad signature" in u.last["reason"]
    assert u.offer(upd(K2, 2, {"api": SET(1, [2, 5])}), "test") == "applied"
    # an update not signed by the current signer cannot name a new one
    assert u.offer(upd(EVIL, 3, {"api": SET(1, [2, 5])}, signer=signer_of(EVIL)), "test") == "refused"
    assert PinStore(st.path).doc["signer"] == signer_of(K2)


class CountFS(_FS):
    def __init__(self):
        self.writes = 0

    def write(self, path, data):
        self.writes += 1
        _FS.write(self, path, data)


def test_refusals_written_once_per_reason_and_bounded_per_boot():
    fs = CountFS()
    st = mkstore(fs=fs)
    fs.writes = 0  # (the load made the second copy of the provisioned document)
    u = updater(st)
    bad = upd(EVIL, 1, {"api": SET(1, [2, 3])}, signer=signer_of(K1))
    for _ in range(5):
        assert u.offer(bad, "mqtt") == "refused"
    assert fs.writes == 1
    for v in range(2, 30):  # a flood of different refusals
        u.offer(upd(EVIL, v, {"api": SET(1, [2, 3])}, signer=signer_of(K1)), "mqtt")
    assert fs.writes == 4, fs.writes
    assert u.state["refused"] == 33 and u.last["version"] == 29  # counted in RAM


def _docstate(path):
    st = PinStore(path)
    return json.dumps([st.doc["version"], st.doc["signer"], st.doc["sets"]])


def test_power_cut_at_every_step_of_an_apply():
    new = upd(K1, 1, {"api": SET(1, [2, 3]), "web": SET(5, [6], hosts=["w"])}, signer=signer_of(K2))
    cuts = 0
    for history in (False, True):
        k = 1
        while True:
            st = mkstore()
            if history:  # a previous generation (.old) on flash too
                st.add_backup("api", P(9))
            old = _docstate(st.path)
            ref = mkstore()
            if history:
                ref.add_backup("api", P(9))
            updater(ref).offer(new, "test")
            want = _docstate(ref.path)
            fs = FaultFS(k)
            st = PinStore(st.path, fs=fs)
            try:
                r = Updater(st, st.path.rsplit("/", 1)[0] + "/keypin-state.json", log=lambda *a: None).offer(new)
                done = True
            except PowerCut:
                done = False
            got = _docstate(st.path)
            assert got in (old, want), f"cut at step {k}: a third state {got}"
            assert P(4) in PinStore(st.path).doc["retired"]
            # after the reboot the update is offered again: the store ends at the new document
            u = updater(PinStore(st.path))
            r = u.offer(new, "retry")
            assert _docstate(st.path) == want, (k, r)
            assert r in ("applied", "current") or (r == "refused" and got == want), (k, r)
            if done:
                break
            cuts += 1
            k += 1
    print("power cuts tested:", cuts)
    assert cuts >= 10, cuts


# ---- the failure-report ring ----

class _Mismatch:
    def __init__(self, i):
        self.host, self.port, self.pinset, self.reason = "h", 8883, "api", "unknown key"
        self.chain = [(1, P(50)), (0, P(60 + i))]


def test_report_ring_bounded_rate_limited_and_cleared():
    st = mkstore()
    fs = CountFS()
    path = st.path.rsplit("/", 1)[0] + "/keypin-reports.json"
    r = Ring(path, st, size=3, min_interval=3600, max_writes=2, fs=fs)
    for i in range(10):
        r.record(_Mismatch(i))
    assert fs.writes == 1  # the first report; the rest wait in RAM (min_interval)
    assert len(r.items) == 3 and r.dropped == 7 and r.unsaved == 9
    p = json.loads(r.payload("dev"))
    assert p["device"] == "dev" and p["dropped"] == 7
    assert [x["chain"][1][1] for x in p["reports"]] == [P(67), P(68), P(69)]
    x = p["reports"][0]
    assert x["host"] == "h" and x["port"] == 8883 and x["reason"] == "unknown key"
    assert x["pins"] == {"active": [P(1)], "backups": [[P(2)]]} and "keypin" in x["fw"]
    # after a reboot the flash holds the first report only
    r2 = Ring(path, st, fs=_FS())
    assert len(r2.items) == 1 and r2.items[0]["chain"][1][1] == P(60)
    r.min_ms = 0
    assert r.flush() and fs.writes == 2
    r.record(_Mismatch(10))
    assert fs.writes == 2  # max_writes per boot reached: counted in RAM only
    assert Ring(path, st, fs=_FS()).dropped == 7
    r.clear()
    assert not r.pending() and not Ring(path, st, fs=_FS()).pending()
    r.clear()  # nothing on flash: no write, no error


def test_store_fallback_is_recorded_in_the_report_ring():
    st = mkstore()
    st.add_backup("api", P(3))  # two copies on flash now
    b = bytearray(raw(st.path))
    b[5] ^= 1
    with open(st.path, "wb") as f:
        f.write(b)
    st2 = PinStore(st.path)
    assert len(st2.notes) == 1
    fs = CountFS()
    r = Ring(st.path.rsplit("/", 1)[0] + "/keypin-reports.json", st2, min_interval=0, fs=fs)
    assert r.pending() and r.items[0]["reason"] == st2.notes[0] and "integrity" in r.items[0]["reason"]
    assert r.flush() and fs.writes == 1
    assert not r.notes()  # recorded once
