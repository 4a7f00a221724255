"""Fuzzing of the SPKI parser: libFuzzer (ASan + UBSan) over spki_core.c and the differential
stage (native module vs Python reference in the Unix port vs cryptography).

test_fuzz_bounded is the bounded run the project requires in `make test` (>= 60 s of
libFuzzer); the other tests show that each stage reports what it should, so they can fail.
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / ".venv" / "bin" / "python"
FUZZ_SH = ROOT / "tools" / "lab" / "fuzz" / "fuzz.sh"
DIFFFUZZ = ROOT / "tools" / "lab" / "fuzz" / "difffuzz.py"
FINAL = re.compile(r"^fuzz: (\d+) execs, (\d+) crashes, (\d+) disagreements$")
DIFF_FINAL = re.compile(r"^difffuzz: (\d+) inputs, (\d+) disagreements$")
INSTALL = "clang with the libFuzzer runtime is needed for the fuzz tests: apt-get install clang"


def _require_libfuzzer(tmp_path):
    # no skip: a machine without clang/libFuzzer fails the fuzz tests with the fix in the message
    if shutil.which("clang") is None:
        pytest.fail("clang not found. " + INSTALL)
    src = tmp_path / "probe.c"
    src.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                   "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
    p = subprocess.run(["clang", "-fsanitize=fuzzer,address,undefined", str(src), "-o",
                        str(tmp_path / "probe")], capture_output=True, text=True, check=False, timeout=120)
    if p.returncode != 0:
        pytest.fail("clang cannot link a libFuzzer target:\n" + p.stderr[-1500:] + "\n" + INSTALL)


def _run_fuzz(seconds, env_extra, timeout):
    env = {**os.environ, **env_extra}
    p = subprocess.run([str(FUZZ_SH), str(seconds)], cwd=ROOT, capture_output=True, text=True,
                       env=env, check=False, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = p.stdout.strip().splitlines()
    return p, (lines[-1] if lines else "")


def _cert():
    key = ec.derive_private_key(0x6B657970696E, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "difffuzz.example.test")])
    when = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(when).not_valid_after(when + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256(), ecdsa_deterministic=True))
    return cert.public_bytes(Encoding.DER)


def _difffuzz(files, env_extra=None, timeout=120):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(PY), str(DIFFFUZZ), "--out", str(Path(files[0]).parent / "out"),
                           "--input", *map(str, files)], cwd=ROOT, capture_output=True, text=True,
                          env=env, check=False, timeout=timeout)


def test_fuzz_bounded(tmp_path):
    # >= 60 s of libFuzzer, then a few thousand differential inputs plus libFuzzer's corpus;
    # crash inputs and disagreements stay in build/fuzz/ for a look afterwards
    _require_libfuzzer(tmp_path)
    # 61: libFuzzer's own clock decides when to stop; a second of slack keeps ">= 60 s" true
    p, last = _run_fuzz(61, {"FUZZ_SEED": "1", "FUZZ_DIFF_COUNT": "5000"}, timeout=900)
    m = FINAL.match(last)
    assert m, f"no final line (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    execs, crashes, dis = map(int, m.groups())
    assert crashes == 0, f"{last}; see build/fuzz/crashes and build/fuzz/libfuzzer.log\n{p.stderr[-3000:]}"
    assert dis == 0, f"{last}; see build/fuzz/diff\n{p.stdout[-3000:]}"
    assert execs > 5000, last
    assert p.returncode == 0, p.stderr[-3000:]
    # the libFuzzer stage really ran for the whole minute
    done = re.search(r"^Done (\d+) runs in (\d+) second", p.stdout, re.MULTILINE)
    assert done and int(done.group(2)) >= 60, p.stdout[-2000:]


def test_fuzz_sh_reports_a_crash(tmp_path):
    # a core with one bounds check removed: the libFuzzer stage must find and keep a crash
    _require_libfuzzer(tmp_path)
    core = (ROOT / "firmware" / "spki" / "spki_core.c").read_text()
    check = "    if (n > end - pos) {\n        return KP_ERR_TRUNC;"
    assert check in core
    bad = tmp_path / "spki_core.c"
    bad.write_text(core.replace(check, "    if (0) {\n        return KP_ERR_TRUNC;"))
    shutil.copy(ROOT / "firmware" / "spki" / "spki_core.h", tmp_path / "spki_core.h")
    out = tmp_path / "fuzz"
    p, last = _run_fuzz(20, {"FUZZ_CORE": str(bad), "FUZZ_OUT": str(out), "FUZZ_DIFF_COUNT": "100"},
                        timeout=300)
    m = FINAL.match(last)
    assert m, f"no final line (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    assert int(m.group(2)) >= 1, last
    assert p.returncode == 1
    assert list((out / "crashes").glob("crash-*")), "crash input not kept"
    assert "heap-buffer-overflow" in p.stderr


def _variants(der):
    # corruptions with the code both parsers must give
    assert der[:2] == b"\x30\x82"
    n = int.from_bytes(der[2:4], "big")
    return {
        "good": (der, None),
        "nonminimal": (b"\x30\x83\x00" + der[2:], -6),  # outer length with a leading zero byte
        "indefinite": (b"\x30\x80" + der[4:] + b"\x00\x00", -4),
        "lenlen": (b"\x30\x85\x00\x00\x00" + der[2:], -5),
        "truncated": (der[:-1], -2),
        "trailing": (der + b"\x00", -7),
        "tag": (b"\x31" + der[1:], -3),
        "short": (b"\x30\x82" + (n - 1).to_bytes(2, "big") + der[4:], -7),
        "empty": (b"", -1),
    }


def test_difffuzz_corrupted_inputs_agree(tmp_path):
    files, want = [], {}
    for name, (data, code) in _variants(_cert()).items():
        f = tmp_path / f"{name}.der"
        f.write_bytes(data)
        files.append(f)
        want[str(f)] = code
    p = _difffuzz(files)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert DIFF_FINAL.match(lines[-1]) and lines[-1].endswith(f"{len(files)} inputs, 0 disagreements")
    for f, code in want.items():
        v = [ln for ln in lines if ln.startswith(f"difffuzz: {f}: ")]
        assert len(v) == 1, p.stdout
        verdict = v[0][len(f"difffuzz: {f}: "):]
        assert verdict.endswith("-> agree"), verdict
        if code is None:
            assert re.match(r"^\d+ \d+ [0-9a-f]{64} -> agree$", verdict), verdict
        else:
            assert verdict == f"{code} -> agree", (f, verdict)
    # the good certificate was also checked against cryptography's pin
    assert "pins equal 1," in p.stdout


def test_difffuzz_reports_a_disagreement(tmp_path):
    # a Python reference that rejects everything with ERR_TAG, put in front of lib/ on the path
    stub = tmp_path / "stub" / "keypin"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    (stub / "spkiref.py").write_text("def python_find(der):\n    return -3\n\n\n"
                                  "def python_sha256(der):\n    return -3\n")
    good = tmp_path / "good.der"
    good.write_bytes(_cert())
    bad = tmp_path / "bad.der"
    bad.write_bytes(b"\x31\x00")  # both say -3 here: agreement even with the stub
    p = _difffuzz([good, bad], {"UPY_PATH": str(tmp_path / "stub")})
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "difffuzz: 2 inputs, 1 disagreements"
    assert f"DISAGREE {good}" in p.stdout
    assert list((tmp_path / "out").glob("disagree-*.der"))


def test_difffuzz_generation_is_deterministic():
    sys.path.insert(0, str(ROOT / "tools" / "lab" / "fuzz"))
    try:
        import difffuzz
    finally:
        sys.path.remove(str(ROOT / "tools" / "lab" / "fuzz"))
    seeds = [_cert()]
    a = difffuzz.generate(400, 5, seeds)
    assert a == difffuzz.generate(400, 5, seeds)
    assert a != difffuzz.generate(400, 6, seeds)
    assert len(a) == 400 and len(set(a)) > 300


def test_difffuzz_checks_the_viper_module(tmp_path):
    # a viper module that accepts every certificate with a zero span, put in front of the path:
    # the differential stage must name the viper module as disagreeing
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "keypin_spkiv.py").write_text(
        "def find(der):\n    return (0, 0)\n\n\ndef sha256(der):\n    return bytes(32)\n\n\n"
        "def sha256_into(der, out):\n    out[:32] = bytes(32)\n    return 0\n")
    good = tmp_path / "good.der"
    good.write_bytes(_cert())
    p = _difffuzz([good], {"UPY_PATH": str(stub)})
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "difffuzz: 1 inputs, 1 disagreements"
    assert f"DISAGREE {good}" in p.stdout and "viper find" in p.stdout, p.stdout
