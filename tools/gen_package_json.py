"""Regenerate package.json (for `mpremote mip install`) from lib/keypin/*.py.

Run after adding a device module: .venv/bin/python tools/gen_package_json.py
tests/project/test_packaging.py fails when package.json is out of date.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from keypin_cli import __version__


def package_json():
    files = sorted(p.name for p in (ROOT / "lib" / "keypin").glob("*.py"))
    return {"urls": [[f"keypin/{f}", f"lib/keypin/{f}"] for f in files],
            "deps": [["umqtt.simple", "latest"]],
            "version": __version__}


if __name__ == "__main__":
    (ROOT / "package.json").write_text(json.dumps(package_json(), indent=2) + "\n")
