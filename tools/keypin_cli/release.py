"""Signed software releases (docs/operations.md, "Software releases"), installed by keypin.ota.

A release is a directory an HTTPS server (nginx) serves to the devices:

* ``release.json``: two lines, like a signed pin update. Line 1 is the manifest::

      {"format": "keypin-release/1", "version": V, "min_version": M,
       "audience": {"fleet": F} | {"fleet": F, "devices": [ids]},
       "signer": "ed25519/<the signer of the next release>",
       "files": [{"path": "main.py", "size": N, "sha256": "<hex>"}, ...],
       "firmware": {"size": N, "sha256": "<hex>"} | null}

  line 2 is ``ed25519:`` + base64 of the signature over the exact bytes of line 1.
* ``release.version``: the version as text (the device's cheap first check).
* ``blobs/<sha256>``: every file and the firmware image, named by content.

The device refuses what ``build`` refuses here (paths, sizes, audience, versions), so an
operator learns it before the fleet does.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from . import image, signed
from .errors import CommandError

FORMAT = "keypin-release/1"
MAX_SIZE = 8192  # the device fetches release.json with this bound (keypin.ota)
# Files that belong to the device, not to the software: never shipped in a release.
DEVICE_FILES = {"config.json", "slot.json", "keypin-state.json", "keypin-ota.json", "keypin-reports.json"}
_PATHCH = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")


@dataclass
class Release:
    manifest: dict
    data: bytes  # release.json, both lines
    blobs: dict[str, Path] = field(default_factory=dict)  # sha256 hex -> source file

    @property
    def version(self) -> int:
        return int(self.manifest["version"])


def check_path(p: str) -> str:
    """The device's path rule (keypin.ota._path): relative, no . or .. parts, a small alphabet."""
    parts = p.split("/")
    if not 0 < len(p) <= 80 or p.startswith("/") or set(p) - _PATHCH or any(x in ("", ".", "..") for x in parts):
        raise CommandError(f"bad release path {p!r}: relative, at most 80 of A-Z a-z 0-9 _ . - /, no . or ..")
    if p == "release.json" or p == "MANIFEST" or p in DEVICE_FILES:
        raise CommandError(f"{p} belongs to the device, not to a release")
    return p


def _sha(path: Path) -> str:
    return image.sha256_file(path)


def image_files(img: Path) -> list[tuple[str, Path]]:
    """The software of a ``keypin image``: every MANIFEST file but config.json and the pin document."""
    entries = image.read_manifest(img)
    skip = image.data_files(img)
    return [(p, img / p) for p, _ in entries if p not in skip]


def parse_extra(spec: str) -> tuple[str, Path]:
    """``SRC`` or ``SRC=DEST`` (DEST: the path on the device)."""
    src, _, dest = spec.partition("=")
    s = Path(src)
    if not s.is_file():
        raise CommandError(f"--file {src}: no such file")
    return check_path(dest or s.name), s


def merge(files: list[tuple[str, Path]], extra: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """The image's files, then the --file ones; a --file with an image path replaces that file."""
    out = dict(files)
    for p, src in extra:
        if p in out and p in dict(extra[:extra.index((p, src))]):
            raise CommandError(f"--file {p} given twice")
        out[p] = src
    return list(out.items())


def build(files: list[tuple[str, Path]], version: int, min_version: int, fleet: str, devices: list[str] | None,
          key: ed25519.Ed25519PrivateKey, next_signer: str | None = None, firmware: Path | None = None,
          pins_path: str = "pins.json") -> Release:
    if version < 1:
        raise CommandError(f"--version {version}: releases count from 1 (the factory software is version 0)")
    if not 0 <= min_version < version:
        raise CommandError(f"--min-version {min_version} must be at least 0 and below --version {version}")
    if not fleet:
        raise CommandError("--fleet is required: devices refuse a release for another fleet")
    if devices is not None and (not devices or any(not d for d in devices)):
        raise CommandError("--device: give device ids")
    seen: dict[str, Path] = {}
    for p, src in files:
        check_path(p)
        if p == pins_path:
            raise CommandError(f"{p} is the devices' pin store: a release never carries pins")
        if p in seen:
            raise CommandError(f"{p} is in the release twice ({seen[p]} and {src})")
        seen[p] = src
    if "main.py" not in seen:
        raise CommandError("no main.py in the release (build it from a keypin image: --image DIR)")
    rel = Release({}, b"")
    entries = []
    for p in sorted(seen):
        h = _sha(seen[p])
        entries.append({"path": p, "size": seen[p].stat().st_size, "sha256": h})
        rel.blobs[h] = seen[p]
    fw = None
    if firmware is not None:
        if not firmware.is_file():
            raise CommandError(f"--firmware {firmware}: no such file")
        fw = {"size": firmware.stat().st_size, "sha256": _sha(firmware)}
        rel.blobs[fw["sha256"]] = firmware
    signer = signed.signer_text(key.public_key())
    if next_signer is not None:
        signed.public_of(next_signer)
    aud: dict = {"fleet": fleet}
    if devices is not None:
        aud["devices"] = list(devices)
    m = {"format": FORMAT, "version": version, "min_version": min_version, "audience": aud,
         "signer": next_signer or signer, "files": entries, "firmware": fw}
    line1 = json.dumps(m, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    data = line1 + b"\ned25519:" + base64.b64encode(key.sign(line1)) + b"\n"
    if len(data) > MAX_SIZE:
        raise CommandError(f"release.json is {len(data)} bytes; devices accept at most {MAX_SIZE} (fewer files)")
    rel.manifest, rel.data = m, data
    return rel


def read_release(data: bytes, where: str) -> dict:
    lines = data.split(b"\n")
    try:
        m = json.loads(lines[0])
    except ValueError as e:
        raise CommandError(f"{where}: not a keypin release: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CommandError(f"{where}: not a keypin release (format {FORMAT})")
    return m


def _put(path: Path, src: Path | None, data: bytes | None = None) -> None:
    """Write path via a temporary file in its directory, fsync, one rename."""
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if src is not None:
                with open(src, "rb") as s:
                    shutil.copyfileobj(s, f)
            else:
                f.write(data or b"")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(rel: Release, dest: Path, force: bool = False) -> list[str]:
    """Files first (by content: a release being published never changes one in use), then
    release.json, then release.version, each by one rename: a half-published release is never
    visible. Refuses to publish a version not newer than the one there (unless force)."""
    dest.mkdir(parents=True, exist_ok=True)
    cur = dest / "release.json"
    if cur.is_file() and not force:
        old = read_release(cur.read_bytes(), str(cur))
        if int(old.get("version", 0)) >= rel.version:
            raise CommandError(f"{cur} is version {old.get('version')}; version {rel.version} is not newer "
                               "(devices would refuse it; --force to replace anyway)")
    (dest / "blobs").mkdir(exist_ok=True)
    written = []
    for h, src in sorted(rel.blobs.items()):
        b = dest / "blobs" / h
        if b.is_file() and _sha(b) == h:
            continue
        _put(b, src)
        if _sha(b) != h:
            raise CommandError(f"{src} changed while it was published")
        written.append("blobs/" + h)
    d = os.open(dest / "blobs", os.O_RDONLY)
    try:
        os.fsync(d)  # the blobs' names are on disk before the manifest that names them
    finally:
        os.close(d)
    _put(cur, None, rel.data)
    _put(dest / "release.version", None, f"{rel.version}\n".encode())
    return written + ["release.json", "release.version"]
