"""keypin pinset: the pin document v2 format exactly (docs/pin-document.md), v1 migration, edits
(several pins in service, backup groups, device-wide retired), refusals, corruption."""
import base64
import hashlib
import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

P = ["sha256/" + base64.b64encode(hashlib.sha256(bytes([i])).digest()).decode() for i in range(8)]


def read_doc(path):
    data = path.read_bytes()
    line1, line2, rest = data.split(b"\n")
    assert rest == b""
    assert line2 == b"sha256:" + hashlib.sha256(line1).hexdigest().encode()
    return json.loads(line1)


def new(kp, f, *extra):
    return kp("pinset", "new", "--file", f, "--name", "api", "--host", "API.example.test",
              "--host", "mqtt.example.test", "--active", P[0], "--backup", P[1], "--backup", P[2], *extra)


def test_new_writes_the_exact_format(kp, tmp_path):
    f = tmp_path / "pins.json"
    r = new(kp, f)
    assert r.rc == 0, r
    assert r.out.startswith(f"wrote {f} (seq 1)\nset api (policy leaf)\n")
    data = f.read_bytes()
    line1 = data.split(b"\n")[0]
    assert data == line1 + b"\nsha256:" + hashlib.sha256(line1).hexdigest().encode() + b"\n"
    assert list(json.loads(line1)) == ["format", "seq", "version", "signer", "fleet", "retired", "sets"]
    assert json.loads(line1) == {
        "format": "keypin-pins/2", "seq": 1, "version": 0, "signer": None, "fleet": None, "retired": [],
        "sets": {"api": {"hosts": ["api.example.test", "mqtt.example.test"], "active": [P[0]],
                         "backups": [[P[1]], [P[2]]], "policy": "leaf"}}}
    assert oct(os.stat(f).st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["pins.json"]  # no temp file left behind


def test_keys_as_pins_and_order_kept(kp, pki, tmp_path):
    keys = [pki.key("ec") for _ in range(4)]
    files = [pki.write(f"k{i}.pub", pki.pub_pem(k)) for i, k in enumerate(keys)]
    f = tmp_path / "pins.json"
    r = kp("pinset", "new", "--file", f, "--name", "s1", "--host", "h.test", "--active-key", files[0],
           "--backup", pki.pin(keys[1]), "--backup-key", files[2], "--backup", pki.pin(keys[3]), "--policy", "any")
    assert r.rc == 0, r
    s = read_doc(f)["sets"]["s1"]
    assert s["active"] == [pki.pin(keys[0])]
    assert s["backups"] == [[pki.pin(k)] for k in keys[1:]]
    assert s["policy"] == "any"
    assert "policy any but no CA certificate" in r.err  # warned like keypin image (issue 17 Add 6)


def test_several_keys_in_service_and_backup_groups(kp, tmp_path):
    f = tmp_path / "pins.json"
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "api.test", "--active", P[0], "--active", P[1],
           "--backup", P[2], "--fleet", "plant-a")
    assert r.rc == 0, r
    d = read_doc(f)
    assert d["fleet"] == "plant-a" and d["sets"]["api"]["active"] == [P[0], P[1]]
    r = kp("pinset", "add-backup", "--file", f, "--set", "api", P[3], "--group", "1")
    assert r.rc == 0, r
    r = kp("pinset", "add-backup", "--file", f, "--set", "api", P[4])
    assert r.rc == 0 and f"  backup 1: {P[2]}, {P[3]}\n  backup 2: {P[4]}\n" in r.out, r
    r = kp("pinset", "add-backup", "--file", f, "--set", "api", P[5], "--group", "3")
    assert r.rc == 1 and "no backup group 3 (it has 2" in r.err
    r = kp("pinset", "add-active", "--file", f, "--set", "api", P[5])
    assert r.rc == 0 and read_doc(f)["sets"]["api"]["active"] == [P[0], P[1], P[5]], r
    r = kp("pinset", "add-active", "--file", f, "--set", "api", P[2])
    assert r.rc == 1 and "already in set api" in r.err
    r = kp("pinset", "new", "--file", f, "--name", "b", "--host", "b.test", "--active", P[6], "--backup", P[7],
           "--fleet", "plant-b")
    assert r.rc == 1 and "is for fleet 'plant-a', not 'plant-b'" in r.err
    assert read_doc(f)["seq"] == 4


