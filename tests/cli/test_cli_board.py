"""deploy / provision / status / flash without hardware: the pure parts, and the flows against a fake
board whose filesystem is a directory and whose interpreter is the MicroPython Unix port."""
import ast
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from keypin_cli import board, cli, flash, image

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_remote_hash_snippet_runs_in_micropython_and_matches_manifest(kp, tmp_path, upy):
    out = tmp_path / "img"
    assert kp("image", "--out", out, "--arch", "x64").rc == 0
    entries = image.read_manifest(out)
    paths = [p for p, _ in entries] + ["no/such/file.mpy"]
    script = tmp_path / "snippet.py"
    script.write_text(board.remote_hash_snippet(paths))
    r = upy([str(script)], cwd=out, path=".frozen")
    assert r.returncode == 0, r.stderr
    got = board.parse_remote_hashes(r.stdout)
    assert got == {**dict(entries), "no/such/file.mpy": None}
    assert board.compare(dict(entries), got) == []


def test_compare_reports_every_problem():
    want = {"/a": "1" * 64, "/b": "2" * 64, "/c": "3" * 64, "/d": "4" * 64}
    have = {"/a": "1" * 64, "/b": "f" * 64, "/c": None}
    assert board.compare(want, have) == [
        f"/b: SHA-256 on the board {'f' * 64}, expected {'2' * 64}",
        "/c: missing on the board",
        "/d: no answer from the board",
    ]
    assert board.parse_remote_hashes("noise\nKPH - /x\nKPH abc /y z\n>>> \n") == {"/x": None, "/y z": "abc"}


def test_paths_and_mpremote_command_lines():
    assert board.device_path("lib/keypin/a.mpy") == "/lib/keypin/a.mpy"
    assert board.parent_dirs(["/lib/keypin/a.mpy", "/lib/b.mpy", "/main.py", "/x/y/z/f"]) == [
        "/lib", "/x", "/lib/keypin", "/x/y", "/x/y/z"]
    assert board.shadowing_sources(["/lib/keypin/a.mpy", "/main.py"]) == ["/lib/keypin/a.py"]
    base = [sys.executable, "-m", "mpremote", "connect", "/dev/ttyUSB0"]
    assert board.copy_command("/dev/ttyUSB0", [("img/main.py", "/main.py"), ("img/lib/a.mpy", "/lib/a.mpy")]) == (
        base + ["fs", "cp", "img/main.py", ":/main.py", "+", "fs", "cp", "img/lib/a.mpy", ":/lib/a.mpy"])
    assert board.exec_command("/dev/ttyUSB0", "print(1)") == base + ["exec", "print(1)"]
    assert board.STATUS_CODE == "import keypin.setup as ks; ks.show()"
    for snippet in (board.mkdir_snippet(["/lib"]), board.remove_snippet(["/x"]), board.remote_hash_snippet(["/a"])):
        compile(snippet, "snippet", "exec")  # valid Python (and MicroPython: see the test above)


class FakeBoard:
    """Stands in for run_mpremote: the board's filesystem is `root`; exec snippets run in MicroPython."""

    def __init__(self, root, upy):
        self.root, self.upy, self.calls = root, upy, []
        self.path = ".frozen"  # MICROPYPATH inside the board's root ("/lib" on a real board: add "lib")

    def _run_snippet(self, code):
        m = re.search(r"^for _\w+ in (\[.*\]):$", code, re.MULTILINE)
        paths = ast.literal_eval(m.group(1))
        local = [str(self.root) + p for p in paths]
        code = code.replace(m.group(1), repr(local))
        r = self.upy(["-c", code], cwd=self.root, path=self.path)
        assert r.returncode == 0, r.stderr
        return r.stdout.replace(str(self.root) + "/", "/")

    def __call__(self, argv, what, capture=False, quiet=False):
        assert argv[:5] == [sys.executable, "-m", "mpremote", "connect", "/dev/fake"]
        rest = argv[5:]
        self.calls.append(rest[0] if rest[0] == "exec" else "cp")
        if rest[0] == "exec":
            return self._run_snippet(rest[1])
        cmds = " ".join(rest).split(" + ")
        for c in cmds:
            op1, op2, src, dst = c.split(" ")
            assert (op1, op2) == ("fs", "cp") and dst.startswith(":/")
            target = self.root / dst[2:]
            assert target.parent.is_dir(), f"mkdir missing for {dst}"
            shutil.copyfile(src, target)
        return ""


