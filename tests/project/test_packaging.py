"""package.json (mip) and firmware/manifest.py (freezing) name exactly the device library."""
import json
import pathlib
import runpy
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_package_json_lists_every_device_module():
    sys.path.insert(0, str(ROOT / "tools"))
    from gen_package_json import package_json
    got = json.loads((ROOT / "package.json").read_text())
    assert got == package_json(), "package.json is stale: run .venv/bin/python tools/gen_package_json.py"
    for dest, src in got["urls"]:
        assert (ROOT / src).is_file() and dest == "keypin/" + pathlib.Path(src).name
    assert ["umqtt.simple", "latest"] in got["deps"]


def test_manifest_freezes_the_keypin_package():
    calls = []
    env = {"require": lambda *a, **k: calls.append(("require", a, k)),
           "package": lambda *a, **k: calls.append(("package", a, k))}
    # run it with the manifest functions as globals, as MicroPython's manifest processing does
    runpy.run_path(str(ROOT / "firmware/manifest.py"), init_globals=env)
    assert ("require", ("umqtt.simple",), {}) in calls
    pkg = [c for c in calls if c[0] == "package"]
    assert len(pkg) == 1 and pkg[0][1] == ("keypin",)
    base = (ROOT / "firmware" / pkg[0][2]["base_path"]).resolve()
    assert (base / "keypin" / "__init__.py").is_file()


def test_mip_layout_imports_in_unix_port(tmp_path):
    """Install the files where package.json puts them (as mip would) and import them there."""
    got = json.loads((ROOT / "package.json").read_text())
    lib = tmp_path / "lib"
    for dest, src in got["urls"]:
        (lib / dest).parent.mkdir(parents=True, exist_ok=True)
        (lib / dest).write_bytes((ROOT / src).read_bytes())
    env = {"MICROPYPATH": f".frozen:{lib}", "PATH": "/usr/bin:/bin"}
    mods = [f"keypin.{pathlib.Path(d).stem}" for d, _ in got["urls"] if not d.endswith("__init__.py")]
    p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c",
                        "import keypin.spki as s\n" + "".join(f"import {m}\n" for m in mods)
                        + "print(s.IMPL)"], check=False, capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "python"  # no native module in a mip install: the reference is used
