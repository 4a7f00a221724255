"""The viper SPKI module run by a real 32-bit MicroPython (x86, -m32), as the boards run it: 32-bit words.

tests/firmware/upy32 builds a small interpreter from the py/ core of the natmod kit (MicroPython 1.23,
build/mpy-kit, fetched by make deps) with gcc -m32 (Debian's gcc-multilib, installed by make deps) and
its x86 viper emitter. It compiles firmware/viper/keypin_spkiv.py itself and runs it on the vector
table, the malformed table, a fuzz sample and lengths at 2**31, against the Python reference and
hashlib computed here. The boards' builds come from mpy-cross 1.29 for xtensawin/rv32imc; this is the
same source with the same word size (test_viper_words.py models the emitter's rules on top).
The two 32-bit-only mutants of test_viper_words.py must fail here too: the interpreter really has
32-bit words.
"""
import hashlib
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = (ROOT / "firmware" / "viper" / "keypin_spkiv.py").read_text()
KIT = ROOT / "build" / "mpy-kit" / "micropython"
BUILD = ROOT / "build" / "upy32"
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_viper_words import inputs, reference


@pytest.fixture(scope="module")
def upy32():
    if not (KIT / "py" / "py.mk").is_file():
        pytest.fail(f"{KIT} missing: run make deps (it fetches MicroPython's natmod kit)")
    probe = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}",
                           capture_output=True, text=True, check=False)
    if probe.returncode:
        pytest.fail("gcc -m32 cannot link: apt-get install gcc-multilib (make deps does)\n" + probe.stderr[-500:])
    BUILD.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["make", "-s", "-C", str(ROOT / "tests" / "firmware" / "upy32"), f"TOP={KIT}",
                        f"BUILD={BUILD}"], capture_output=True, text=True, check=False, timeout=600)
    exe = BUILD / "upy32"
    assert p.returncode == 0 and exe.is_file(), p.stdout[-3000:] + p.stderr[-3000:]
    return exe


def _script(src, cases, find):
    rows = []
    for label, der in cases:
        want = find(der)
        if isinstance(want, int):
            rows.append((label, der, want, None))
        else:
            rows.append((label, der, want, hashlib.sha256(der[want[0]:want[1]]).digest()))
    return src + "\n\n" + "CASES = [\n" + "".join(f"    ({lab!r}, {d!r}, {w!r}, {h!r}),\n" for lab, d, w, h in rows) + """]
_out = bytearray(32)
_bad = 0
for _lab, _der, _want, _dig in CASES:
    _got = find(_der)
    _rc = sha256_into(memoryview(_der), _out)
    if isinstance(_want, int):
        _ok = _got == _want and _rc == _want
    else:
        _ok = _got == _want and _rc == 0 and bytes(_out) == _dig
    if not _ok:
        _bad += 1
        print("MISMATCH", _lab, _want, _got, _rc)
print("CHECKED", len(CASES), "BAD", _bad)
"""


def _run(exe, src, cases, find, tmp_path, chunk=150):
    bad = checked = 0
    lines = []
    for i in range(0, len(cases), chunk):
        f = tmp_path / f"case{i}.py"
        f.write_text(_script(src, cases[i:i + chunk], find))
        p = subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=False, timeout=300)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        last = p.stdout.strip().splitlines()[-1].split()
        assert last[0] == "CHECKED", p.stdout[-2000:]
        checked += int(last[1])
        bad += int(last[3])
        lines += [ln for ln in p.stdout.splitlines() if ln.startswith("MISMATCH")]
    return checked, bad, lines


def test_interpreter_has_32_bit_viper_words(upy32, tmp_path):
    f = tmp_path / "w.py"
    f.write_text("import micropython\n@micropython.viper\ndef f(x: int) -> int:\n    return int((uint(x) << 31) << 1)\n"
                 "@micropython.viper\ndef g(b) -> int:\n    p = ptr32(b)\n    return p[0] >> 4\n"
                 "print(f(3), g(bytearray(b'\\xff\\xff\\xff\\xff')))\n")
    p = subprocess.run([str(upy32), str(f)], capture_output=True, text=True, check=False, timeout=60)
    assert p.stdout.split() == ["0", "-1"], p.stdout + p.stderr  # wraps at 32 bits; a word load is signed


def test_viper_module_with_32_bit_words(upy32, vectors_dir, tmp_path):
    cases = inputs(vectors_dir)
    checked, bad, lines = _run(upy32, SRC, cases, reference(), tmp_path)
    assert checked == len(cases) > 1000
    assert bad == 0, lines[:20]


def test_32_bit_mutants_fail_here(upy32, vectors_dir, tmp_path):
    cases = [c for c in inputs(vectors_dir) if c[0].endswith(".der") or c[0].startswith("len")]
    guard = "            if k == 4 and b[p] >= 0x80:\n"
    cast = "                y = uint(s[_W + ((i + 14) & 15)])  # w[i-2]\n"
    assert guard in SRC and cast in SRC
    for name, src in (("length formed in a word", SRC.replace(guard, "            if False:\n")),
                      ("signed schedule word", SRC.replace(cast, "                y = s[_W + ((i + 14) & 15)]\n"))):
        _, bad, _ = _run(upy32, src, cases, reference(), tmp_path)
        assert bad > 0, f"{name}: not caught with real 32-bit words"