@pytest.fixture
def fake_board(tmp_path, upy, monkeypatch):
    root = tmp_path / "board"
    root.mkdir()
    fb = FakeBoard(root, upy)
    monkeypatch.setattr(board, "run_mpremote", fb)
    return fb


def _pins(kp, pki, f):
    assert kp("pinset", "new", "--file", f, "--name", "api", "--host", "api.example.test",
              "--active", pki.pin(pki.key("ec")), "--backup", pki.pin(pki.key("ec"))).rc == 0


def test_deploy_copies_verifies_and_keeps_board_data(kp, pki, tmp_path, fake_board):
    pins = tmp_path / "pins.json"
    _pins(kp, pki, pins)
    img = tmp_path / "img"
    assert kp("image", "--out", img, "--arch", "x64", "--pins", pins).rc == 0
    stale = fake_board.root / "lib" / "keypin"
    stale.mkdir(parents=True)
    (stale / "tls.py").write_text("old source that would shadow tls.mpy")
    r = kp("deploy", "--port", "/dev/fake", "--image", img)
    assert r.rc == 0, r
    n = len(image.read_manifest(img))
    assert f"{n} copied, 0 unchanged, 0 kept; all verified by SHA-256" in r.out
    for rel, sha in image.read_manifest(img):
        assert hashlib.sha256((fake_board.root / rel).read_bytes()).hexdigest() == sha
    assert not (stale / "tls.py").exists()
    # second deploy: nothing to copy; a board-side pin document (rotated) is kept
    (fake_board.root / "pins.json").write_bytes(b"rotated on the board\n")
    r = kp("deploy", "--port", "/dev/fake", "--image", img)
    assert r.rc == 0, r
    assert f"0 copied, {n - 1} unchanged, 1 kept" in r.out
    assert "kept the board's /pins.json" in r.err and "keypin provision" in r.err
    assert (fake_board.root / "pins.json").read_bytes() == b"rotated on the board\n"


def test_deploy_detects_a_bad_copy(kp, tmp_path, fake_board, monkeypatch):
    img = tmp_path / "img"
    assert kp("image", "--out", img, "--arch", "x64").rc == 0
    real = fake_board.__call__

    def corrupting(argv, what, capture=False):
        out = real(argv, what, capture)
        if "cp" in argv:
            (fake_board.root / "main.py").write_text("# truncated")
        return out

    monkeypatch.setattr(board, "run_mpremote", corrupting)
    r = kp("deploy", "--port", "/dev/fake", "--image", img)
    assert r.rc == 1
    assert r.err.startswith("keypin: deploy: verification failed after copying:\n  /main.py: SHA-256 on the board ")


def test_deploy_refuses_a_modified_image(kp, tmp_path, fake_board):
    img = tmp_path / "img"
    assert kp("image", "--out", img, "--arch", "x64").rc == 0
    (img / "main.py").write_text("tampered")
    r = kp("deploy", "--port", "/dev/fake", "--image", img)
    assert r.rc == 1 and "does not match MANIFEST" in r.err
    assert fake_board.calls == []
    r = kp("deploy", "--port", "/dev/fake", "--image", tmp_path)
    assert r.rc == 1 and "has no MANIFEST" in r.err


def test_provision_replaces_pins_and_removes_old_generations(kp, pki, tmp_path, fake_board):
    pins = tmp_path / "pins.json"
    _pins(kp, pki, pins)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"server": "api.example.test"}))
    for name in ("pins.json", "pins.json.old", "pins.json.new", "pins.json.2", "pins.json.2.new"):
        (fake_board.root / name).write_text("older generation")
    r = kp("provision", "--port", "/dev/fake", "--config", cfg, "--pins", pins)
    assert r.rc == 0, r
    assert (fake_board.root / "pins.json").read_bytes() == pins.read_bytes()
    assert (fake_board.root / "config.json").read_bytes() == cfg.read_bytes()
    for name in ("pins.json.old", "pins.json.new", "pins.json.2", "pins.json.2.new"):
        assert not (fake_board.root / name).exists(), name
    # a corrupt pin document never reaches the board
    bad = pki.write("bad.json", pins.read_bytes().replace(b'"seq": 1', b'"seq": 9'))
    calls = len(fake_board.calls)
    r = kp("provision", "--port", "/dev/fake", "--config", cfg, "--pins", bad)
    assert r.rc == 1 and r.err.startswith(f"keypin: provision: {bad}: corrupt: ")
    assert len(fake_board.calls) == calls


