"""Talking to a board with mpremote: copy files, read their SHA-256 back, compare.

Everything here except ``run_mpremote`` is a pure function (tested without hardware).
Image paths are relative to the device's filesystem root.
"""
from __future__ import annotations

import posixpath
import subprocess
import sys
from dataclasses import dataclass

from .errors import CommandError
from .util import progress

DEVICE_CONFIG = "config.json"
STATUS_CODE = "import keypin.setup as ks; ks.show()"
_MARK = "KPH"

# Runs on the board (MicroPython): one line per path, "KPH <sha256 hex or -> <path>".
_HASH_SNIPPET = """\
import hashlib, binascii
def _kph(p):
    h = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    with open(p, "rb") as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
for _p in %r:
    try:
        print("%s", _kph(_p), _p)
    except OSError:
        print("%s", "-", _p)
"""

_MKDIR_SNIPPET = """\
import os
for _d in %r:
    try:
        os.mkdir(_d)
    except OSError:
        pass
"""

_REMOVE_SNIPPET = """\
import os
for _f in %r:
    try:
        os.remove(_f)
    except OSError:
        pass
"""


def device_path(rel: str) -> str:
    return "/" + rel.lstrip("/")


def remote_hash_snippet(paths: list[str]) -> str:
    return _HASH_SNIPPET % (list(paths), _MARK, _MARK)


def mkdir_snippet(dirs: list[str]) -> str:
    return _MKDIR_SNIPPET % (list(dirs),)


def remove_snippet(paths: list[str]) -> str:
    return _REMOVE_SNIPPET % (list(paths),)


def parse_remote_hashes(output: str) -> dict[str, str | None]:
    """{device path: sha256 hex, or None when the file is missing}."""
    out: dict[str, str | None] = {}
    for line in output.splitlines():
        parts = line.strip().split(" ", 2)
        if len(parts) == 3 and parts[0] == _MARK:
            out[parts[2]] = None if parts[1] == "-" else parts[1]
    return out


def compare(expected: dict[str, str], actual: dict[str, str | None]) -> list[str]:
    """Problems, one line each; empty when every file is on the board with the expected hash."""
    problems = []
    for path, want in sorted(expected.items()):
        if path not in actual:
            problems.append(f"{path}: no answer from the board")
        elif actual[path] is None:
            problems.append(f"{path}: missing on the board")
        elif actual[path] != want:
            problems.append(f"{path}: SHA-256 on the board {actual[path]}, expected {want}")
    return problems


def parent_dirs(paths: list[str]) -> list[str]:
    """Every directory (device paths, parents first) needed for ``paths``."""
    dirs: set[str] = set()
    for p in paths:
        d = posixpath.dirname(p)
        while d not in ("", "/"):
            dirs.add(d)
            d = posixpath.dirname(d)
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def shadowing_sources(paths: list[str]) -> list[str]:
    """``x.py`` files that would be imported instead of a deployed ``x.mpy`` (MicroPython tries .py first)."""
    return [p[:-4] + ".py" for p in paths if p.endswith(".mpy")]


def mpremote_base(port: str) -> list[str]:
    return [sys.executable, "-m", "mpremote", "connect", port]


def exec_command(port: str, code: str) -> list[str]:
    return mpremote_base(port) + ["exec", code]


def copy_command(port: str, pairs: list[tuple[str, str]]) -> list[str]:
    """One mpremote run copying each (local file, device path), chained with ``+``."""
    argv = mpremote_base(port)
    for i, (local, remote) in enumerate(pairs):
        if i:
            argv.append("+")
        argv += ["fs", "cp", local, ":" + remote]
    return argv


