# Device tests for keypin.store (pin document v2): API rules, several keys in service, backup
# groups, device-wide retired pins, v1 migration, the two current copies (corruption of each
# copy at each part after each kind of mutation), one truth per file, power cuts at every step.
import json
import os

import keypin
from keypin import store as kstore
from keypin.pindoc import encode
from keypin.store import _FS, PinStore

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


def raw(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def put_raw(path, data):
    with open(path, "wb") as f:
        f.write(data)


def v1doc(sets, seq=1, version=0, signer=None):
    return encode({"format": "keypin-pins/1", "seq": seq, "version": version, "signer": signer, "sets": sets})


def test_new_store_is_empty_and_put_get():
    st = PinStore(fresh())
    assert st.names() == [] and st.seq == 0 and st.doc["retired"] == [] and st.doc["fleet"] is None
    st.put("api", ["API.Example.com"], P(1), [P(2), P(3)])
    assert st.seq == 1 and st.names() == ["api"]
    s = st.get("api")
    assert s["hosts"] == ["api.example.com"] and s["active"] == [P(1)] and s["backups"] == [[P(2)], [P(3)]]
    assert s["policy"] == "leaf" and "retired" not in s
    assert st.find("api.example.com") == "api" and st.find("other") is None
    st2 = PinStore(st.path)
    assert st2.get("api") == s and st2.seq == 1
    # both current copies hold it, byte for byte; no temporaries left
    assert raw(st.path) == raw(st.path + ".2") and raw(st.path).startswith(b"{")
    assert raw(st.path + ".new") is None and raw(st.path + ".2.new") is None
    assert json.loads(raw(st.path).split(b"\n")[0])["format"] == "keypin-pins/2"


def test_several_active_pins_and_backup_groups():
    st = PinStore(fresh())
    st.put("api", ["h"], [P(1), P(2)], [[P(3), P(4)], P(5)])
    s = st.get("api")
    assert s["active"] == [P(1), P(2)] and s["backups"] == [[P(3), P(4)], [P(5)]]
    st.add_active("api", P(6))
    st.add_backup("api", P(7), 1)  # join group 1
    st.add_backup("api", P(8))  # a new group
    s = PinStore(st.path).get("api")
    assert s["active"] == [P(1), P(2), P(6)] and s["backups"] == [[P(3), P(4)], [P(5), P(7)], [P(8)]]
    a, b, g, r = st.digests("api")
    assert a == [bytes([1]) * 32, bytes([2]) * 32, bytes([6]) * 32]
    assert b == [bytes([i]) * 32 for i in (3, 4, 5, 7, 8)] and g == [0, 0, 1, 1, 2] and r == []
    _raises(keypin.StoreError, st.add_backup, "api", P(9), 5)
    _raises(keypin.StoreError, st.add_active, "api", P(5))  # already a backup of this set
    for i in range(10, 15):
        st.add_active("api", P(i))
    m = _raises(keypin.StoreError, st.add_active, "api", P(20))
    assert "8 active" in m


def test_digests_cached_and_new_after_every_write_or_load():
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2)])
    d = st.digests("api")
    assert st.digests("api") is d
    st.add_backup("api", P(3))
    d2 = st.digests("api")
    assert d2 is not d and d2[1] == [bytes([2]) * 32, bytes([3]) * 32]
    st.load()
    assert st.digests("api") is not d2


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
    # issue 17.5: a string where a list belongs is named, not "bad pin 's'"
    m = _raises(keypin.StoreError, st.put, "api", ["h"], P(1), P(2))
    assert "must be a list" in m and "[" + repr(P(2)) + "]" in m, m
    st.put("a", ["h"], P(1), [P(2)])
    m = _raises(keypin.StoreError, st.put, "b", ["h"], P(3), [P(4)])
    assert "'h'" in m
    assert st.seq == 1  # nothing written by the refused calls