def test_status_runs_setup_show(kp, monkeypatch, tmp_path):
    seen = []
    tty = tmp_path / "ttyACM0"  # the port must exist now (a missing one is named as such)
    tty.write_bytes(b"")

    def fake_run(argv, check=False):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert kp("status", "--port", tty).rc == 0
    assert seen == [[sys.executable, "-m", "mpremote", "connect", str(tty), "exec",
                     "import keypin.setup as ks; ks.show()"]]


def test_flash_offsets_agree_with_esptool():
    from esptool.targets import CHIP_DEFS
    assert flash.OFFSETS == {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0, "esp32c3": 0, "esp32c6": 0}
    for chip, off in flash.OFFSETS.items():
        assert CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET == off, chip
        assert flash.chip_key(CHIP_DEFS[chip].CHIP_NAME) == chip
    with pytest.raises(cli.CommandError, match="no known firmware offset for chip 'esp8266'"):
        flash.offset_for("esp8266")


def _fw(tmp_path, chip_id):
    hdr = bytearray(64)
    hdr[0] = 0xE9
    hdr[12:14] = chip_id.to_bytes(2, "little")
    p = tmp_path / f"fw{chip_id}.bin"
    p.write_bytes(bytes(hdr))
    return p


def test_flash_plan_and_commands(tmp_path):
    fw = _fw(tmp_path, 9)  # ESP32-S3
    assert flash.plan(fw, "esp32s3", None) == ("esp32s3", 0x0, "esp32s3")
    with pytest.raises(cli.CommandError, match="built for esp32s3 but the board is esp32"):
        flash.plan(fw, "esp32", None)
    assert flash.plan(_fw(tmp_path, 0), "esp32", None)[1] == 0x1000
    assert flash.plan(_fw(tmp_path, 2), "esp32s2", None)[1] == 0x1000
    assert flash.plan(_fw(tmp_path, 5), "esp32c3", 0x10000)[1] == 0x10000
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(cli.CommandError, match="not an ESP firmware image"):
        flash.plan(junk, "esp32", None)
    py = [sys.executable, "-m", "esptool"]
    assert flash.flash_commands("/dev/ttyUSB0", "esp32", "fw.bin", 0x1000, 460800) == [
        py + ["--chip", "esp32", "--port", "/dev/ttyUSB0", "erase-flash"],
        py + ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "write-flash", "0x1000", "fw.bin"],
    ]
    assert len(flash.flash_commands("p", "esp32c3", "f", 0, erase=False)) == 1


def test_flash_cli_flow_without_a_board(kp, tmp_path, monkeypatch):
    fw = _fw(tmp_path, 13)  # ESP32-C6
    ran = []
    monkeypatch.setattr(flash, "detect_chip", lambda port: "esp32c6")
    monkeypatch.setattr(flash, "run_esptool", lambda argv: ran.append(argv[3:]))
    r = kp("flash", "--port", "/dev/ttyUSB0", "--firmware", fw)
    assert r.rc == 0, r
    # not a terminal: esptool runs --silent (no progress bars in logs)
    assert ran == [["--chip", "esp32c6", "--port", "/dev/ttyUSB0", "--silent", "erase-flash"],
                   ["--chip", "esp32c6", "--port", "/dev/ttyUSB0", "--baud", "460800", "--silent", "write-flash", "0x0",
                    str(fw)]]
    ran.clear()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: esptool shows its progress
    assert kp("flash", "--port", "/dev/ttyUSB0", "--firmware", fw).rc == 0
    assert ran == [["--chip", "esp32c6", "--port", "/dev/ttyUSB0", "erase-flash"],
                   ["--chip", "esp32c6", "--port", "/dev/ttyUSB0", "--baud", "460800", "write-flash", "0x0", str(fw)]]
    monkeypatch.undo()
    monkeypatch.setattr(flash, "detect_chip", lambda port: "esp32c6")
    monkeypatch.setattr(flash, "run_esptool", lambda argv: ran.append(argv[3:]))
    r = kp("flash", "--port", "/dev/ttyUSB0", "--firmware", fw, "--chip", "esp32")
    assert r.rc == 1 and "built for esp32c6 but the board is esp32" in r.err
    r = kp("flash", "--port", "/dev/ttyUSB0", "--firmware", tmp_path / "missing.bin")
    assert r.rc == 1 and "no such firmware file" in r.err


