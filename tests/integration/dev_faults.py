# Device side of test_faults.py: power cuts at every write step of every flash mutation
# (store edits, rotation commit, signed-update apply, report ring write and clear), and after
# each mutation the corruption of each current copy (P, P.2) at each part (header, JSON body,
# hash line, a changed pin with the old hash, a raised seq with an attacker's pin). After each
# fault the state must be exactly the old or the new one, no retired pin may be lost, the
# device must still connect to the real server (a TLS server on loopback), and the server
# holding the retired key must be refused.
#   dev_faults.py WORKDIR PORT_ACTIVE PORT_B0 PORT_B1 PIN_ACTIVE PIN_B0 PIN_B1
import json
import os
import sys

sys.path.insert(0, sys.argv[0].rsplit("/", 2)[0] + "/device")
import keypin
from dev_store import PARTS, FaultFS, PowerCut, corrupt, raw
from dev_update import K1, P, signer_of, upd
from keypin.pindoc import encode
from keypin.report import Ring
from keypin.store import PinStore
from keypin.update import Updater

W, PA, PB, PR = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
A, B0, B1 = sys.argv[5], sys.argv[6], sys.argv[7]
HOST = "device.example.test"
from keypin import tls

tls.resolve[HOST] = "127.0.0.1"
_n = [0]


def fresh():
    _n[0] += 1
    d = "%s/f%d" % (W, _n[0])
    os.mkdir(d)
    return d


def base():
    # a store with a provisioned signer and fleet, and some history
    d = fresh()
    with open(d + "/pins.json", "wb") as f:
        f.write(encode({"format": "keypin-pins/2", "seq": 1, "version": 0, "signer": signer_of(K1), "fleet": "f1",
                        "retired": [], "sets": {"api": {"hosts": [HOST], "active": [A], "backups": [[B0], [B1]],
                                                        "policy": "leaf"}}}))
    st = PinStore(d + "/pins.json")
    st.retire("api", B1, force=True)  # B1 retired: it must never be lost
    st.add_backup("api", P(77))
    return d


def ring(d, fs=None):
    return Ring(d + "/keypin-reports.json", None, size=4, min_interval=0, max_writes=99, fs=fs)


class _E:
    host, port, pinset, reason, chain = HOST, 443, "api", "unknown key", [(0, P(66))]


UPDATE = upd(K1, 5, {"api": {"hosts": [HOST], "active": [A], "backups": [[B0], [P(78)]], "policy": "leaf"}})


def m_ring_write(d, fs):
    ring(d, fs).record(_E())


def m_ring_clear(d, fs):
    r = ring(d, fs)
    r.clear()


MUT = (
    ("store put (new set)", lambda d, fs: PinStore(d + "/pins.json", fs=fs).put("web", ["w"], P(20), [P(21)]), PA),
    ("store add_backup", lambda d, fs: PinStore(d + "/pins.json", fs=fs).add_backup("api", P(79)), PA),
    ("store add_active", lambda d, fs: PinStore(d + "/pins.json", fs=fs).add_active("api", P(80)), PA),
    ("store join group", lambda d, fs: PinStore(d + "/pins.json", fs=fs).add_backup("api", P(81), 0), PA),
    ("store retire", lambda d, fs: PinStore(d + "/pins.json", fs=fs).retire("api", P(77)), PA),
    ("rotation commit", lambda d, fs: PinStore(d + "/pins.json", fs=fs).rotate("api", 0, B0), PB),
    ("signed update apply", lambda d, fs: Updater(PinStore(d + "/pins.json", fs=fs), d + "/keypin-state.json",
                                                  log=lambda *a: None).offer(UPDATE), PA),
    ("report ring write", m_ring_write, PA),
    ("report ring clear", m_ring_clear, PA),
)


def snapshot(d):
    st = PinStore(d + "/pins.json")
    r = ring(d)
    # a report's time ("t") is when it was recorded, not part of the state being compared
    items = [[x.get(k) for k in ("host", "port", "set", "reason", "chain")] for x in r.items]
    return json.dumps([st.doc["version"], st.doc["sets"], st.doc["retired"], items, r.dropped])


def copy(src, dst):
    for n in sorted(os.listdir(src)):
        with open(src + "/" + n, "rb") as f:
            data = f.read()
        with open(dst + "/" + n, "wb") as f:
            f.write(data)


def check(where, d, port, out):
    # the device connects to its server and refuses the one holding the retired key
    st = PinStore(d + "/pins.json")
    if B1 not in st.doc["retired"]:
        out["lost"].append(where)
    try:
        s = keypin.connect(HOST, port, store=st, timeout=10)
        s.close()  # no confirm: the check must not write
    except Exception as e:
        out["noconnect"].append("%s: %r" % (where, e))
    try:
        s = keypin.connect(HOST, PR, store=st, timeout=10)
        s.close()
        out["retired_accepted"].append(where)
    except keypin.PinMismatch as e:
        if e.reason != "retired key":
            out["retired_accepted"].append("%s: %s" % (where, e.reason))
    return st


out = {"cuts": {}, "third": [], "lost": [], "noconnect": [], "retired_accepted": [], "corrupt": {},
       "corrupt_bad": []}
for name, fn, port in MUT:
    b = base()
    if name == "report ring clear":
        ring(b).record(_E())  # something to clear
    old = snapshot(b)
    ref = fresh()
    copy(b, ref)
    fn(ref, None)
    new = snapshot(ref)
    if new == old:
        out["third"].append(name + ": the mutation changed nothing")
    k = 1
    while True:
        d = fresh()
        copy(b, d)
        fs = FaultFS(k)
        try:
            fn(d, fs)
            done = True
        except PowerCut:
            done = False
        got = snapshot(d)
        if got not in (old, new):
            out["third"].append("%s step %d: %s" % (name, k, got))
        check("%s step %d" % (name, k), d, port, out)
        if done:
            break
        out["cuts"][name] = k
        k += 1
    if not name.startswith("store") and name not in ("rotation commit", "signed update apply"):
        continue
    # one corrupted current copy after this mutation: the other copy is used, logged, repaired
    n = 0
    for victim in ("", ".2"):
        for part in PARTS:
            d = fresh()
            copy(ref, d)
            path = d + "/pins.json" + victim
            bad = corrupt(raw(path), part)
            with open(path, "wb") as f:
                f.write(bad)
            where = "%s, %s %s" % (name, "P" if not victim else "P.2", part)
            try:
                got = snapshot(d)
            except Exception as e:  # bricked by one bad copy
                out["corrupt_bad"].append("%s: %r" % (where, e))
                continue
            st = check(where, d, port, out)
            if got != new or st.notes:  # the first load noted and repaired it
                out["corrupt_bad"].append("%s: state %s notes %s" % (where, got != new, st.notes))
            if raw(d + "/pins.json") != raw(d + "/pins.json.2"):
                out["corrupt_bad"].append(where + ": not repaired")
            n += 1
    out["corrupt"][name] = n
out["total"] = sum(out["cuts"].values())
out["corrupt_total"] = sum(out["corrupt"].values())
print(json.dumps(out))
