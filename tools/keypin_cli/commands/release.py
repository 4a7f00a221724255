"""``keypin release``: a signed release of the device software, written to --out and/or published
into a directory an HTTPS server serves (--publish)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .. import image, material, release, signed
from ..errors import CommandError
from ..util import add_json_arg, emit_json, note
from .common import passphrase_arg


def cmd_release(a) -> int:
    if not a.out and not a.publish:
        raise CommandError("give --publish DIR (the directory nginx serves) and/or --out DIR")
    key = signed.load_private(a.key, material.passphrase_from(a.passphrase))
    nxt = signed.resolve_signer(a.next_signer, material.passphrase_from(a.passphrase)) if a.next_signer else None
    tmp = None
    try:
        if a.image:
            img = Path(a.image)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="keypin-release-"))
            img = tmp / "image"
            res = image.build_image(img, image.repo_root(), a.arch, None, None)
            for n in res.notes:
                note(n)
        files = release.merge(release.image_files(img), [release.parse_extra(s) for s in a.file or []])
        pins = image.pins_path(image.validate_config((img / "config.json").read_bytes(), "config.json")
                               if (img / "config.json").is_file() else None)
        rel = release.build(files, a.version, a.min_version, a.fleet, a.device, key, nxt,
                            Path(a.firmware) if a.firmware else None, pins)
        if a.out:
            out = Path(a.out)
            if out.exists() and any(out.iterdir()):
                raise CommandError(f"{out} is not empty (nothing written)")
            release.publish(rel, out)
        written = release.publish(rel, Path(a.publish), a.force) if a.publish else []
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    m = rel.manifest
    aud = m["audience"]
    if a.json:
        emit_json("release", {"version": rel.version, "min_version": m["min_version"], "audience": aud,
                              "signer": m["signer"], "files": m["files"], "firmware": m["firmware"],
                              "out": a.out, "publish": a.publish, "written": written})
        return 0
    for f in m["files"]:
        print(f"  {f['path']:<28} {f['size']:7d} {f['sha256'][:16]}")
    if m["firmware"]:
        print(f"  {'(firmware image)':<28} {m['firmware']['size']:7d} {m['firmware']['sha256'][:16]}")
    who = f"fleet {aud['fleet']}" + (f", devices {', '.join(aud['devices'])}" if "devices" in aud else "")
    print(f"release {rel.version} (updates from {m['min_version']} or later) for {who}: {len(m['files'])} files, "
          f"{sum(f['size'] for f in m['files'])} bytes; next signer {m['signer']}")
    if a.publish:
        print(f"published in {a.publish}: {len(written) - 2} new file(s), then release.json, release.version")
    return 0


def args_release(p):
    p.add_argument("--key", required=True, metavar="FILE",
                   help="the offline Ed25519 release signer's private key (keypin signer keygen)")
    p.add_argument("--version", required=True, type=int, metavar="V", help="this release's version (>= 1)")
    p.add_argument("--min-version", type=int, default=0, metavar="M",
                   help="devices below version M refuse it (default 0: any, the factory software included)")
    p.add_argument("--fleet", required=True, help="the audience: devices whose pin document names this fleet")
    p.add_argument("--device", action="append", metavar="ID", help="only these device ids (repeat)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", metavar="DIR", help="a keypin image (its config.json and pins are left out)")
    src.add_argument("--arch", default="xtensawin", choices=image.ARCHES,
                     help="without --image: build one from this checkout (default xtensawin)")
    p.add_argument("--file", action="append", metavar="SRC[=DEST]", help="a user file to ship too (repeat)")
    p.add_argument("--firmware", metavar="BIN", help="a MicroPython firmware image for the OTA partition (ESP32)")
    p.add_argument("--next-signer", metavar="SIGNER",
                   help="rotate the release signer: ed25519/<base64> or a key file; later releases need that key")
    p.add_argument("--out", metavar="DIR", help="write the release into this new directory")
    p.add_argument("--publish", metavar="DIR",
                   help="publish into the served directory: files, then release.json, then release.version")
    p.add_argument("--force", action="store_true", help="publish even if DIR holds a version not older")
    passphrase_arg(p)
    add_json_arg(p)