def test_flash_detect_on_a_missing_port_is_a_clear_error(kp, tmp_path):
    fw = _fw(tmp_path, 0)
    r = kp("flash", "--port", str(tmp_path / "ttyNONE"), "--firmware", fw)
    assert r.rc == 1 and r.err.startswith(f"keypin: flash: cannot detect the chip on {tmp_path / 'ttyNONE'}: ")


# ------------------------------------------------------------------- serial ports, devs, doctor

KEYPIN = str(ROOT / ".venv/bin/keypin")


def keypin(*argv):
    return subprocess.run([KEYPIN, *map(str, argv)], check=False, capture_output=True, text=True, timeout=120)


def test_a_missing_serial_port_is_named_as_missing(tmp_path):
    """Through the real console script: not mpremote's "may be in use by another program"."""
    img = tmp_path / "img"
    assert keypin("image", "--out", img, "--arch", "x64").returncode == 0
    fw = _fw(tmp_path, 0)
    for argv, prefix in ((["status"], "keypin: status: "), (["deploy", "--image", img], "keypin: deploy: "),
                         (["flash", "--firmware", fw], "keypin: flash: cannot detect the chip on /dev/ttyNOPE9: ")):
        r = keypin(*argv, "--port", "/dev/ttyNOPE9")
        assert r.returncode == 1, r
        assert r.stderr.startswith(prefix + "no serial port /dev/ttyNOPE9: is the board plugged in"), r.stderr
        assert "in use" not in r.stderr and "Traceback" not in r.stderr
    r = keypin("flash", "--port", "/dev/ttyNOPE9", "--firmware", fw, "--offset", "banana")
    assert r.returncode == 1 and r.stderr.startswith(
        "keypin: flash: argument --offset: 'banana' is not a flash address (give e.g. 0x1000 or 4096)"), r.stderr
    assert "<lambda>" not in r.stderr


def _line(pattern, text):
    return re.search(pattern, text, re.MULTILINE)


def _ports(monkeypatch, *specs):
    """Stand-in for the OS's port list under esptool's discovery (esp_pylib -> pyserial comports)."""
    from esp_pylib import serial_ports
    from serial.tools.list_ports_common import ListPortInfo
    out = []
    for dev, vid, pid, serial, maker, product in specs:
        p = ListPortInfo(dev, skip_link_detection=True)
        p.vid, p.pid, p.serial_number, p.manufacturer, p.product = vid, pid, serial, maker, product
        out.append(p)
    monkeypatch.setattr(serial_ports, "_comports", lambda: list(out))


