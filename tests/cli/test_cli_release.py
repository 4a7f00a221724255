"""keypin release: the signed manifest (what devices check, refused here first) and --publish
(files first, then release.json and release.version, each by one rename)."""
import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from keypin_cli import release as rel


@pytest.fixture
def src(tmp_path):
    """A tiny keypin image (MANIFEST as keypin image writes it), its config and pins left out of releases."""
    img = tmp_path / "img"
    (img / "lib/keypin").mkdir(parents=True)
    files = {"main.py": b"def run():\n    return 1\n", "boot.py": b"# boot\n", "lib/keypin/app.mpy": b"M\x06" * 300,
             "config.json": b'{"pins": "pins.json"}', "pins.json": b"device pins\n"}
    for p, b in files.items():
        (img / p).write_bytes(b)
    (img / "MANIFEST").write_text("".join(f"{p} {hashlib.sha256(b).hexdigest()}\n" for p, b in sorted(files.items())))
    key = ed25519.Ed25519PrivateKey.generate()
    kf = tmp_path / "release.key"
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return {"img": img, "key": key, "keyfile": kf, "dir": tmp_path}


def args(src, *more, version=1):
    return ("release", "--key", str(src["keyfile"]), "--version", str(version), "--fleet", "plant-a",
            "--image", str(src["img"]), *map(str, more))


def manifest(pub):
    line, sig = (pub / "release.json").read_bytes().split(b"\n")[:2]
    return json.loads(line), line, base64.b64decode(sig[len(b"ed25519:"):])


def test_release_published_signed_with_every_file(kp, src):
    pub = src["dir"] / "www"
    r = kp(*args(src, "--publish", pub, "--device", "dev-1", "--min-version", "0"))
    assert r.rc == 0, r.err
    m, line, sig = manifest(pub)
    src["key"].public_key().verify(sig, line)  # raises if not
    assert m["format"] == "keypin-release/1" and m["version"] == 1 and m["min_version"] == 0
    assert m["audience"] == {"fleet": "plant-a", "devices": ["dev-1"]} and m["firmware"] is None
    assert [f["path"] for f in m["files"]] == ["boot.py", "lib/keypin/app.mpy", "main.py"]  # no config, no pins
    for f in m["files"]:
        b = (pub / "blobs" / f["sha256"]).read_bytes()
        assert len(b) == f["size"] and hashlib.sha256(b).hexdigest() == f["sha256"]
    assert (pub / "release.version").read_text() == "1\n"
    assert "release 1 (updates from 0 or later) for fleet plant-a, devices dev-1: 3 files" in r.out
    assert sorted(p.name for p in pub.iterdir()) == ["blobs", "release.json", "release.version"]  # no temporaries


def test_publish_order_files_then_manifest(kp, src, monkeypatch):
    pub = src["dir"] / "www"
    order = []
    real = rel._put
    monkeypatch.setattr(rel, "_put", lambda path, s, data=None: (order.append(path.name), real(path, s, data)))
    assert kp(*args(src, "--publish", pub, "--file", f"{src['img'] / 'boot.py'}=data/x.txt")).rc == 0
    assert order[-2:] == ["release.json", "release.version"] and len(order) == 5  # 3 distinct blobs first


def test_firmware_and_next_signer(kp, src):
    fw = src["dir"] / "fw.bin"
    fw.write_bytes(b"\xe9" + bytes(5000))
    nxt = ed25519.Ed25519PrivateKey.generate()
    raw = nxt.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signer = "ed25519/" + base64.b64encode(raw).decode()
    r = kp(*args(src, "--firmware", fw, "--next-signer", signer, "--out", src["dir"] / "out", "--json"))
    assert r.rc == 0, r.err
    j = json.loads(r.out)
    assert j["command"] == "release" and j["signer"] == signer
    assert j["firmware"] == {"size": 5001, "sha256": hashlib.sha256(fw.read_bytes()).hexdigest()}
    assert (src["dir"] / "out/blobs" / j["firmware"]["sha256"]).read_bytes() == fw.read_bytes()


@pytest.mark.parametrize("more,version,want", [
    ((), 0, "releases count from 1"),
    (("--min-version", "3"), 3, "--min-version 3 must be at least 0 and below --version 3"),
    (("--file", "{img}/boot.py=../pins.json"), 1, "bad release path '../pins.json'"),
    (("--file", "{img}/boot.py=/main.py"), 1, "bad release path '/main.py'"),
    (("--file", "{img}/boot.py=pins.json"), 1, "pins.json is the devices' pin store"),
    (("--file", "{img}/boot.py=slot.json"), 1, "slot.json belongs to the device"),
    (("--file", "{img}/nope=x"), 1, "no such file"),
    (("--device", ""), 1, "--device: give device ids"),
    ((), 1, "give --publish DIR"),
])
def test_refused_before_anything_is_written(kp, src, more, version, want):
    more = [m.format(img=src["img"]) for m in more]
    if want != "give --publish DIR":
        more += ["--out", str(src["dir"] / "out")]
    r = kp(*args(src, *more, version=version))
    assert r.rc == 1 and r.err.startswith("keypin: release: ") and want in r.err, r
    assert "Traceback" not in r.err and not (src["dir"] / "out").exists()


def test_publish_refuses_a_version_not_newer(kp, src):
    pub = src["dir"] / "www"
    assert kp(*args(src, "--publish", pub, version=3)).rc == 0
    before = (pub / "release.json").read_bytes()
    r = kp(*args(src, "--publish", pub, version=3))
    assert r.rc == 1 and "version 3 is not newer" in r.err
    assert (pub / "release.json").read_bytes() == before
    assert kp(*args(src, "--publish", pub, version=4)).rc == 0 and manifest(pub)[0]["version"] == 4


def test_no_main_py_and_wrong_key(kp, src, tmp_path):
    h = hashlib.sha256((src["img"] / "boot.py").read_bytes()).hexdigest()
    (src["img"] / "MANIFEST").write_text(f"boot.py {h}\n")
    r = kp(*args(src, "--out", tmp_path / "o"))
    assert r.rc == 1 and "no main.py in the release" in r.err
    bad = tmp_path / "ec.key"
    bad.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    r = kp("release", "--key", str(bad), "--version", "1", "--fleet", "f", "--image", str(src["img"]), "--out",
           str(tmp_path / "o"))
    assert r.rc == 1 and "not an Ed25519 private key" in r.err