def test_retire_active_needs_force():
    # issue 12.8: retiring the key a live server still uses needs force=True
    st = PinStore(fresh())
    st.put("api", ["h"], [P(1), P(2)], [P(3)])
    m = _raises(keypin.StoreError, st.retire, "api", P(1))
    assert "in service" in m and "force=True" in m
    assert st.seq == 1 and P(1) in st.get("api")["active"]
    st.retire("api", P(1), force=True)
    assert st.get("api")["active"] == [P(2)] and st.doc["retired"] == [P(1)]
    # the last active pin: group 0 takes over
    st.retire("api", P(2), force=True)
    s = st.get("api")
    assert s["active"] == [P(3)] and s["backups"] == [] and s["allow_no_backup"] is True
    assert PinStore(st.path).doc["retired"] == [P(1), P(2)]


def test_retire_rules_and_retired_never_return():
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2)])
    m = _raises(keypin.StoreError, st.retire, "api", P(2))
    assert "without a backup" in m
    st.add_backup("api", P(3))
    st.retire("api", P(2))
    assert st.doc["retired"] == [P(2)]
    _raises(keypin.StoreError, st.add_backup, "api", P(2))
    _raises(keypin.StoreError, st.add_active, "api", P(2))
    _raises(keypin.StoreError, st.put, "api", ["h"], P(2), [P(5)])
    _raises(keypin.StoreError, st.retire, "api", P(2))  # already retired
    _raises(keypin.StoreError, st.retire, "api", P(40))  # not in the set
    st.put("api", ["h"], P(1), [P(6)])  # a later put keeps the retired list
    assert PinStore(st.path).doc["retired"] == [P(2)]


def test_retired_is_device_wide_through_rename_and_removal():
    # issue 12.4: a set's rename or removal never drops a retired pin; it returns in no set
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2), P(3)])
    st.retire("api", P(2))
    doc = st._copy()
    del doc["sets"]["api"]
    doc["sets"]["renamed"] = {"hosts": ["h"], "active": [P(1)], "backups": [[P(3)]], "policy": "leaf"}
    st.replace(doc)
    assert st.doc["retired"] == [P(2)] and st.names() == ["renamed"]
    m = _raises(keypin.StoreError, st.add_backup, "renamed", P(2))
    assert "retired" in m
    m = _raises(keypin.StoreError, st.put, "other", ["o"], P(2), [P(9)])
    assert "retired" in m
    doc = st._copy()
    doc["retired"] = []  # a replacement that forgets the retired list keeps them anyway
    st.replace(doc)
    assert PinStore(st.path).doc["retired"] == [P(2)]


def test_a_pin_shared_by_sets_leaves_every_set_when_retired():
    # SPEC (revised): one key may serve several sets (v1 documents do this); once retired, it is in none
    path = fresh()
    sets = {"dev": {"hosts": ["d"], "active": P(1), "backups": [P(2)], "retired": [P(9)], "policy": "leaf"},
            "other": {"hosts": ["o"], "active": P(1), "backups": [P(3), P(9)], "retired": [], "policy": "leaf"}}
    put_raw(path, v1doc(sets))
    st = PinStore(path)
    assert st.get("other")["backups"] == [[P(3)]]  # P(9) was retired in 'dev': retired everywhere now
    assert st.get("dev")["active"] == st.get("other")["active"] == [P(1)]
    assert st.rotate("dev", 0, P(2))
    assert PinStore(path).get("other") == {"hosts": ["o"], "active": [], "backups": [[P(3)]], "policy": "leaf"}
    d = PinStore(path).digests("other")
    assert d[0] == [] and bytes([1]) * 32 in d[3]
    st.put("third", ["t"], P(2), [P(3), P(4)])  # shared with 'dev' (active) and 'other' (backup): fine
    # retiring P(3) would leave 'other' with no key at all: refused, nothing written
    m = _raises(keypin.StoreError, st.retire, "third", P(3))
    assert "'other'" in m, m
    st.add_backup("other", P(5))
    st.retire("third", P(3))
    assert P(3) not in json.dumps(st.doc["sets"]) and st.get("other")["backups"] == [[P(5)]]