def test_retire_in_service_needs_force(kp, tmp_path):
    # issue 12.8: the key a live server uses is retired only with --force
    f = tmp_path / "pins.json"
    new(kp, f)
    before = f.read_bytes()
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[0])
    assert r.rc == 1 and r.err.startswith(f"keypin: pinset: {P[0]} is in service in set api") and "--force" in r.err
    assert f.read_bytes() == before
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[0], "--force")
    assert r.rc == 0, r
    d = read_doc(f)
    assert d["sets"]["api"]["active"] == [P[1]] and d["retired"] == [P[0]]


def test_v1_document_is_migrated_and_written_as_v2(kp, tmp_path):
    f = tmp_path / "pins.json"
    v1 = {"format": "keypin-pins/1", "seq": 4, "version": 2, "signer": None,
          "sets": {"api": {"hosts": ["a.test"], "active": P[0], "backups": [P[1], P[2]], "retired": [P[3]],
                           "policy": "leaf"},
                   "web": {"hosts": ["w.test"], "active": P[0], "backups": [P[4]], "retired": [P[5]],
                           "policy": "leaf"}}}
    line = json.dumps(v1).encode()
    f.write_bytes(line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n")
    r = kp("pinset", "show", "--file", f, "--json")
    assert r.rc == 0, r
    j = json.loads(r.out)
    assert j["command"] == "pinset show" and j["format"] == "keypin-pins/2" and j["fleet"] is None
    assert j["retired"] == [P[3], P[5]] and j["sets"]["api"]["backups"] == [[P[1]], [P[2]]]
    assert j["sets"]["web"]["active"] == [P[0]]  # one key serving two sets: allowed
    assert f.read_bytes().startswith(line)  # show writes nothing
    assert kp("pinset", "set-fleet", "--file", f, "--fleet", "plant-a").rc == 0
    d = read_doc(f)
    assert d["format"] == "keypin-pins/2" and d["seq"] == 5 and d["fleet"] == "plant-a"
    # a retired pin leaves every set
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[0], "--force")
    assert r.rc == 0 and "also leaves set web" in r.err, r
    d = read_doc(f)
    assert d["sets"]["web"]["active"] == [] and d["sets"]["web"]["backups"] == [[P[4]]]


def test_seq_grows_on_every_write_and_edits(kp, tmp_path):
    f = tmp_path / "pins.json"
    assert new(kp, f).rc == 0
    r = kp("pinset", "add-backup", "--file", f, "--set", "api", P[3])
    assert r.rc == 0, r
    d = read_doc(f)
    assert d["seq"] == 2 and d["sets"]["api"]["backups"] == [[P[1]], [P[2]], [P[3]]]
    # retire a backup
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[2])
    assert r.rc == 0, r
    d = read_doc(f)
    assert d["seq"] == 3 and d["sets"]["api"]["backups"] == [[P[1]], [P[3]]] and d["retired"] == [P[2]]
    # retiring the active pin (with --force) promotes backup 1
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[0], "--force")
    assert r.rc == 0, r
    assert f"backup 1 ({P[1]}) is now in service in set api" in r.err
    d = read_doc(f)
    s = d["sets"]["api"]
    assert (s["active"], s["backups"], d["retired"]) == ([P[1]], [[P[3]]], [P[2], P[0]])
    # a retired pin can never come back
    r = kp("pinset", "add-backup", "--file", f, "--set", "api", P[0])
    assert r.rc == 1 and "is retired: a retired key is never trusted again" in r.err
    # leaving no backup is refused (nothing written) unless --force
    before = f.read_bytes()
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[3])
    assert r.rc == 1 and r.err.startswith("keypin: pinset: retiring ") and "without a backup pin" in r.err
    assert f.read_bytes() == before
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[3], "--force")
    assert r.rc == 0, r
    d = read_doc(f)
    assert d["seq"] == 5
    assert d["sets"]["api"]["backups"] == [] and d["sets"]["api"]["allow_no_backup"] is True
    assert "has no backup pin" in r.err
    # the only key cannot be retired
    r = kp("pinset", "retire", "--file", f, "--set", "api", P[1], "--force")
    assert r.rc == 1 and "is the only key of set api" in r.err
    r = kp("pinset", "new", "--file", f, "--name", "web", "--host", "w.test", "--active", P[2], "--backup", P[5])
    assert r.rc == 1 and "is retired" in r.err


