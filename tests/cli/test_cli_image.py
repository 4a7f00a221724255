"""keypin image: the device filesystem runs in the Unix port; MANIFEST; refusals; validation."""
import hashlib
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[2]
NATMOD_X64 = ROOT / "build" / "natmod" / "x64" / "keypin_spki.mpy"


def _pins_doc(kp, f, pki):
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "api.example.test",
           "--active", pki.pin(pki.key("ec")), "--backup", pki.pin(pki.key("ec")))
    assert r.rc == 0, r


def test_x64_image_runs_in_the_unix_port(kp, tmp_path, upy):
    out = tmp_path / "img"
    r = kp("image", "--out", out, "--arch", "x64")
    assert r.rc == 0, r
    py_mods = sorted(p.stem for p in (ROOT / "lib" / "keypin").glob("*.py"))
    assert sorted(p.stem for p in (out / "lib" / "keypin").iterdir()) == py_mods
    assert all(p.suffix == ".mpy" for p in (out / "lib" / "keypin").iterdir())
    assert (out / "boot.py").read_bytes() == (ROOT / "boot.py").read_bytes()
    assert (out / "main.py").read_bytes() == (ROOT / "main.py").read_bytes()
    assert not (out / "config.json").exists() and not (out / "pins.json").exists()
    env_path = f".frozen:{out / 'lib'}"
    for script in ("boot.py", "main.py"):
        p = upy([script], cwd=out, path=env_path)
        assert p.returncode == 0, (script, p.stdout, p.stderr)
    p = upy(["-c", "import keypin.spki as s; print(s.IMPL, s.__file__)"], cwd=out, path=env_path)
    assert p.returncode == 0, p.stderr
    impl, where = p.stdout.split()
    assert where.endswith("lib/keypin/spki.mpy")  # compiled module from the image, not lib/ sources
    if NATMOD_X64.is_file():
        assert impl == "native"
        assert (out / "lib" / "keypin_spki.mpy").read_bytes() == NATMOD_X64.read_bytes()
        assert "SPKI native" in r.out
    else:
        assert impl == "python"
        assert "no native module for x64" in r.err
    # summary: each file with its size, and the total
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST")
    total = sum(p.stat().st_size for p in files)
    assert r.out.splitlines()[-1].startswith(f"{out}: {len(files)} files, {total} bytes (x64, SPKI ")


def test_manifest_lists_every_file_with_sha256(kp, tmp_path, pki):
    out = tmp_path / "img"
    pins = tmp_path / "pins.json"
    _pins_doc(kp, pins, pki)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"server": "api.example.test"}))
    assert kp("image", "--out", out, "--arch", "x64", "--pins", pins, "--config", cfg).rc == 0
    lines = (out / "MANIFEST").read_text().splitlines()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST")
    assert [ln.split(" ")[0] for ln in lines] == files
    for ln in lines:
        path, sha = ln.split(" ")
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == sha
    assert (out / "pins.json").read_bytes() == pins.read_bytes()  # byte for byte: seq and checksum kept
    assert (out / "config.json").read_bytes() == cfg.read_bytes()


def test_device_store_loads_pins_from_the_image(kp, tmp_path, pki, upy):
    out = tmp_path / "img"
    pins = tmp_path / "pins.json"
    _pins_doc(kp, pins, pki)
    assert kp("image", "--out", out, "--arch", "x64", "--pins", pins).rc == 0
    p = upy(["-c", "from keypin.store import PinStore; s = PinStore('pins.json'); print(s.seq, s.names())"],
            cwd=out, path=f".frozen:{out / 'lib'}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1 ['api']"


def test_config_pins_path_is_honoured(kp, tmp_path, pki):
    pins = tmp_path / "p.json"
    _pins_doc(kp, pins, pki)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"pins": "data/pins.json"}))
    assert kp("image", "--out", tmp_path / "img", "--arch", "x64", "--pins", pins, "--config", cfg).rc == 0
    assert (tmp_path / "img" / "data" / "pins.json").read_bytes() == pins.read_bytes()
    cfg.write_text(json.dumps({"pins": "../escape.json"}))
    r = kp("image", "--out", tmp_path / "img2", "--pins", pins, "--config", cfg)
    assert r.rc == 1 and "bad \"pins\" path '../escape.json'" in r.err


def test_xtensawin_without_natmod_says_so(kp, tmp_path):
    natmod = tmp_path / "natmod"  # an empty natmod tree: nothing built for xtensawin
    out = tmp_path / "img"
    from keypin_cli import image
    res = image.build_image(out, ROOT, "xtensawin", None, None, natmod_dir=natmod)
    assert not res.native and not (out / "lib" / "keypin_spki.mpy").exists()
    assert any("no native module for xtensawin" in n and "pure-Python SPKI fallback" in n for n in res.notes)
    # bytecode .mpy, ABI version 6 (MicroPython 1.23 .. 1.29), no native code in it
    assert (out / "lib" / "keypin" / "spki.mpy").read_bytes()[:3] == b"M\x06\x00"
    r = kp("image", "--out", tmp_path / "img2", "--arch", "xtensawin")
    assert r.rc == 0
    xt = ROOT / "build" / "natmod" / "xtensawin" / "keypin_spki.mpy"
    assert ("no native module for xtensawin" in r.err) == (not xt.is_file())


def test_refusals_and_force(kp, tmp_path, pki):
    out = tmp_path / "img"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    r = kp("image", "--out", out, "--arch", "x64")
    assert r.rc == 1 and r.err == f"keypin: image: {out} is not empty (use --force to replace the image in it)\n"
    r = kp("image", "--out", out, "--arch", "x64", "--force")
    assert r.rc == 1 and "holds no keypin image (no MANIFEST): not deleting it" in r.err
    assert (out / "mine.txt").read_text() == "keep"
    good = tmp_path / "good"
    assert kp("image", "--out", good, "--arch", "x64").rc == 0
    (good / "stale.py").write_text("x")
    assert kp("image", "--out", good, "--arch", "x64").rc == 1
    assert kp("image", "--out", good, "--arch", "x64", "--force").rc == 0
    assert not (good / "stale.py").exists()
    # a bad pin document or config is refused before anything is written
    bad = pki.write("bad.json", b'{"format": "keypin-pins/1"}\nsha256:00\n')
    r = kp("image", "--out", tmp_path / "new", "--pins", bad)
    assert r.rc == 1 and r.err.startswith(f"keypin: image: {bad}: corrupt: ")
    assert not (tmp_path / "new").exists()
    badcfg = pki.write("cfg.json", b"[1, 2]")
    r = kp("image", "--out", tmp_path / "new", "--config", badcfg)
    assert r.rc == 1 and r.err == f"keypin: image: {badcfg}: must be a JSON object\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_missing_entry_point_in_source(kp, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "lib", src / "lib")
    (src / "boot.py").write_text("print('boot')\n")
    r = kp("image", "--out", tmp_path / "img", "--src", src)
    assert r.rc == 1 and r.err.startswith(f"keypin: image: main.py not found in {src}")
    (src / "main.py").write_text("print('main')\n")
    (src / "lib" / "keypin" / "broken.py").write_text("def f(:\n")
    r = kp("image", "--out", tmp_path / "img", "--src", src, "--arch", "x64")
    assert r.rc == 1 and r.err.startswith("keypin: image: mpy-cross failed on ") and "broken.py" in r.err
    assert not (tmp_path / "img").exists()
