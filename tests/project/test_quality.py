"""Quality gates: ruff over the repository, and a type check of the device library (lib/)
against the MicroPython ESP32 stubs (micropython-esp32-stubs, put in build/mpy-stubs by
`make deps`) with mypy. Configuration: pyproject.toml."""
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _tool(name):
    exe = ROOT / ".venv" / "bin" / name
    assert exe.exists(), f"{name} not installed: run `make deps` (requirements.txt pins it)"
    return str(exe)


def test_ruff_clean():
    p = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr


def test_mypy_device_library_against_esp32_stubs():
    stubs = ROOT / "build" / "mpy-stubs"
    assert (stubs / "machine.pyi").exists() and (stubs / "stdlib").is_dir(), \
        "MicroPython stubs missing in build/mpy-stubs: run `make deps`"
    p = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert p.returncode == 0 and "Success: no issues found" in p.stdout, p.stdout[-6000:] + p.stderr


def test_mypy_catches_a_type_error(tmp_path):
    """The gate can fail: the same configuration rejects a device module with a type error."""
    bad = tmp_path / "bad.py"
    bad.write_text("import tls\nctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)\nctx.wrap_socket(1, 2, 3, 4, 5)\n"
                   "x: int = 'not an int'\n")
    p = subprocess.run([_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), str(bad)], cwd=ROOT,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 1 and "bad.py:4: error" in p.stdout, p.stdout + p.stderr