def test_rotate_retires_the_whole_group():
    st = PinStore(fresh())
    st.put("api", ["h"], [P(1), P(2)], [P(3), [P(4), P(5)], P(6)])
    assert st.rotate("api", 1, P(5))
    s = PinStore(st.path).get("api")
    assert s["active"] == [P(4), P(5)] and s["backups"] == [[P(6)]]
    assert PinStore(st.path).doc["retired"] == [P(1), P(2), P(3)]
    assert not st.rotate("api", 1, P(5))  # already there: no write
    assert not st.rotate("api", 0, P(4))
    assert st.seq == 2
    _raises(keypin.StoreError, st.rotate, "api", 0, P(9))
    _raises(keypin.StoreError, st.rotate, "api", 0, P(1))  # retired: never
    assert st.rotate("api", 0, P(6))
    assert st.get("api")["allow_no_backup"] is True


def test_v1_document_migrated_on_load_and_v2_on_next_write():
    path = fresh()
    sets = {"api": {"hosts": ["h"], "active": P(1), "backups": [P(2), P(3)], "retired": [P(4)], "policy": "leaf"},
            "web": {"hosts": ["w"], "active": P(5), "backups": [], "retired": [P(6), P(4)], "policy": "any",
                    "allow_no_backup": True}}
    put_raw(path, v1doc(sets, seq=7, version=2, signer="ed25519/x"))
    put_raw(path + ".old", v1doc(sets, seq=6))
    st = PinStore(path)
    # the first load stores the migrated document as two v2 copies; the v1 generation goes
    assert raw(path) == raw(path + ".2") and raw(path + ".old") is None and st.notes == []
    assert json.loads(raw(path).split(b"\n")[0])["format"] == "keypin-pins/2"
    assert st.seq == 7 and st.doc["version"] == 2 and st.doc["fleet"] is None
    assert st.doc["retired"] == [P(4), P(6)] or st.doc["retired"] == [P(6), P(4)]
    assert st.get("api") == {"hosts": ["h"], "active": [P(1)], "backups": [[P(2)], [P(3)]], "policy": "leaf"}
    assert st.get("web")["backups"] == [] and st.get("web")["allow_no_backup"] is True
    st.add_backup("api", P(9))
    assert json.loads(raw(path).split(b"\n")[0])["format"] == "keypin-pins/2"
    assert raw(path) == raw(path + ".2") and raw(path + ".old") is None  # the v1 generation is gone


def test_v1_fallback_to_old_is_logged_and_repaired():
    # a v1 write cut between its renames: P missing, P.old the last document
    path = fresh()
    s = {"api": {"hosts": ["h"], "active": P(1), "backups": [P(2)], "retired": [], "policy": "leaf"}}
    put_raw(path + ".old", v1doc(s, seq=1))
    st = PinStore(path)
    assert st.seq == 1 and len(st.notes) == 1 and ".old" in st.notes[0], st.notes
    assert raw(path) == raw(path + ".2") and raw(path + ".old") is None


def test_v1_store_with_a_bad_current_copy_never_falls_back_to_old():
    # H8 "H3": P.old may hold a key retired since (v1 keeps one previous generation): a P that
    # exists but is invalid fails closed with the recovery command, one flipped byte or torn
    for cut in ("flip", "torn"):
        path = fresh()
        new = {"api": {"hosts": ["h"], "active": P(2), "backups": [P(3)], "retired": [P(1)], "policy": "leaf"}}
        old = {"api": {"hosts": ["h"], "active": P(1), "backups": [P(2), P(3)], "retired": [], "policy": "leaf"}}
        d = bytearray(v1doc(new, seq=5))
        if cut == "flip":
            d[20] ^= 1
        else:
            d = d[:30]
        put_raw(path, bytes(d))
        put_raw(path + ".old", v1doc(old, seq=4))
        m = _raises(keypin.StoreError, PinStore, path)
        assert "unreadable" in m and "keypin provision" in m, m
        assert raw(path + ".2") is None  # nothing written from the old generation
    # a valid v1 P is stored as v2 at its first load: a later flipped byte in P falls back to P.2,
    # never to the v1 P.old (gone)
    path = fresh()
    put_raw(path, v1doc(new, seq=5))
    put_raw(path + ".old", v1doc(old, seq=4))
    PinStore(path)
    assert raw(path + ".old") is None and raw(path + ".2") == raw(path)
    b = bytearray(raw(path))
    b[20] ^= 1
    put_raw(path, bytes(b))
    st = PinStore(path)
    assert st.get("api")["active"] == [P(2)] and st.doc["retired"] == [P(1)] and len(st.notes) == 1


