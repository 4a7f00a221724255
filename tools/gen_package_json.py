"""Regenerate the mip packages (for `mpremote mip install`) from lib/keypin/*.py and the viper module.

  package.json            lib/keypin/*.py (any board; the SPKI code is the pure-Python reference)
  package-xtensawin.json  the same + lib/keypin_spkiv.mpy, the viper SPKI module compiled for ESP32,
  package-rv32imc.json    ESP32-S2, ESP32-S3 (xtensawin) or ESP32-C3, ESP32-C6 (rv32imc)
  app.json                boot.py and main.py, installed with --target / (the device application)
The compiled modules live in firmware/mip/<arch>/keypin_spkiv.mpy, built from
firmware/viper/keypin_spkiv.py by mpy-cross with the flags `keypin image` uses.

Run after changing a device module: .venv/bin/python tools/gen_package_json.py
tests/project/test_packaging.py fails when any of these is out of date.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from keypin_cli import __version__
from keypin_cli.image import VIPER, compile_viper

BOARD_ARCHES = ("xtensawin", "rv32imc")
MIP_DIR = "firmware/mip"


def package_json(arch=None):
    files = sorted(p.name for p in (ROOT / "lib" / "keypin").glob("*.py"))
    urls = [[f"keypin/{f}", f"lib/keypin/{f}"] for f in files]
    if arch is not None:
        urls.append([VIPER, f"{MIP_DIR}/{arch}/{VIPER}"])
    return {"urls": urls, "deps": [["umqtt.simple", "latest"]], "version": __version__}


def app_json():
    return {"urls": [["boot.py", "boot.py"], ["main.py", "main.py"]], "version": __version__}


def outputs():
    """-> {repository path: bytes} of every generated file."""
    out = {"package.json": package_json(), "app.json": app_json()}
    out.update({f"package-{a}.json": package_json(a) for a in BOARD_ARCHES})
    res = {k: (json.dumps(v, indent=2) + "\n").encode() for k, v in out.items()}
    tmp = ROOT / "build" / "mip"
    tmp.mkdir(parents=True, exist_ok=True)
    for a in BOARD_ARCHES:
        f = tmp / f"{a}-{VIPER}"
        compile_viper(ROOT, f, a)
        res[f"{MIP_DIR}/{a}/{VIPER}"] = f.read_bytes()
    return res


if __name__ == "__main__":
    for path, data in outputs().items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_bytes(data)
        print(f"wrote {path} ({len(data)} bytes)")