def test_devs_and_port_auto(kp, monkeypatch, tmp_path):
    usb = tmp_path / "ttyUSB0"
    usb.write_bytes(b"")
    _ports(monkeypatch, ("/dev/ttyS0", None, None, None, None, None),
           (str(usb), 0x10C4, 0xEA60, "0001", "Silicon Labs", "CP2102 USB to UART"),
           ("/dev/ttyACM0", 0x303A, 0x1001, "F4:12", "Espressif", "USB JTAG/serial debug unit"))
    r = kp("devs")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    # esptool's order: Espressif's own USB first; mpremote's auto rule: the first port with USB ids
    assert lines[0].startswith("/dev/ttyACM0") and "303a:1001 Espressif USB JTAG/serial debug unit" in lines[0]
    assert lines[0].endswith("(Espressif USB)  <- --port auto")
    assert any(line.startswith(str(usb)) and "10c4:ea60 Silicon Labs CP2102" in line for line in lines)
    assert any(line.startswith("/dev/ttyS0") and "no USB ids" in line for line in lines)
    j = json.loads(kp("devs", "--json").out)
    assert j["auto"] == "/dev/ttyACM0" and len(j["ports"]) == 3
    # --port auto resolves through the same discovery (here: the CP2102 once the Espressif port is gone)
    _ports(monkeypatch, ("/dev/ttyS0", None, None, None, None, None),
           (str(usb), 0x10C4, 0xEA60, "0001", "Silicon Labs", "CP2102 USB to UART"))
    seen = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check=False: seen.append(argv) or
                        subprocess.CompletedProcess(argv, 0))
    assert kp("status", "--port", "auto").rc == 0
    assert seen[-1][4] == str(usb)
    assert kp("status").rc == 0 and seen[-1][4] == str(usb)  # auto is the default
    _ports(monkeypatch, ("/dev/ttyS0", None, None, None, None, None))
    r = kp("status", "--port", "auto")
    assert r.rc == 1 and r.err.startswith("keypin: status: --port auto: no board found: no USB serial port "
                                          "(serial ports without USB ids: /dev/ttyS0)"), r
    _ports(monkeypatch)
    r = kp("devs")
    assert r.rc == 1 and r.err.startswith("keypin: devs: no serial ports found"), r


def test_doctor_host_only(kp, monkeypatch):
    _ports(monkeypatch)
    r = kp("doctor")
    assert r.rc == 0, r
    for what in ("python", "cryptography", "paho-mqtt", "mpremote", "esptool", "mpy-cross runs", "SPKI module x64",
                 "serial ports"):
        assert _line(rf"^(ok|warn|info|FAIL) +{re.escape(what)} ", r.out), (what, r.out)
    assert "none found: no board is plugged in" in r.out and "fix: plug the board in" in r.out
    assert r.out.rstrip().endswith("doctor: 14 checks, 0 failed, no board") or "0 failed, no board" in r.out
    j = json.loads(kp("doctor", "--json").out)
    assert j["command"] == "doctor" and j["failures"] == 0
    assert {"level", "what", "text", "fix"} <= set(j["findings"][0])


def test_doctor_with_the_fake_board(kp, pki, tmp_path, fake_board, monkeypatch):
    _ports(monkeypatch)
    fake_board.path = ".frozen:lib"
    r = kp("doctor", "--port", "/dev/fake")  # an empty board: no keypin, no config, no pin store
    assert r.rc == 1, r
    assert _line(r"^ok +MicroPython +micropython 1\.29\.0 on linux", r.out), r.out
    assert _line(r"^ok +\.mpy ABI +6\.3", r.out)
    assert _line(r"^ok +tls\.SSLContext\.verify_callback +present \(Mbed TLS 3\.", r.out), r.out
    assert _line(r"^info +getpeercert +absent \(not needed", r.out)  # the Unix port lacks it
    assert _line(r"^ok +free heap +\d+ KiB free after gc\.collect\(\)", r.out)
    assert _line(r"^ok +free flash ", r.out)
    assert _line(r"^warn +keypin on the board +not installed", r.out)
    assert _line(r"^FAIL +pin store +/pins\.json missing", r.out) and "fix: keypin provision" in r.out
    # deploy and provision, then everything is fine
    img = tmp_path / "img"
    assert kp("image", "--out", img, "--arch", "x64").rc == 0
    assert kp("deploy", "--port", "/dev/fake", "--image", img).rc == 0
    pins, cfg = tmp_path / "pins.json", tmp_path / "config.json"
    _pins(kp, pki, pins)
    cfg.write_text(json.dumps({"device_id": "d1", "pins": "data/pins.json"}))
    assert kp("provision", "--port", "/dev/fake", "--config", cfg, "--pins", pins).rc == 0
    r = kp("doctor", "--port", "/dev/fake")
    assert r.rc == 0, r
    assert _line(r"^ok +keypin on the board +0\.1\.0 \(SPKI \w+\)", r.out), r.out
    assert _line(r"^ok +pin store +/data/pins\.json: seq 1, 1 set$", r.out), r.out
    assert r.out.rstrip().endswith("0 failed, board /dev/fake")
    # one flipped byte in the store is found and named
    store = fake_board.root / "data" / "pins.json"
    b = bytearray(store.read_bytes())
    b[10] ^= 1
    store.write_bytes(bytes(b))
    r = kp("doctor", "--port", "/dev/fake")
    assert r.rc == 1 and _line(r"^FAIL +pin store +/data/pins\.json \(\d+ bytes\) fails its checksum", r.out)


