# Device tests for keypin.store: API rules, corruption, and power cuts at every step.
import json
import os

import keypin
from keypin.store import _FS, PinStore, encode

TMP = os.getenv("KEYPIN_TMP")
_n = [0]


def P(i):
    # a valid pin from a small int
    from keypin.pins import format_pin
    return format_pin(bytes([i]) * 32)


def fresh():
    _n[0] += 1
    d = "%s/store%d" % (TMP, _n[0])
    os.mkdir(d)
    return d + "/pins.json"


def _raises(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc as e:
        return str(e)
    raise AssertionError("%s not raised" % exc.__name__)


def test_new_store_is_empty_and_put_get():
    st = PinStore(fresh())
    assert st.names() == [] and st.seq == 0
    st.put("api", ["API.Example.com"], P(1), [P(2), P(3)])
    assert st.seq == 1 and st.names() == ["api"]
    s = st.get("api")
    assert s["hosts"] == ["api.example.com"] and s["active"] == P(1) and s["backups"] == [P(2), P(3)]
    assert s["policy"] == "leaf" and s["retired"] == []
    assert st.find("api.example.com") == "api" and st.find("other") is None
    st2 = PinStore(st.path)
    assert st2.get("api") == s and st2.seq == 1


def test_backup_required_unless_allowed():
    st = PinStore(fresh())
    m = _raises(keypin.StoreError, st.put, "api", ["h"], P(1), [])
    assert "brick" in m
    st.put("api", ["h"], P(1), [], allow_no_backup=True)
    assert st.get("api")["backups"] == []


def test_bad_input_rejected_clearly():
    st = PinStore(fresh())
    _raises(keypin.PinFormatError, st.put, "api", ["h"], "sha256/nope", [P(2)])
    _raises(keypin.StoreError, st.put, "api", ["h"], P(1), [P(1)])
    _raises(keypin.StoreError, st.put, "bad name!", ["h"], P(1), [P(2)])
    _raises(keypin.StoreError, st.put, "api", ["h"], P(1), [P(2)], policy="chain")
    st.put("a", ["h"], P(1), [P(2)])
    m = _raises(keypin.StoreError, st.put, "b", ["h"], P(3), [P(4)])
    assert "'h'" in m
    assert st.seq == 1  # nothing written by the refused calls


def test_retire_rules_and_retired_never_return():
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2)])
    m = _raises(keypin.StoreError, st.retire, "api", P(2))
    assert "without a backup" in m
    st.add_backup("api", P(3))
    st.retire("api", P(2))
    assert st.get("api")["retired"] == [P(2)]
    _raises(keypin.StoreError, st.add_backup, "api", P(2))
    _raises(keypin.StoreError, st.put, "api", ["h"], P(2), [P(5)])
    st.retire("api", P(1), force=True)  # retiring the active promotes backup 0
    s = st.get("api")
    assert s["active"] == P(3) and s["backups"] == [] and P(1) in s["retired"]
    st.put("api", ["h"], P(3), [P(6)])  # a later put keeps the retired list
    assert PinStore(st.path).get("api")["retired"] == [P(2), P(1)]


def test_rotate_moves_and_retires():
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2), P(3), P(4)])
    assert st.rotate("api", 1, P(3))
    s = PinStore(st.path).get("api")
    assert s["active"] == P(3) and s["backups"] == [P(4)] and s["retired"] == [P(1), P(2)]
    assert not st.rotate("api", 1, P(3))  # already there: no write
    assert st.seq == 2
    _raises(keypin.StoreError, st.rotate, "api", 0, P(9))


def _corrupt(path, how):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        if how == "flip":
            b = bytearray(data)
            b[10] ^= 1
            f.write(b)
        elif how == "torn":
            f.write(data[: len(data) // 2])
        else:
            f.write(b"")


def test_corrupt_primary_falls_back_to_previous_generation():
    for how in ("flip", "torn", "empty"):
        st = PinStore(fresh())
        st.put("api", ["h"], P(1), [P(2)])
        st.put("api", ["h"], P(1), [P(2), P(3)])
        _corrupt(st.path, how)
        st2 = PinStore(st.path)
        assert st2.seq == 1 and st2.get("api")["backups"] == [P(2)], how


def test_both_copies_corrupt_fails_closed():
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2)])
    st.put("api", ["h"], P(1), [P(2), P(3)])
    _corrupt(st.path, "flip")
    _corrupt(st.path + ".old", "torn")
    m = _raises(keypin.StoreError, PinStore, st.path)
    assert "unreadable" in m and "keypin provision" in m, m
    # and connect through it refuses too (no 'no pins' fallback)
    m = _raises(keypin.StoreError, keypin.use_store, st.path)