def test_new_refusals(kp, tmp_path):
    f = tmp_path / "pins.json"
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "a.test", "--backup", P[1])
    assert r.rc == 1 and "give the key(s) in service" in r.err
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "a.test", "--active", P[0])
    assert r.rc == 1 and r.err.startswith("keypin: pinset: a set without a backup pin cannot survive")
    assert not f.exists()
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "a.test", "--active", P[0], "--allow-no-backup")
    assert r.rc == 0, r
    assert read_doc(f)["sets"]["api"]["allow_no_backup"] is True
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "b.test", "--active", P[1], "--backup", P[2])
    assert r.rc == 1 and "set api already exists" in r.err
    r = kp("pinset", "new", "--file", f, "--name", "web", "--host", "A.test", "--active", P[1], "--backup", P[2])
    assert r.rc == 1 and "host a.test is already in set api" in r.err
    r = kp("pinset", "new", "--file", f, "--name", "bad name", "--host", "c.test", "--active", P[1], "--backup", P[2])
    assert r.rc == 1 and "bad set name 'bad name'" in r.err
    r = kp("pinset", "new", "--file", f, "--name", "w", "--host", "c.test", "--active", P[1], "--backup", P[1])
    assert r.rc == 1 and "the same pin is given twice" in r.err
    assert read_doc(f)["seq"] == 1


def test_pins_are_validated_strictly(kp, tmp_path):
    f = tmp_path / "pins.json"
    good = P[0]
    body = good[7:]
    # flip the last significant char so the 2 padding bits become non-zero: same bytes, not canonical
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = body[42]
    noncanon = "sha256/" + body[:42] + alphabet[alphabet.index(last) | 1] + "="
    if noncanon == good:
        noncanon = "sha256/" + body[:42] + alphabet[alphabet.index(last) | 2] + "="
    bad = [good[7:], "sha1/" + body, "sha256/" + body[:-1], "sha256/" + body + "=", "sha256/" + body[:-1] + "A",
           "sha256/" + body[:10] + "*" + body[11:], noncanon, "sha256/" + "A" * 44, " " + good]
    for b in bad:
        r = kp("pinset", "new", "--file", f, "--name", "x", "--host", "x.test", "--active", b, "--backup", P[1])
        assert r.rc == 1, b
        assert r.err.startswith("keypin: pinset: bad pin "), (b, r.err)
    assert not f.exists()


def test_show_and_list(kp, tmp_path):
    f = tmp_path / "pins.json"
    new(kp, f)
    kp("pinset", "new", "--file", f, "--name", "web", "--host", "www.test", "--active", P[5], "--backup", P[6])
    r = kp("pinset", "show", "--file", f, "--set", "api")
    assert r.rc == 0
    assert r.out == (f"{f}: keypin-pins/2 seq 2 version 0 signer none fleet none\n"
                     "set api (policy leaf)\n  hosts: api.example.test, mqtt.example.test\n"
                     f"  active: {P[0]}\n  backup 1: {P[1]}\n  backup 2: {P[2]}\n")
    r = kp("pinset", "list", "--file", f)
    assert r.out == ("api api.example.test,mqtt.example.test (policy leaf, 1 in service, 2 backup groups)\n"
                     "web www.test (policy leaf, 1 in service, 1 backup group)\n0 retired pins (device-wide)\n")
    r = kp("pinset", "show", "--file", f, "--set", "web", "--json")
    assert r.rc == 0, r
    assert json.loads(r.out) == {"command": "pinset show", "schema": 1, "file": str(f), "format": "keypin-pins/2",
                                 "seq": 2, "version": 0, "signer": None, "fleet": None, "retired": [],
                                 "sets": {"web": {"hosts": ["www.test"], "active": [P[5]], "backups": [[P[6]]],
                                                  "policy": "leaf"}}, "warnings": []}
    r = kp("pinset", "show", "--file", f, "--set", "nope")
    assert r.rc == 1 and r.err == "keypin: pinset: no set 'nope' in the pin document (sets: api, web)\n"


