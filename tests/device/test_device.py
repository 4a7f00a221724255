"""Runs the device tests (tests/device/dev_*.py) in the MicroPython Unix port.

Each device module runs once per (module, native/python) in a subprocess; each of its
test_* functions is reported here as its own pytest test, so CI counts them.
"""
import ast
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEV = ROOT / "tests" / "device"
_cache = {}


def _cases():
    for f in sorted(DEV.glob("dev_*.py")):
        tree = ast.parse(f.read_text())
        text = f.read_text()
        impls = (["native", "viper", "python"] if "# run: all" in text
                 else ["native", "python"] if "# run: both" in text else ["native"])
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for impl in impls:
                    yield pytest.param(f.stem, node.name, impl, id=f"{f.stem}::{node.name}[{impl}]")


def _run(mod, impl, env_extra):
    key = (mod, impl)
    if key not in _cache:
        env = dict(os.environ, **env_extra)
        env["KEYPIN_NATIVE"] = {"native": "1", "viper": "viper"}.get(impl, "0")
        env["KEYPIN_EXPECT_IMPL"] = impl
        p = subprocess.run([str(ROOT / "tools" / "upy"), str(DEV / "runner.py"), mod],
                           check=False, capture_output=True, text=True, env=env, timeout=600, cwd=str(ROOT))
        res = {}
        for line in p.stdout.splitlines():
            if line.startswith("KPTEST "):
                _, verdict, rest = line.split(" ", 2)
                name, _, err = rest.partition(":")
                res[name] = (verdict, err.strip())
        _cache[key] = (res, p)
    return _cache[key]


@pytest.mark.parametrize("mod,name,impl", list(_cases()))
def test_device(mod, name, impl, device_env):
    res, p = _run(mod, impl, device_env)
    assert name in res, f"{mod}.{name} did not run (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    verdict, err = res[name]
    assert verdict == "PASS", f"{mod}.{name} [{impl}] failed:\n{eval(err) if err else ''}\n{p.stderr}"
