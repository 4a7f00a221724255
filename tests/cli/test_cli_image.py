"""keypin image: the device filesystem runs in the Unix port; MANIFEST; refusals; validation."""
import hashlib
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from keypin_cli import image

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
    p = upy(["boot.py"], cwd=out, path=env_path)
    assert p.returncode == 0, (p.stdout, p.stderr)
    p = upy(["main.py"], cwd=out, path=env_path)  # no config.json in this image: says so, no traceback
    assert "not started" in p.stdout and "Traceback" not in p.stderr, (p.stdout, p.stderr)
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
    cfg.write_text(json.dumps({"device_id": "dev-1"}))
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


# .mpy header byte 2: native arch << 2 | sub-version 3 (MicroPython's MP_NATIVE_ARCH_*)
MPY_ARCH = {"x64": 0x0B, "xtensawin": 0x2B, "rv32imc": 0x2F}


def test_board_images_carry_the_viper_module_without_a_toolchain(kp, tmp_path, upy):
    natmod = tmp_path / "natmod"  # an empty natmod tree: no C module built for any arch
    for arch in ("xtensawin", "rv32imc", "x64"):
        out = tmp_path / f"img-{arch}"
        res = image.build_image(out, ROOT, arch, None, None, natmod_dir=natmod)
        assert res.spki == "viper" and res.native and res.notes == [] or arch == "x64", (arch, res.notes)
        assert not (out / "lib" / "keypin_spki.mpy").exists()
        mod = (out / "lib" / "keypin_spkiv.mpy").read_bytes()
        assert mod[:2] == b"M\x06" and mod[2] == MPY_ARCH[arch], (arch, mod[:4])
        # the library itself stays bytecode (.mpy ABI 6, no native code): loads on any port
        assert (out / "lib" / "keypin" / "spki.mpy").read_bytes()[:3] == b"M\x06\x00"
        if arch != "x64":  # the mip package for the arch ships the same bytes
            assert mod == (ROOT / "firmware" / "mip" / arch / "keypin_spkiv.mpy").read_bytes(), arch
    # the x64 build of the same source runs in the Unix port from the image, IMPL says viper
    out = tmp_path / "img-x64"
    p = upy(["-c", "import keypin.spki as s, keypin_spkiv as v; print(s.IMPL, v.__file__)"], cwd=out,
            path=".frozen:lib")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["viper", "lib/keypin_spkiv.mpy"]
    # and is byte for byte what `make viper` builds for the tests (build/viper/x64)
    built = ROOT / "build" / "viper" / "x64" / "keypin_spkiv.mpy"
    assert built.is_file(), "run make viper (make test does)"
    assert (out / "lib" / "keypin_spkiv.mpy").read_bytes() == built.read_bytes()
    # the CLI: no note, no toolchain talk, says which SPKI module the board runs
    for arch in ("xtensawin", "rv32imc"):
        r = kp("image", "--out", tmp_path / f"cli-{arch}", "--arch", arch)
        assert r.rc == 0 and r.err == "", r
        assert f"({arch}, SPKI viper)" in r.out.splitlines()[-1]


def test_x64_image_runs_on_its_own_with_umqtt(kp, tmp_path, upy):
    # the documented command runs exactly the image's files: MICROPYPATH is the image's lib only
    out = tmp_path / "img"
    r = kp("image", "--out", out, "--arch", "x64")
    assert r.rc == 0, r
    assert (out / "lib" / "umqtt" / "simple.mpy").is_file()
    cmd = image.run_command(out)
    assert f"keypin: note: run it in the Unix port: {cmd}" in r.err
    p = subprocess.run(["sh", "-c", cmd.replace(" main.py", " -c 'import sys, main, umqtt.simple, keypin.mqtt, "
                                                 "keypin.app, keypin.spki as s; print(umqtt.simple.__file__, "
                                                 "keypin.app.__file__, s.__file__)'")],
                       capture_output=True, text=True, check=False, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["lib/umqtt/simple.mpy", "lib/keypin/app.mpy", "lib/keypin/spki.mpy"]
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=False, timeout=60)
    assert "no module named" not in (p.stdout + p.stderr), p.stdout + p.stderr
    assert "not started" in p.stdout + p.stderr  # no config.json in this image: it says how to configure


