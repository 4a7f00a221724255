"""The soak and bench charts from small made-up figures: real PNGs with a title, axis labels
with units and a legend (the fleet chart is checked by test_fleet_small.py on a real run)."""
import importlib.util
import json
import pathlib
import sys

from helpers.pngcheck import read_png

ROOT = pathlib.Path(__file__).resolve().parents[2]


def harness(name):
    sys.path.insert(0, str(ROOT / "tools/lab" / name))  # as when run as a script: its own folder first
    spec = importlib.util.spec_from_file_location(f"lab_{name}", ROOT / "tools/lab" / name / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_soak_chart(tmp_path):
    cps = [{"cycle": c, "heap": 20000 + (c % 7) * 10, "fds": 6} for c in (50, 200, 400, 600)]
    png = harness("soak").chart(tmp_path / "soak.png", cps, 1024)
    img = read_png(png)
    assert (img["width"], img["height"]) == (800, 450) and img["colours"] >= 8
    assert img["text"]["Title"] == "keypin soak: device heap and descriptors over 600 cycles"
    assert img["text"]["Description"] == (
        "x: connect cycle (1 HTTPS + 1 MQTTS each); y: heap in use after gc.collect() (bytes); "
        "y: open file descriptors (count); legend: heap (bytes), heap budget (first + 1024 B), descriptors (count)")


def test_bench_chart(tmp_path):
    src = tmp_path / "bench.json"
    src.write_text(json.dumps({"spki_native_over_hash": 1.2, "spki_python_over_native": 6.1,
                               "handshake_pinned_over_unpinned": 1.01, "image_bytes": 30000}))
    img = read_png(harness("bench").chart(src, tmp_path / "bench.png"))
    assert (img["width"], img["height"]) == (800, 450) and img["colours"] >= 8
    assert img["text"]["Title"] == "keypin bench: cost ratios (1 = no overhead)"
    assert img["text"]["Description"] == ("x: ratio (times, log scale); y: figure; "
                                          "legend: target (at most), 1 (equal cost), measured")
