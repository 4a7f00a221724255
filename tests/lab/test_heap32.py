"""The 32-bit heap stage (tools/lab/bench/heap32) measures what is live, and can tell sizes apart.

The WebAssembly port collects garbage only back at the top level; runner.mjs runs each step in a
call of its own and reads the heap in the next. Here: a module holding 10 KiB reads as ~10 KiB, a
step that allocates and drops 200 KiB reads as ~0, and the real umqtt case gives its anchor.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "lab" / "bench"))
from heap32 import heap32

PROBE = """
import gc, json, sys
MARKS = [0] * 8
def _ballast():
    import ballast  # noqa: F401
def _garbage():
    x = [bytearray(1000) for _ in range(200)]
    return len(x)
STEPS = [("ballast", _ballast), ("garbage", _garbage)]
def _run(i):
    STEPS[i][1]()
    gc.collect()
def _mark(i):
    MARKS[i] = gc.mem_alloc()
def _qstr(i, *info):
    pass
def _report():
    b = MARKS[len(STEPS)]
    print("HEAP32 " + json.dumps({"kib": 0, "steps": [[STEPS[i][0], round((MARKS[i] - b) / 1024, 2), 0]
                                                      for i in range(len(STEPS))]}))
"""


def _need_wasm():
    if shutil.which("node") is None:
        pytest.fail("node not found: apt-get install nodejs npm (make deps does)")
    if not heap32.WASM_MODULE.is_file():
        pytest.fail(f"{heap32.WASM_MODULE} missing: run make deps (it installs {heap32.WASM_PKG} with npm)")


def test_live_heap_not_allocations(tmp_path):
    _need_wasm()
    files = tmp_path / "files"
    (files / "lib").mkdir(parents=True)
    (files / "lib" / "ballast.py").write_text("X = bytearray(10240)\n")
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    got = heap32.node_case(files, "probe", script)
    steps = {s[0]: s[1] for s in got["steps"]}
    assert 10.0 <= steps["ballast"] <= 11.5, got  # the 10 KiB bytearray (+ the module)
    assert steps["garbage"] - steps["ballast"] < 1.0, got  # 200 KiB allocated and dropped: not live


def test_umqtt_anchor(tmp_path):
    _need_wasm()
    files = heap32.prepare(tmp_path)
    got = heap32.node_case(files, "umqtt")
    assert 3.0 <= got["kib"] <= 6.0, got  # umqtt.simple alone: about 4.3 KiB on 32 bits
    assert json.loads(json.dumps(got))["modules"] == ["umqtt", "umqtt.simple"]
