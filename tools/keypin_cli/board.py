"""Talking to a board with mpremote: copy files, read their SHA-256 back, compare.

Everything here except ``run_mpremote`` is a pure function (tested without hardware).
Image paths are relative to the device's filesystem root.
"""
from __future__ import annotations

import posixpath
import subprocess
import sys

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


def run_mpremote(argv: list[str], what: str, capture: bool = False) -> str:
    """The only part that needs a board."""
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
        run_mpremote(copy_command(port, [(local, d) for local, d, _ in files]), f"copying {len(files)} files")
    expected = {d: h for _, d, h in files}
    problems = compare(expected, remote_hashes(port, sorted(expected)))
    if problems:
        raise CommandError("verification failed after copying:\n  " + "\n  ".join(problems))
    return sorted(expected)
