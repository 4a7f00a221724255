"""Images and boards: ``keypin image``, ``deploy``, ``provision``, ``status``, ``flash``."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .. import board, flash, image, pindoc
from ..errors import CommandError
from ..util import add_json_arg, note, read_input
from .common import address

# --------------------------------------------------------------------------------------- image


def cmd_image(a) -> int:
    out = Path(a.out)
    res = image.build_image(out, Path(a.src) if a.src else image.repo_root(), a.arch,
                            Path(a.config) if a.config else None, Path(a.pins) if a.pins else None,
                            a.force)
    for n in res.notes:
        note(n)
    w = max(len(p) for p, _ in res.files)
    for p, n in res.files:
        print(f"  {p:<{w}} {n:7d}")
    impl = {"native": "native (C)", "viper": "viper"}.get(res.spki, "pure-Python fallback")
    print(f"{out}: {len(res.files)} files, {res.total} bytes ({a.arch}, SPKI {impl}) + MANIFEST")
    return 0


# ------------------------------------------------------------------------------ board commands


def deploy_plan(img: Path, manifest: list[tuple[str, str]], remote: dict[str, str | None],
                data: set[str] | frozenset[str] = frozenset(image.DATA_FILES)):
    """-> (files to copy [(local, device, sha)], kept data files, unchanged files).

    Data files (config.json, the pin document) already on the board are kept: the board may have
    rotated its pins since; `keypin provision` replaces them on purpose."""
    copy, kept, same = [], [], []
    for rel, sha in manifest:
        dev = board.device_path(rel)
        have = remote.get(dev)
        if rel in data and have is not None:
            if have != sha:
                kept.append(dev)
            else:
                same.append(dev)
            continue
        if have == sha:
            same.append(dev)
        else:
            copy.append((str(img / rel), dev, sha))
    return copy, kept, same


def cmd_deploy(a) -> int:
    img = Path(a.image)
    manifest = image.read_manifest(img)
    remote = board.remote_hashes(a.port, [board.device_path(r) for r, _ in manifest])
    copy, kept, same = deploy_plan(img, manifest, remote, image.data_files(img))
    stale = [p for p in board.shadowing_sources([d for _, d, _ in copy] + same) if remote.get(p, 1) is not None]
    board.push_and_verify(a.port, copy, stale)
    for d in kept:
        note(f"kept the board's {d} (it may hold rotations); replace it with keypin provision")
    print(f"deployed {img} to {a.port}: {len(copy)} copied, {len(same)} unchanged, {len(kept)} kept; "
          "all verified by SHA-256")
    print(f"reset the board to run it (mpremote connect {a.port} reset)")
    return 0


def provision_files(config: Path, pins: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """-> ([(local, device path, sha256)], device files to remove first).

    The pin document goes where config.json says ("pins", default pins.json); the store's older and
    half-written generations (.old, .new) and the second copy (.2, .2.new) are removed, else a higher
    seq there would win on the board."""
    cdata, pdata = read_input(str(config)), read_input(str(pins))
    cfg = image.validate_config(cdata, str(config))
    pindoc.parse(pdata, str(pins))
    dev_pins = board.device_path(image.pins_path(cfg, str(config)))
    files = [(str(config), board.device_path(board.DEVICE_CONFIG), hashlib.sha256(cdata).hexdigest()),
             (str(pins), dev_pins, hashlib.sha256(pdata).hexdigest())]
    # (pin document v2: the second current copy .2 and the temporaries .new, .2.new too)
    return files, [dev_pins + x for x in (".old", ".new", ".2", ".2.new")]


def cmd_provision(a) -> int:
    files, remove = provision_files(Path(a.config), Path(a.pins))
    board.push_and_verify(a.port, files, remove)
    print(f"provisioned {a.port}: {files[0][1]}, {files[1][1]} (verified by SHA-256; older pin generations "
          "removed)")
    return 0


def cmd_status(a) -> int:
    if a.json:  # the board's facts and pin store as one JSON object (mpremote exec, like doctor)
        from .doctor import emit_status
        emit_status(a.port)
        return 0
    board.check_port(a.port)
    argv = board.exec_command(a.port, board.STATUS_CODE)
    r = subprocess.run(argv, check=False)
    if r.returncode != 0:
        raise CommandError(f"mpremote failed on {a.port} (exit status {r.returncode})")
    return 0


def cmd_flash(a) -> int:
    fw = Path(a.firmware)
    if not fw.is_file():
        raise CommandError(f"{fw}: no such firmware file")
    chip = flash.detect_chip(a.port) if a.chip == "auto" else a.chip
    chip, offset, _ = flash.plan(fw, chip, a.offset)
    quiet = not sys.stdout.isatty()  # esptool's own progress (bytes, percent) on a terminal only
    for argv in flash.flash_commands(a.port, chip, str(fw), offset, a.baud, erase=not a.no_erase, quiet=quiet):
        flash.run_esptool(argv)
    print(f"flashed {fw} ({chip}) at 0x{offset:x} on {a.port}")
    return 0



def args_image(p):
    p.add_argument("--out", required=True, metavar="DIR", help="image directory (must be empty or absent)")
    p.add_argument("--arch", choices=image.ARCHES, default="xtensawin",
                   help="mpy-cross arch: xtensawin = ESP32/S2/S3, x64 = Unix port (default xtensawin)")
    p.add_argument("--config", metavar="FILE", help="config.json to include")
    p.add_argument("--pins", metavar="FILE", help="pin document to include as pins.json (validated)")
    p.add_argument("--force", action="store_true", help="replace an existing image in --out")
    p.add_argument("--src", metavar="DIR", help="keypin source tree (default: this checkout)")


def args_status(p):
    port_arg(p)
    add_json_arg(p)


def port_arg(p):
    p.add_argument("--port", default="auto", type=board.resolve_port, metavar="PORT",
                   help="serial port of the board, e.g. /dev/ttyUSB0; auto (default): the first USB serial port, "
                        "as mpremote picks it (keypin devs lists them)")


def args_deploy(p):
    port_arg(p)
    p.add_argument("--image", default="build/image-xtensawin", metavar="DIR",
                   help="image directory (default build/image-xtensawin, what make build writes)")


def args_provision(p):
    port_arg(p)
    p.add_argument("--config", required=True, metavar="FILE", help="config.json")
    p.add_argument("--pins", required=True, metavar="FILE", help="pin document")


def args_flash(p):
    port_arg(p)
    p.add_argument("--firmware", required=True, metavar="FILE.bin", help="MicroPython firmware for the chip")
    p.add_argument("--chip", choices=["auto"] + sorted(flash.OFFSETS), default="auto",
                   help="chip (default: detect)")
    p.add_argument("--offset", type=address, metavar="ADDR",
                   help="override the write offset (default: by chip)")
    p.add_argument("--baud", type=int, default=460800, help="baud rate for writing (default 460800)")
    p.add_argument("--no-erase", action="store_true", help="do not erase the whole flash first")

