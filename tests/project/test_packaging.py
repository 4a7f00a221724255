"""package.json (mip) and firmware/manifest.py (freezing) name exactly the device library."""
import json
import pathlib
import runpy
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _gen():
    sys.path.insert(0, str(ROOT / "tools"))
    import gen_package_json
    return gen_package_json


def test_package_json_lists_every_device_module():
    gen = _gen()
    got = json.loads((ROOT / "package.json").read_text())
    assert got == gen.package_json(), "package.json is stale: run .venv/bin/python tools/gen_package_json.py"
    for dest, src in got["urls"]:
        assert (ROOT / src).is_file() and dest == "keypin/" + pathlib.Path(src).name
    assert ["umqtt.simple", "latest"] in got["deps"]
    # every generated file is committed as generated: the per-arch packages, app.json and the
    # compiled viper modules they point at (the same mpy-cross output keypin image ships)
    for path, data in gen.outputs().items():
        assert (ROOT / path).read_bytes() == data, f"{path} is stale: run .venv/bin/python tools/gen_package_json.py"


MPY_ARCH = {"xtensawin": 0x2B, "rv32imc": 0x2F}


def test_per_arch_packages_offer_the_viper_module():
    for arch, flag in MPY_ARCH.items():
        got = json.loads((ROOT / f"package-{arch}.json").read_text())
        base = json.loads((ROOT / "package.json").read_text())
        extra = [u for u in got["urls"] if u not in base["urls"]]
        assert extra == [["keypin_spkiv.mpy", f"firmware/mip/{arch}/keypin_spkiv.mpy"]], extra
        mod = (ROOT / extra[0][1]).read_bytes()
        assert mod[:2] == b"M\x06" and mod[2] == flag, (arch, mod[:4])
        assert got["deps"] == base["deps"]
    app = json.loads((ROOT / "app.json").read_text())
    assert app["urls"] == [["boot.py", "boot.py"], ["main.py", "main.py"]]


def _mip_install(pkg, target):
    # what mip does with a package file: each url's source copied to target/dest
    for dest, src in json.loads((ROOT / pkg).read_text())["urls"]:
        (target / dest).parent.mkdir(parents=True, exist_ok=True)
        (target / dest).write_bytes((ROOT / src).read_bytes())


def test_mip_app_and_arch_package_run_in_unix_port(tmp_path):
    """package-xtensawin.json into /lib and app.json into / (mip --target /): main.py runs; the
    xtensawin module is refused by the x64 Unix port and the reference takes over, while an x64 build
    of the same module in its place is used (IMPL viper)."""
    _mip_install("package-xtensawin.json", tmp_path / "lib")
    _mip_install("app.json", tmp_path)
    env = {"MICROPYPATH": f".frozen:{tmp_path / 'lib'}:{ROOT / 'build' / 'umqtt-pypi'}", "PATH": "/usr/bin:/bin"}
    mp = str(ROOT / ".venv/bin/micropython")
    p = subprocess.run([mp, "-c", "import keypin.spki as s; print(s.IMPL)"], check=False, capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "python", p.stdout + p.stderr
    p = subprocess.run([mp, "main.py"], check=False, capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert "not started" in p.stdout and "Traceback" not in p.stderr, p.stdout + p.stderr
    from keypin_cli.image import compile_viper
    compile_viper(ROOT, tmp_path / "lib" / "keypin_spkiv.mpy", "x64")
    p = subprocess.run([mp, "-c", "import keypin.spki as s; print(s.IMPL)"], check=False, capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "viper", p.stdout + p.stderr


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
    """Install the files where package.json (into /lib) and app.json (into /) put them, as mip would,
    and import them there; the root is on the path as on a board ('' there)."""
    got = json.loads((ROOT / "package.json").read_text())
    lib = tmp_path / "lib"
    _mip_install("package.json", lib)
    _mip_install("app.json", tmp_path)
    env = {"MICROPYPATH": f"{tmp_path}:.frozen:{lib}", "PATH": "/usr/bin:/bin"}
    mods = [f"keypin.{pathlib.Path(d).stem}" for d, _ in got["urls"] if not d.endswith("__init__.py")]
    p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c",
                        "import keypin.spki as s\n" + "".join(f"import {m}\n" for m in mods)
                        + "print(s.IMPL)"], check=False, capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "python"  # no native module in a mip install: the reference is used