def test_doctor_findings_for_old_firmware():
    from keypin_cli.commands import doctor
    facts = {"impl": ["micropython", [1, 22, 2], "ESP32 module with ESP32", "esp32", 0x0306],
             "tls": [False, True, ""], "heap": [30000, 60000], "flash": [40000, 2000000],
             "keypin": ["0.0.9", "python"], "files": {"/config.json": (10, "{}")}}
    got = {(f.level, f.what): f for f in doctor.board_findings("/dev/ttyUSB0", facts, "/pins.json")}
    assert got[("FAIL", "MicroPython")].fix.startswith("flash MicroPython >= 1.23")
    assert ("FAIL", "tls.SSLContext.verify_callback") in got
    assert got[("warn", "free heap")].text.startswith("29 KiB free")
    assert ("warn", "free flash") in got and ("warn", "keypin on the board") in got
    assert ("FAIL", "pin store") in got


def test_status_json_on_the_fake_board(kp, pki, tmp_path, fake_board):
    fake_board.path = ".frozen:lib"
    img = tmp_path / "img"
    assert kp("image", "--out", img, "--arch", "x64").rc == 0
    assert kp("deploy", "--port", "/dev/fake", "--image", img).rc == 0
    pins, cfg = tmp_path / "pins.json", tmp_path / "config.json"
    _pins(kp, pki, pins)
    cfg.write_text(json.dumps({"device_id": "d1"}))
    assert kp("provision", "--port", "/dev/fake", "--config", cfg, "--pins", pins).rc == 0
    r = kp("status", "--port", "/dev/fake", "--json")
    assert r.rc == 0, r
    j = json.loads(r.out)
    assert (j["command"], j["schema"], j["port"]) == ("status", 1, "/dev/fake")
    assert j["micropython"]["version"] == "1.29.0" and j["micropython"]["mpy_abi"] == "6.3"
    assert j["tls"]["verify_callback"] is True and j["keypin"]["version"] == "0.1.0" and j["config"] is True
    st = j["store"]
    assert (st["path"], st["state"], st["seq"]) == ("/pins.json", "ok", 1)
    assert set(st["sets"]) == {"api"} and st["sets"]["api"]["hosts"] == ["api.example.test"]
    (fake_board.root / "pins.json").write_bytes(b"torn")
    assert json.loads(kp("status", "--port", "/dev/fake", "--json").out)["store"]["state"] == "corrupt"


def test_deploy_shows_bytes_and_percent_on_a_terminal_only(kp, tmp_path, fake_board, monkeypatch, capsys):
    img = tmp_path / "img"
    assert kp("image", "--out", img, "--arch", "x64").rc == 0
    r = kp("deploy", "--port", "/dev/fake", "--image", img)  # not a terminal: one copy run, no meter
    assert r.rc == 0 and "KiB (" not in r.err and fake_board.calls.count("cp") == 1, r
    for f in (fake_board.root / "lib").rglob("*.mpy"):
        f.unlink()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    r = kp("deploy", "--port", "/dev/fake", "--image", img)
    assert r.rc == 0, r
    total = sum(f.stat().st_size for f in (img / "lib").rglob("*.mpy"))
    assert f"of {total // 1024} KiB (0%)" in r.err and f"{total // 1024} of {total // 1024} KiB (100%)" in r.err, r.err
    assert fake_board.calls.count("cp") > 2  # runs of ~16 KiB, so the meter moves
    for rel, sha in image.read_manifest(img):
        assert hashlib.sha256((fake_board.root / rel).read_bytes()).hexdigest() == sha