def test_corrupt_documents_give_clear_errors(kp, tmp_path):
    f = tmp_path / "pins.json"
    new(kp, f)
    good = f.read_bytes()
    line1 = good.split(b"\n")[0]

    def doc_with(obj):
        line = json.dumps(obj).encode()
        return line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"

    obj = json.loads(line1)
    cases = {
        good.replace(b'"seq": 1', b'"seq": 2'): "the checksum on line 2 does not match line 1",
        good[:-1]: "line 2 must end with a newline",
        good[:40]: "want 2 lines",
        b"": "want 2 lines",
        b"\xff\xfe\n": "not UTF-8",
        line1 + b"\nsha256:XYZ\n": "line 2 must be sha256:<64 lowercase hex digits>",
        doc_with(dict(obj, format="keypin-pins/3")): "format is 'keypin-pins/3'",
        doc_with(dict(obj, seq=-1)): "seq must be an integer >= 0",
        doc_with(dict(obj, extra=1)): "unknown field 'extra'",
        doc_with(dict(obj, sets={"api": dict(obj["sets"]["api"], backups=[])})): "no backup pin",
        doc_with(dict(obj, sets={"api": dict(obj["sets"]["api"], active=["sha256/x"])})): "bad pin 'sha256/x'",
        doc_with(dict(obj, sets={"api": dict(obj["sets"]["api"], active=P[0])})): "active must be a list",
        doc_with(dict(obj, sets={"api": dict(obj["sets"]["api"], backups=[P[1]])})): "a list of groups",
        doc_with(dict(obj, retired=[P[1]])): "is retired (device-wide)",
        doc_with(dict(obj, fleet="a/b")): "bad fleet",
        doc_with(dict(obj, sets={"api": dict(obj["sets"]["api"], hosts=["Up.test"])})): "lower case",
        doc_with(dict(obj, sets={"api": dict(obj["sets"]["api"], active=[P[1]])})): "a pin appears twice",
        doc_with(dict(obj, sets={"api": obj["sets"]["api"], "b": obj["sets"]["api"]})): "is in two sets",
        b"[1]\nsha256:" + hashlib.sha256(b"[1]").hexdigest().encode() + b"\n": "line 1 is not a JSON object",
        b"{\nsha256:" + hashlib.sha256(b"{").hexdigest().encode() + b"\n": "line 1 is not JSON",
    }
    for data, msg in cases.items():
        f.write_bytes(data)
        for argv in (("pinset", "show", "--file", f), ("pinset", "add-backup", "--file", f, "--set", "api", P[7])):
            r = kp(*argv)
            assert r.rc == 1, (data, r)
            assert r.err.startswith(f"keypin: pinset: {f}: ") and msg in r.err, (msg, r.err)
            assert f.read_bytes() == data
    r = kp("pinset", "show", "--file", tmp_path / "missing.json")
    assert r.rc == 1 and "no such pin document" in r.err