def _make(args, cwd, extra_env=None):
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin", PWD=str(cwd), **(extra_env or {}))
    return subprocess.run(["make", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=600)


def test_make_build_from_another_directory_with_relative_pins(kp, tmp_path, pki):
    if shutil.which("xtensa-esp32-elf-gcc", path="/usr/bin:/bin"):
        pytest.fail("this test expects no xtensa toolchain on /usr/bin:/bin")
    _pins_doc(kp, tmp_path / "pins.json", pki)
    (tmp_path / "cfg.json").write_text(json.dumps({"device_id": "d1"}))
    for arch in ("xtensawin", "rv32imc"):
        p = _make(["-f", str(ROOT / "Makefile"), "build", f"ARCH={arch}", f"IMAGE=img-{arch}", "PINS=pins.json",
                   "CONFIG=cfg.json"], tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "make:" not in p.stderr and "rror" not in p.stderr and "toolchain" not in p.stdout + p.stderr, \
            p.stderr
        img = tmp_path / f"img-{arch}"
        assert (img / "pins.json").read_bytes() == (tmp_path / "pins.json").read_bytes()
        assert (img / "config.json").read_bytes() == (tmp_path / "cfg.json").read_bytes()
        assert (img / "lib" / "keypin_spkiv.mpy").read_bytes()[2] == MPY_ARCH[arch]
        assert f"({arch}, SPKI viper)" in p.stdout
    # make -C: relative paths still mean the caller's directory (the shell's PWD)
    p = _make(["-s", "-C", str(ROOT), "build", "ARCH=xtensawin", "IMAGE=img-c", "PINS=pins.json"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "img-c" / "pins.json").read_bytes() == (tmp_path / "pins.json").read_bytes()
    # a missing PINS file is named as the caller gave it, resolved against the caller's directory
    p = _make(["-s", "-f", str(ROOT / "Makefile"), "build", "IMAGE=img-x", "PINS=nope.json"], tmp_path)
    assert p.returncode != 0 and f"cannot read {tmp_path / 'nope.json'}" in p.stderr, p.stderr


def test_make_deploy_checks_port_first_and_deploys_what_was_built(kp, tmp_path, pki):
    _pins_doc(kp, tmp_path / "pins.json", pki)
    mk = ["-s", "-f", str(ROOT / "Makefile")]
    # no PORT: says so before building anything
    p = _make(mk + ["deploy", "IMAGE=img", "PINS=pins.json"], tmp_path)
    assert p.returncode != 0 and "deploy: give PORT=" in p.stderr
    assert not (tmp_path / "img").exists()
    # PINS given: the deployed image is built with them (the port here does not exist, so the copy
    # step fails after the build, with keypin's own message)
    port = str(tmp_path / "no-such-tty")
    p = _make(mk + ["deploy", f"PORT={port}", "IMAGE=img", "PINS=pins.json"], tmp_path)
    assert (tmp_path / "img" / "pins.json").read_bytes() == (tmp_path / "pins.json").read_bytes()
    assert p.returncode != 0 and "keypin: deploy: " in p.stderr and "Traceback" not in p.stderr, p.stderr
    # no PINS: the image already built is deployed as it is, pins and all (not rebuilt without them)
    before = (tmp_path / "img" / "MANIFEST").read_text()
    p = _make(mk + ["deploy", f"PORT={port}", "IMAGE=img"], tmp_path)
    assert "as built" in p.stdout, p.stdout + p.stderr
    assert (tmp_path / "img" / "MANIFEST").read_text() == before and (tmp_path / "img" / "pins.json").is_file()
    # PORT=auto with no board attached (this machine has no USB serial board): said before any build
    p = _make(mk + ["deploy", "PORT=auto", "IMAGE=img2", "PINS=pins.json"], tmp_path)
    assert p.returncode != 0 and "deploy: PORT=auto: no board found" in p.stderr, p.stdout + p.stderr
    assert not (tmp_path / "img2").exists()


def test_make_works_from_another_directory(tmp_path):
    # deps and the native modules through -f from elsewhere (was: cannot open tools/deps.sh)
    p = _make(["-s", "-f", str(ROOT / "Makefile"), "deps", "natmod", "viper"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cannot open" not in p.stderr and "make:" not in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written into the caller's directory


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