def run_mpremote(argv: list[str], what: str, capture: bool = False, quiet: bool = False) -> str:
    """The only part that needs a board."""
    check_port(argv[4])  # mpremote says "may be in use by another program" for a missing port too
    if not quiet:
        progress(what)
    try:
        r = subprocess.run(argv, capture_output=capture, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise CommandError(f"mpremote timed out ({what})") from None
    if r.returncode != 0:
        detail = ((r.stderr or "") + (r.stdout or "")).strip() if capture else ""
        tail = (": " + detail) if detail else ""
        raise CommandError(f"mpremote failed ({what}){tail}")
    return r.stdout if capture else ""


BATCH_BYTES = 16 * 1024  # on a terminal, one mpremote run per ~16 KiB so the meter moves


def batches(pairs: list[tuple[str, str]], sizes: list[int], limit: int) -> list[list[int]]:
    """Indexes of ``pairs`` in runs of at most ``limit`` bytes (at least one file each)."""
    out: list[list[int]] = [[]]
    acc = 0
    for i, n in enumerate(sizes):
        if out[-1] and acc + n > limit:
            out.append([])
            acc = 0
        out[-1].append(i)
        acc += n
    return [b for b in out if b]


def copy_files(port: str, pairs: list[tuple[str, str]]) -> None:
    """One mpremote run for all files; on a terminal, runs of ~16 KiB with bytes and percent shown."""
    import os

    from .util import Meter

    sizes = [os.path.getsize(local) for local, _ in pairs]
    meter = Meter(f"copying {len(pairs)} files", sum(sizes))
    if not meter.on:
        run_mpremote(copy_command(port, pairs), f"copying {len(pairs)} files")
        return
    done = 0
    for run in batches(pairs, sizes, BATCH_BYTES):
        meter.show(done, f", {pairs[run[0]][1]}")
        # mpremote's own "cp ..." lines are captured: the meter is the one line that moves
        run_mpremote(copy_command(port, [pairs[i] for i in run]), f"copying {pairs[run[0]][1]}", capture=True,
                     quiet=True)
        done += sum(sizes[i] for i in run)
    meter.show(done)
    meter.end()


def remote_hashes(port: str, paths: list[str]) -> dict[str, str | None]:
    out = run_mpremote(exec_command(port, remote_hash_snippet(paths)), f"reading SHA-256 of {len(paths)} files",
                       capture=True)
    return parse_remote_hashes(out)


def push_and_verify(port: str, files: list[tuple[str, str, str]], remove: list[str] = ()) -> list[str]:
    """files: (local path, device path, sha256). Copies, removes ``remove``, verifies. -> copied paths."""
    dirs = parent_dirs([d for _, d, _ in files])
    if dirs:
        run_mpremote(exec_command(port, mkdir_snippet(dirs)), "creating directories")
    if remove:
        run_mpremote(exec_command(port, remove_snippet(list(remove))), "removing stale files")
    if files:
        copy_files(port, [(local, d) for local, d, _ in files])
    expected = {d: h for _, d, h in files}
    problems = compare(expected, remote_hashes(port, sorted(expected)))
    if problems:
        raise CommandError("verification failed after copying:\n  " + "\n  ".join(problems))
    return sorted(expected)


# ------------------------------------------------------------------ serial ports and discovery


def port_problem(port: str) -> str | None:
    """Why ``port`` cannot be opened, in words, or None (only local device paths are checked)."""
    import os

    if not port.startswith("/"):
        return None  # COM3, rfc2217://..., mpremote shortcuts: the tools say it themselves
    if not os.path.exists(port):
        return (f"no serial port {port}: is the board plugged in (and its USB cable a data cable)? "
                "keypin devs lists the serial ports")
    if not os.access(port, os.R_OK | os.W_OK):
        return (f"no permission to open {port}: add yourself to its group (sudo usermod -aG dialout $USER, "
                "then log in again)")
    return None


def check_port(port: str) -> None:
    why = port_problem(port)
    if why:
        raise CommandError(why)


@dataclass
class Port:
    device: str
    vid: int | None
    pid: int | None
    serial: str
    description: str
    espressif: bool


def list_ports() -> list[Port]:
    """Serial ports, through esptool's discovery (esp_pylib: Espressif USB first, then known names)."""
    try:
        from esp_pylib.constants import ESPRESSIF_VID
        from esp_pylib.serial_ports import get_port_list
    except ImportError:  # an esptool without esp_pylib: pyserial directly, as mpremote does
        from serial.tools.list_ports import comports as get_port_list  # type: ignore[assignment]
        ESPRESSIF_VID = 0x303A
    out = []
    for p in get_port_list():
        desc = " ".join(str(x) for x in (p.manufacturer, p.product) if x) or (p.description or "")
        desc = "" if desc == "n/a" else desc
        out.append(Port(str(p.device), p.vid, p.pid, p.serial_number or "", desc, p.vid == ESPRESSIF_VID))
    return out


def auto_port(ports: list[Port]) -> Port | None:
    """mpremote's ``auto`` rule: the first USB serial port (one with a USB vendor and product id)."""
    return next((p for p in ports if p.vid is not None and p.pid is not None), None)


def resolve_port(port: str) -> str:
    """``auto`` -> the discovered board's port (CommandError if none); any other name unchanged."""
    if port != "auto":
        return port
    ports = list_ports()
    p = auto_port(ports)
    if p is None:
        seen = f" (serial ports without USB ids: {', '.join(q.device for q in ports)})" if ports else ""
        raise CommandError("--port auto: no board found: no USB serial port" + seen +
                           "; plug the board in, or give --port PORT (keypin devs lists the ports)")
    others = [q.device for q in ports if q is not p and q.vid is not None]
    if others:
        from .util import note

        note(f"--port auto: using {p.device}; other boards: {', '.join(others)} (give --port to choose)")
    progress(f"--port auto: {p.device} ({p.description or 'USB serial'})")
    return p.device