def test_valid_checksum_but_invalid_content_is_refused():
    path = fresh()
    doc = {"format": "keypin-pins/1", "seq": 1, "version": 0, "signer": None,
           "sets": {"api": {"hosts": ["h"], "active": P(1), "backups": [], "retired": [], "policy": "leaf"}}}
    with open(path, "wb") as f:
        f.write(encode(doc))
    m = _raises(keypin.StoreError, PinStore, path)
    assert "brick" in m


# ---- power cuts ----

class PowerCut(Exception):
    pass


class FaultFS(_FS):
    # Performs file operations step by step and cuts the power after step `cut`.
    # A write is three steps: create/truncate, a torn half write, the complete flush.
    def __init__(self, cut):
        self.cut = cut
        self.steps = 0

    def _step(self):
        self.steps += 1
        if self.steps == self.cut:
            raise PowerCut()

    def write(self, path, data):
        with open(path, "wb") as f:
            pass
        self._step()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        self._step()
        with open(path, "wb") as f:
            f.write(data)
        self._step()

    def rename(self, a, b):
        os.rename(a, b)
        self._step()

    def remove(self, path):
        os.remove(path)
        self._step()


def _state(path):
    st = PinStore(path)
    return json.dumps(st.doc["sets"])


def _copytree(src, dst):
    for n in ("", ".old", ".new"):
        try:
            with open(src + n, "rb") as f:
                d = f.read()
        except OSError:
            continue
        with open(dst + n, "wb") as f:
            f.write(d)


MUTATIONS = (
    ("put-new-set", lambda st: st.put("web", ["w"], P(20), [P(21)])),
    ("add_backup", lambda st: st.add_backup("api", P(9))),
    ("retire", lambda st: st.retire("api", P(3))),
    ("rotate", lambda st: st.rotate("api", 1, P(3))),
    ("replace", lambda st: st.replace({"format": "keypin-pins/1", "seq": 0, "version": 5, "signer": None,
                                       "sets": {"api": {"hosts": ["h"], "active": P(2), "backups": [P(7)],
                                                        "retired": [], "policy": "leaf"}}})),
)


def _setups():
    # (label, path) of starting stores: first write ever, and one with a previous generation
    p0 = fresh()
    yield "empty", p0, None
    p1 = fresh()
    st = PinStore(p1)
    st.put("api", ["h"], P(1), [P(2), P(3), P(4)])
    st.retire("api", P(4))
    st.add_backup("api", P(5))
    yield "history", p1, st


def test_power_cut_at_every_step():
    cuts = 0
    for label, base, _ in _setups():
        for mname, fn in MUTATIONS:
            if label == "empty" and mname != "put-new-set":
                continue
            old = _state(base) if label != "empty" else json.dumps({})
            old_retired = PinStore(base).doc["sets"].get("api", {}).get("retired", [])
            # the new state, from an uncut run
            ref = fresh()
            _copytree(base, ref)
            fn(PinStore(ref))
            new = _state(ref)
            assert new != old, mname
            k = 1
            while True:
                p = fresh()
                _copytree(base, p)
                fs = FaultFS(k)
                try:
                    fn(PinStore(p, fs=fs))
                    done = True
                except PowerCut:
                    done = False
                got = _state(p)
                assert got in (old, new), "%s/%s cut at step %d: third state %s" % (label, mname, k, got)
                api = PinStore(p).doc["sets"].get("api")
                if api is not None:
                    for r in old_retired:
                        assert r in api["retired"], "%s/%s step %d lost retired %s" % (label, mname, k, r)
                # a second write after the cut must work and give a consistent store
                st = PinStore(p)
                st.put("later", ["l%d" % k], P(30), [P(31)])
                assert PinStore(p).get("later")["active"] == P(30)
                if done:
                    assert got == new
                    break
                cuts += 1
                k += 1
    print("power cuts tested:", cuts)
    assert cuts >= 20, cuts