def test_v1_document_with_a_pin_retired_in_one_set_and_in_service_in_another_loads():
    # H8 "H4": v1 firmware ran this document (retired was per set); migration retires K
    # device-wide: set y is left with no pin (its hosts are refused), never a StoreError
    path = fresh()
    v1 = {"x": {"hosts": ["x"], "active": P(2), "backups": [P(3)], "retired": [P(1)], "policy": "leaf"},
          "y": {"hosts": ["y"], "active": P(1), "backups": [], "retired": [], "policy": "leaf",
                "allow_no_backup": True},
          "z": {"hosts": ["z"], "active": P(4), "backups": [P(1)], "retired": [], "policy": "leaf"}}
    put_raw(path, v1doc(v1, seq=4))
    st = PinStore(path)
    assert st.doc["retired"] == [P(1)]
    assert st.get("y") == {"hosts": ["y"], "active": [], "backups": [], "policy": "leaf", "allow_no_backup": True}
    assert st.get("z")["active"] == [P(4)] and st.get("z")["backups"] == [] and st.get("z")["allow_no_backup"]
    assert st.digests("y")[:2] == ([], [])
    assert PinStore(path).get("x")["active"] == [P(2)]  # stored as v2, loads again


# ---- corruption of a single copy ----

def corrupt(data, part):
    # each part of a document: header, JSON body, hash line, a changed pin with the old hash,
    # and a raised seq plus an attacker's pin with the old hash (only the integrity check stops it)
    b = bytearray(data)
    i = data.index(b"\n")
    if part == "header":
        b[0] ^= 0x20
    elif part == "body":
        b[i // 2] ^= 0x01
    elif part == "hash":
        j = i + 10
        b[j] = ord("0") if b[j] != ord("0") else ord("1")
    elif part == "pin":
        line = data[:i].decode()
        first = line.index("sha256/")
        line = line[:first] + P(250) + line[first + 51:]
        return line.encode() + data[i:]
    elif part == "seq":
        doc = json.loads(data[:i])
        doc["seq"] += 5
        doc["sets"] = {n: {"hosts": s["hosts"], "active": [P(250)], "backups": [[P(251)]], "policy": "leaf"}
                       for n, s in doc["sets"].items()}
        doc["retired"] = []
        return json.dumps(doc).encode() + data[i:]
    elif part == "torn":
        return bytes(data[:len(data) // 2])
    elif part == "empty":
        return b""
    return bytes(b)


PARTS = ("header", "body", "hash", "pin", "seq", "torn", "empty")
EDITS = (
    ("put", lambda st: st.put("web", ["w"], P(20), [P(21)])),
    ("add_active", lambda st: st.add_active("api", P(22))),
    ("add_backup", lambda st: st.add_backup("api", P(23))),
    ("join group", lambda st: st.add_backup("api", P(24), 0)),
    ("retire", lambda st: st.retire("api", P(3))),
    ("retire active", lambda st: st.retire("api", P(2), force=True)),
    ("rotate", lambda st: st.rotate("api", 1, P(4))),
    ("replace", lambda st: st.replace({"format": "keypin-pins/2", "seq": 0, "version": 5, "signer": None,
                                       "fleet": None, "retired": [],
                                       "sets": {"api": {"hosts": ["h"], "active": [P(3)], "backups": [[P(7)]],
                                                        "policy": "leaf"}}})),
)


def _history():
    # a store after a rotation: P(1) retired
    st = PinStore(fresh())
    st.put("api", ["h"], P(1), [P(2), P(3), P(4), P(5)])
    st.rotate("api", 0, P(2))
    st.add_backup("api", P(6))
    return st


def test_one_corrupted_copy_never_revives_a_retired_key():
    # issue 12.1: one flipped byte in the current file made the device load the previous
    # generation, where the retired key was still active
    cases = 0
    for ename, fn in EDITS:
        for victim in ("", ".2"):
            for part in PARTS:
                st = _history()
                fn(st)
                want = st.doc
                retired = list(want["retired"])
                put_raw(st.path + victim, corrupt(raw(st.path + victim), part))
                st2 = PinStore(st.path)
                where = "%s/%s/%s" % (ename, victim or "P", part)
                assert st2.doc == want, where
                assert P(1) in st2.doc["retired"] and P(250) not in json.dumps(st2.doc), where
                for r in retired:
                    assert r in st2.doc["retired"], where
                assert len(st2.notes) == 1 and "pins.json" + victim + ":" in st2.notes[0], (where, st2.notes)
                # repaired before use: both copies hold it again
                assert raw(st.path) == raw(st.path + ".2"), where
                assert PinStore(st.path).notes == [], where
                cases += 1
    print("single-copy corruption cases:", cases)
    assert cases == len(EDITS) * 2 * len(PARTS)


def test_integrity_check_refuses_a_tampered_newer_copy():
    # without the sha256 line a copy with a higher seq and an attacker's pin would win
    st = _history()
    for victim in ("", ".2"):
        put_raw(st.path + victim, corrupt(raw(st.path + victim), "seq"))
        st2 = PinStore(st.path)
        assert st2.seq == st.seq and st2.get("api")["active"] == [P(2)], st2.doc
        assert "integrity check failed" in st2.notes[0], st2.notes


def test_both_copies_corrupt_fails_closed():
    st = _history()
    put_raw(st.path, corrupt(raw(st.path), "body"))
    put_raw(st.path + ".2", corrupt(raw(st.path + ".2"), "torn"))
    m = _raises(keypin.StoreError, PinStore, st.path)
    assert "unreadable" in m and "keypin provision" in m, m
    # and connect through it refuses too (no 'no pins' fallback)
    kstore._stores.clear()
    m = _raises(keypin.StoreError, keypin.use_store, st.path)


def test_torn_first_write_is_the_empty_store():
    path = fresh()
    put_raw(path + ".new", b'{"format": "keyp')
    assert PinStore(path).names() == []
    put_raw(path, b"junk")  # a real file that is unreadable is not "first boot"
    _raises(keypin.StoreError, PinStore, path)


def test_a_fresh_provisioned_single_copy_gets_its_second_copy_quietly():
    st = _history()
    os.remove(st.path + ".2")  # keypin provision copies pins.json only
    st2 = PinStore(st.path)
    assert st2.notes == [] and raw(st.path) == raw(st.path + ".2") and st2.doc == st.doc


def test_valid_checksum_but_invalid_content_is_refused():
    path = fresh()
    doc = {"format": "keypin-pins/2", "seq": 1, "version": 0, "signer": None, "fleet": None, "retired": [],
           "sets": {"api": {"hosts": ["h"], "active": [P(1)], "backups": [], "policy": "leaf"}}}
    put_raw(path, encode(doc))
    m = _raises(keypin.StoreError, PinStore, path)
    assert "brick" in m
    doc["sets"]["api"]["backups"] = [[P(2)]]
    doc["retired"] = [P(2)]  # a retired pin in a set: never
    put_raw(path, encode(doc))
    m = _raises(keypin.StoreError, PinStore, path)
    assert "retired" in m


# ---- one truth per file ----

def test_open_gives_one_object_per_path():
    path = fresh()
    a = kstore.open(path)
    assert kstore.open(path) is a and keypin.use_store(path) is a
    import keypin.setup as ks
    assert ks._store_at(path) is a


def test_stale_store_cannot_rotate_to_a_pin_retired_elsewhere():
    # issue 12.2: the app's store and a REPL store for one file; the REPL retires a stolen backup,
    # the app (still holding the old state) then meets that backup and confirms
    path = fresh()
    app = PinStore(path)
    app.put("api", ["h"], P(1), [P(2), P(3)])
    repl = PinStore(path)
    repl.retire("api", P(2))
    m = _raises(keypin.StoreError, app.rotate, "api", 0, P(2))
    assert "not applied" in m
    assert app.seq == repl.seq and P(2) in app.doc["retired"]  # the app reloaded
    after = PinStore(path)
    assert after.doc["retired"] == [P(2)] and after.get("api")["active"] == [P(1)]
    # any other stale edit is refused, never allowed to drop the retirement
    app2 = PinStore(path)
    repl.retire("api", P(3), force=True)
    m = _raises(keypin.StoreError, app2.add_backup, "api", P(9))
    assert "changed on flash" in m and "repeat the edit" in m
    app2.add_backup("api", P(9))  # reloaded: the repeat works
    assert PinStore(path).doc["retired"] == [P(2), P(3)]


def test_open_normalises_the_path():
    # H8 "L2": one object per FILE, however the path is spelled
    path = fresh()
    d, f = path.rsplit("/", 1)
    PinStore(path).put("api", ["h"], P(1), [P(2), P(3)])
    here = os.getcwd()
    os.chdir(d)
    try:
        a = kstore.open(f)
        sub = d.rsplit("/", 1)[1]
        for alias in ("./" + f, d + "//" + f, "../" + sub + "/" + f, path, "./././" + f):
            assert kstore.open(alias) is a, alias
        assert keypin.use_store("./" + f) is a
        import keypin.setup as ks
        assert ks._store_at(d + "/./" + f) is a
    finally:
        os.chdir(here)


def test_rotation_that_empties_other_sets_commits():
    # H8 "H2": a rotation whose retired pins leave other sets without backups, or without any
    # pin, still commits (those sets get allow_no_backup; an empty set refuses its hosts)
    path = fresh()
    st = PinStore(path)
    st.put("api", ["h"], P(1), [P(2), P(3)])
    st.put("mqtt", ["m"], P(1), [P(2)])  # left with no pin at all
    st.put("web", ["w"], P(5), [P(2)])  # left without a backup
    st.put("legacy", ["l"], P(1), [], allow_no_backup=True)  # left with no pin
    assert st.rotate("api", 1, P(3)) is True
    again = PinStore(path)
    assert again.get("api")["active"] == [P(3)] and sorted(again.doc["retired"]) == sorted([P(1), P(2)])
    assert again.get("mqtt") == {"hosts": ["m"], "active": [], "backups": [], "policy": "leaf", "allow_no_backup": True}
    assert again.get("web")["active"] == [P(5)] and again.get("web")["backups"] == []
    assert again.get("web")["allow_no_backup"] is True
    assert again.get("legacy")["active"] == [] and again.digests("legacy")[:2] == ([], [])
    # (only a purge empties a set: a new one needs a pin in service)
    assert "at least one pin" in _raises(keypin.StoreError, again.put, "e", ["e"], [], [], allow_no_backup=True)
    again.add_backup("mqtt", P(9))  # the way back for an emptied set: a backup group, then a meeting
    assert PinStore(path).get("mqtt")["backups"] == [[P(9)]]


def test_rotation_drops_ca_anchors_whose_key_is_retired():
    # H8 "H2": a policy-any set whose own ca root key is retired by a rotation commits; the
    # anchor goes (another set's anchor with the retired key too)
    (d1, p1), (d2, p2) = _ca_ders()
    from binascii import b2a_base64
    b1, b2 = [b2a_base64(x).strip().decode() for x in (d1, d2)]
    path = fresh()
    st = PinStore(path)
    st.put("api", ["h"], p1, [p2], policy="any", ca=[b1, b2])
    st.put("other", ["o"], P(7), [P(8)], policy="any", ca=[b1])
    assert st.rotate("api", 0, p2) is True
    again = PinStore(path)
    assert again.get("api")["active"] == [p2] and again.get("api")["ca"] == [b2]
    assert "ca" not in again.get("other") and again.ca_ders("other") is None
    assert again.doc["retired"] == [p1]
    from keypin import tls
    m = _raises(keypin.Unsupported, tls.Attempt, "o", 443, store=again)  # fails closed, nothing sent
    assert "policy 'any'" in m, m


def _ca_ders():
    # [(DER, pin)] of the first two test-vector certificates (stand-ins for CA certificates)
    out = []
    with open(os.getenv("KEYPIN_VECTORS") + "/index.txt") as f:
        for _ in range(2):
            n, pin = f.readline().split()
            with open(os.getenv("KEYPIN_VECTORS") + "/" + n + ".der", "rb") as g:
                out.append((g.read(), pin))
    return out


class NoSpaceFS(_FS):
    # ENOSPC at the n-th write (the flash is full)
    def __init__(self, n):
        self.n = n

    def write(self, path, data):
        self.n -= 1
        if self.n == 0:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(28, "ENOSPC")
        _FS.write(self, path, data)


def test_a_failed_write_leaves_no_temporary_a_later_load_applies():
    # H8's risky spot: P.new written, P.2.new hits ENOSPC: the write is reported failed, so a
    # later load must not apply it (the retirement the caller was told failed must not happen
    # silently either way: flash and memory agree)
    for n in (1, 2):
        path = fresh()
        PinStore(path).put("api", ["h"], P(1), [P(2), P(3)])
        st = PinStore(path, NoSpaceFS(n))
        _raises(OSError, st.retire, "api", P(2))
        assert raw(path + ".new") is None and raw(path + ".2.new") is None, n
        again = PinStore(path)
        assert again.seq == st.seq == 1 and again.doc["retired"] == [] and again.notes == [], n
        assert again.get("api")["backups"] == [[P(2)], [P(3)]]


def test_stale_rotation_is_reapplied_to_the_fresh_state():
    path = fresh()
    app = PinStore(path)
    app.put("api", ["h"], P(1), [P(2), P(3)])
    repl = PinStore(path)
    repl.add_backup("api", P(4))
    assert app.rotate("api", 0, P(2))
    s = PinStore(path).get("api")
    assert s["active"] == [P(2)] and s["backups"] == [[P(3)], [P(4)]]


def test_ca_anchors():
    st = PinStore(fresh())
    assert st.ca_ders is not None
    st.put("api", ["h"], P(1), [P(2)])
    assert st.ca_ders("api") is None


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
    return json.dumps([st.doc["sets"], st.doc["retired"], st.doc["version"]])


def _copytree(src, dst):
    for n in ("", ".2", ".old", ".new", ".2.new"):
        d = raw(src + n)
        if d is not None:
            put_raw(dst + n, d)


def _setups():
    # (label, path) of starting stores: first write ever, one with history, and a v1 store
    yield "empty", fresh()
    yield "history", _history().path
    p = fresh()
    s = {"api": {"hosts": ["h"], "active": P(2), "backups": [P(3), P(4), P(5), P(6)], "retired": [P(1)],
                 "policy": "leaf"}}
    put_raw(p, v1doc(s, seq=3))
    put_raw(p + ".old", v1doc(s, seq=2))
    yield "v1", p


def test_power_cut_at_every_step():
    cuts = 0
    for label, base in _setups():
        for mname, fn in EDITS:
            if label == "empty" and mname != "put":
                continue
            old = _state(base) if label != "empty" else None
            old_retired = PinStore(base).doc["retired"]
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
                got = _state(p) if old is not None or raw(p) or raw(p + ".2") else None
                assert got in (old, new), "%s/%s cut at step %d: third state %s" % (label, mname, k, got)
                for r in old_retired:
                    assert r in PinStore(p).doc["retired"], "%s/%s step %d lost retired %s" % (label, mname, k, r)
                assert P(1) not in json.dumps(PinStore(p).doc["sets"]), (label, mname, k)
                # a second write after the cut must work and give a consistent store
                st = PinStore(p)
                st.put("later", ["l%d" % k], P(30), [P(31)])
                assert PinStore(p).get("later")["active"] == [P(30)]
                if done:
                    assert got == new
                    break
                cuts += 1
                k += 1
    print("power cuts tested:", cuts)
    assert cuts >= 100, cuts
