# Device tests for keypin.tls without a network: the Checker's decisions (several keys in
# service, backup groups, device-wide retired, policy any), refusals as negative values,
# and one verdict per handshake when two handshakes on one pin set overlap.
import os

from keypin.pins import format_pin
from keypin.sslctx import PinnedContext
from keypin.tls import ACTIVE, BACKUP, RETIRED, UNKNOWN, Attempt, Checker

TMP = os.getenv("KEYPIN_TMP")


def D(i):
    return bytes([i]) * 32




def _der(name):
    with open("%s/%s.der" % (os.getenv("KEYPIN_VECTORS"), name), "rb") as f:
        return f.read()


def _chk(active, backups, groups, retired, any_depth=False):
    return Checker(active, backups, groups, retired, any_depth)


def _run(chk, ders):
    # top of chain first, leaf (depth 0) last, as mbedTLS calls it
    r = 0
    for d in range(len(ders) - 1, -1, -1):
        r = chk.cb(memoryview(ders[d]), d)
    return r


def _pin_digest(der):
    from keypin.spki import spki_sha256
    return spki_sha256(der)


def test_any_of_several_keys_in_service_is_active():
    leaf = _der("leaf_ec256")
    d = _pin_digest(leaf)
    for active in ([d, D(1)], [D(1), d], [D(2), D(3), d]):
        c = _chk(active, [D(9)], [0], [D(8)])
        assert _run(c, [leaf]) == 0 and c.decision == ACTIVE, active
        assert format_pin(c.slots[c.md]) == format_pin(d)


def test_backup_group_index_is_the_lowest_matching_group():
    leaf = _der("leaf_ec256")
    d = _pin_digest(leaf)
    c = _chk([D(1)], [D(2), D(3), d, D(4)], [0, 0, 1, 2], [])
    assert _run(c, [leaf]) == 0 and c.decision == BACKUP and c.k == 1


def test_refusals_are_negative():
    # a positive value would read as "1 byte transferred" inside a lazy (asyncio) handshake
    leaf = _der("leaf_ec256")
    d = _pin_digest(leaf)
    c = _chk([D(1)], [D(2)], [0], [d])
    assert _run(c, [leaf]) < 0 and c.decision == RETIRED
    c = _chk([D(1)], [D(2)], [0], [])
    assert _run(c, [leaf]) < 0 and c.decision == UNKNOWN
    c = _chk([D(1)], [D(2)], [0], [])
    assert c.cb(memoryview(b"\x30\x03\x02\x01"), 0) < 0


def test_retired_wins_over_active_at_any_depth_under_policy_any():
    leaf, inter = _der("chain_leaf"), _der("chain_intermediate")
    dl, di = _pin_digest(leaf), _pin_digest(inter)
    c = _chk([dl], [D(2)], [0], [di], any_depth=True)
    assert _run(c, [leaf, inter]) < 0 and c.decision == RETIRED and c.md == 1
    c = _chk([dl], [D(2)], [0], [di], any_depth=False)  # policy leaf looks at depth 0 only
    assert _run(c, [leaf, inter]) == 0 and c.decision == ACTIVE


class _Store:
    # the part of PinStore that keypin.tls uses
    def __init__(self):
        p = format_pin(D(1))
        self.doc = {"sets": {"api": {"hosts": ["api.example.test"], "active": [p],
                                     "backups": [[format_pin(D(2))]], "policy": "leaf"}}, "retired": []}
        self.retired = []
        self.gen = 1
        self._dig = ([D(1)], [D(2)], [0], self.retired)

    def find(self, host):
        return "api" if host == "api.example.test" else None

    def get(self, name):
        return self.doc["sets"][name]

    def digests(self, name):
        return self._dig

    def ca_ders(self, name):
        return None


def test_overlapping_handshakes_on_one_set_never_share_a_verdict():
    st = _Store()
    a1 = Attempt("api.example.test", 443, store=st)
    a2 = Attempt("api.example.test", 443, store=st)  # a1's handshake is still in flight
    assert a1.chk is not a2.chk and a1.ctx is not a2.ctx
    leaf = _der("leaf_ec256")
    a1.chk.cb(memoryview(leaf), 0)  # unknown key for a1
    assert a2.chk.decision == 0  # a2 untouched
    a1.release()
    a3 = Attempt("api.example.test", 443, store=st)
    assert a3.chk is a1.chk and a3.chk.decision == 0  # the set's context again, reset
    a3.release()
    a2.release()


def test_context_resolves_a_host_or_a_set_name():
    st = _Store()
    c = PinnedContext("api", store=st)
    assert c.name == "api" and c.host == "api.example.test"
    c = PinnedContext("api.example.test", store=st)
    assert c.name == "api"
    try:
        PinnedContext("other.example.test", store=st)
    except Exception as e:
        assert type(e).__name__ == "StoreError" and "other.example.test" in str(e)
    else:
        raise AssertionError("no StoreError")


class _SS:
    closed = False

    def close(self):
        self.closed = True


def test_finish_refuses_a_key_retired_after_the_callback_accepted_it():
    # the callback ran before a rotation/update retired the key, the handshake ends after it
    leaf = _der("leaf_ec256")
    d = _pin_digest(leaf)
    st = _Store()
    st._dig = ([d], [D(2)], [0], st.retired)
    a = Attempt("api.example.test", 443, store=st)
    assert a.chk.cb(memoryview(leaf), 0) == 0 and a.chk.decision == ACTIVE
    st.retired.append(d)  # the store's live list, as PinStore.adopt updates it
    st.doc["retired"].append(format_pin(d))
    ss = _SS()
    try:
        a.finish(ss)
    except Exception as e:
        assert type(e).__name__ == "PinMismatch" and e.reason == "retired key", e
    else:
        raise AssertionError("finish() accepted a retired key")
    assert ss.closed
