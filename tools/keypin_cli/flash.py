"""Flashing MicroPython firmware with esptool: chip detection, offsets, command lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .board import check_port, port_problem
from .errors import CommandError
from .util import progress

# Where a MicroPython ESP32 firmware .bin (bootloader + partition table + app) is written:
# the bootloader offset of the chip (MicroPython download pages, esptool BOOTLOADER_FLASH_OFFSET).
OFFSETS = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32s3": 0x0,
    "esp32c3": 0x0,
    "esp32c6": 0x0,
}
IMAGE_MAGIC = 0xE9


def chip_key(chip_name: str) -> str:
    """esptool's CHIP_NAME ("ESP32-S3") -> the --chip spelling ("esp32s3")."""
    return chip_name.strip().lower().replace("-", "").replace("_", "")


def offset_for(chip: str) -> int:
    try:
        return OFFSETS[chip]
    except KeyError:
        known = ", ".join(sorted(OFFSETS))
        raise CommandError(f"no known firmware offset for chip {chip!r} (known: {known}); give --offset") from None


def image_chip(data: bytes) -> str | None:
    """The chip an ESP firmware image is built for (from its extended header), None if unknown."""
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise CommandError("not an ESP firmware image (first byte 0x%02x, want 0xE9): is it the .bin from "
                           "micropython.org/download?" % (data[0] if data else 0))
    chip_id = int.from_bytes(data[12:14], "little")
    try:
        from esptool.targets import CHIP_DEFS
    except ImportError:  # pragma: no cover
        return None
    for key, cls in CHIP_DEFS.items():
        if getattr(cls, "IMAGE_CHIP_ID", None) == chip_id:
            return key
    return None


def esptool_base(port: str, chip: str, baud: int | None = None, quiet: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port]
    if baud:
        argv += ["--baud", str(baud)]
    if quiet:  # not on a terminal: esptool's progress bars and stages stay out of logs; errors still show
        argv.append("--silent")
    return argv


def flash_commands(port: str, chip: str, firmware: str, offset: int, baud: int | None = None,
                   erase: bool = True, quiet: bool = False) -> list[list[str]]:
    cmds = []
    if erase:
        cmds.append(esptool_base(port, chip, quiet=quiet) + ["erase-flash"])
    cmds.append(esptool_base(port, chip, baud, quiet) + ["write-flash", f"0x{offset:x}", firmware])
    return cmds


def plan(firmware: Path, chip: str, offset: int | None) -> tuple[str, int, str | None]:
    """Check the firmware against the chip; -> (chip, offset, built-for chip)."""
    try:
        data = firmware.read_bytes()[:64]
    except OSError as e:
        raise CommandError(f"cannot read {firmware}: {e.strerror or e}") from None
    built_for = image_chip(data)
    if built_for and built_for != chip:
        raise CommandError(f"{firmware} is built for {built_for} but the board is {chip}")
    return chip, (offset if offset is not None else offset_for(chip)), built_for


def detect_chip(port: str) -> str:
    """Needs a board: ask the ROM bootloader which chip this is."""
    why = port_problem(port)
    if why:
        raise CommandError(f"cannot detect the chip on {port}: {why}")
    progress(f"detecting the chip on {port} ...")
    try:
        from esptool.cmds import detect_chip as _detect

        with _detect(port) as esp:
            return chip_key(esp.CHIP_NAME)
    except Exception as e:  # noqa: BLE001 -- esptool raises FatalError, serial errors, OSError
        raise CommandError(f"cannot detect the chip on {port}: {e}") from None


def run_esptool(argv: list[str]) -> None:
    check_port(argv[argv.index("--port") + 1])
    r = subprocess.run(argv, check=False)
    if r.returncode != 0:
        raise CommandError(f"esptool failed (exit status {r.returncode}): {' '.join(argv[3:])}")