def test_device_library_loads_what_the_cli_writes(kp, tmp_path, upy):
    f = tmp_path / "pins.json"
    new(kp, f)
    kp("pinset", "retire", "--file", f, "--set", "api", P[0], "--force")
    script = tmp_path / "load.py"
    script.write_text(
        "import sys\nfrom keypin.store import PinStore\ns = PinStore(sys.argv[1])\n"
        "print(s.seq, s.names(), s.find('api.example.test'))\nx = s.get('api')\n"
        "print(x['active'], x['backups'], s.doc['retired'])\n"
        "s.rotate('api', 0, x['backups'][0][0])\n")
    r = upy([str(script), str(f)], cwd=tmp_path, path=f".frozen:{ROOT / 'lib'}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "2 ['api'] api"
    assert lines[1] == f"['{P[1]}'] [['{P[2]}']] ['{P[0]}']"
    # ... and the CLI reads what the device wrote after a rotation
    r = kp("pinset", "show", "--file", f)
    assert r.rc == 0, r
    assert r.out.startswith(f"{f}: keypin-pins/2 seq 3 ")
    assert f"active: {P[2]}" in r.out and f"retired: {P[1]}" in r.out
    assert "allow_no_backup" in r.out


def test_set_ca_anchors(kp, pki, tmp_path):
    # issue 15.4: the CA certificates of a set (CA+pin mode) go into pins.json and its signed updates
    f = tmp_path / "pins.json"
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "a.test", "--active", P[0], "--backup", P[1],
           "--policy", "any")
    assert r.rc == 0 and "policy any but no CA certificate" in r.err, r
    root = pki.write("root.pem", pki.pem(pki.root))
    r = kp("pinset", "set-ca", "--file", f, "--set", "api", "--ca", root)
    assert r.rc == 0 and "1 CA certificate" in r.out and "policy any but no CA" not in r.err, r
    from cryptography.hazmat.primitives import serialization
    want = base64.b64encode(pki.root.public_bytes(serialization.Encoding.DER)).decode()
    assert read_doc(f)["sets"]["api"]["ca"] == [want]
    key = pki.write("k.pem", pki.pem(pki.key("ec")))
    r = kp("pinset", "set-ca", "--file", f, "--set", "api", "--ca", key)
    assert r.rc == 1 and "not a certificate" in r.err
    assert kp("pinset", "set-ca", "--file", f, "--set", "api", "--clear").rc == 0
    assert "ca" not in read_doc(f)["sets"]["api"]


def test_retired_pins_never_leave_a_document_the_device_cannot_load(kp, tmp_path):
    # H8 "H4": a v1 document v1 firmware ran (K retired in x, in service in y) migrates to a document
    # the CLI and the device load: y keeps no pin (its hosts are refused), z loses its only backup
    f = tmp_path / "pins.json"
    v1 = {"format": "keypin-pins/1", "seq": 4, "version": 0, "signer": None,
          "sets": {"x": {"hosts": ["x.test"], "active": P[0], "backups": [P[1]], "retired": [P[2]], "policy": "leaf"},
                   "y": {"hosts": ["y.test"], "active": P[2], "backups": [], "retired": [], "policy": "leaf",
                         "allow_no_backup": True},
                   "z": {"hosts": ["z.test"], "active": P[3], "backups": [P[2]], "retired": [], "policy": "leaf"}}}
    line = json.dumps(v1).encode()
    f.write_bytes(line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n")
    r = kp("pinset", "show", "--file", f, "--json")
    assert r.rc == 0, r
    j = json.loads(r.out)["sets"]
    assert j["y"]["active"] == [] and j["y"]["backups"] == [] and j["y"]["allow_no_backup"] is True, j
    assert j["z"]["backups"] == [] and j["z"]["allow_no_backup"] is True, j
    assert any("set y has no pin left" in w for w in json.loads(r.out)["warnings"]), r.out
    # an operator's retire that would leave another set without a backup needs --force
    assert kp("pinset", "set-fleet", "--file", f, "--fleet", "plant-a").rc == 0
    assert kp("pinset", "add-backup", "--file", f, "--set", "z", P[4]).rc == 0
    assert kp("pinset", "add-backup", "--file", f, "--set", "x", P[4]).rc == 0
    before = f.read_bytes()
    r = kp("pinset", "retire", "--file", f, "--set", "x", P[4])
    assert r.rc == 1 and "would leave set z without a backup" in r.err and f.read_bytes() == before, r
    r = kp("pinset", "retire", "--file", f, "--set", "x", P[4], "--force")
    assert r.rc == 0, r
    d = read_doc(f)
    assert d["sets"]["z"]["backups"] == [] and d["sets"]["z"]["allow_no_backup"] is True
    assert d["sets"]["x"]["backups"] == [[P[1]]]
