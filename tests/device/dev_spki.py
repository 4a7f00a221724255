# run: all
# Device tests for keypin.spki / keypin.pins (Unix port). Runs three times: with the C native
# module on the path (keypin_spki), with only the viper module (keypin_spkiv, the mpy-cross x64
# build of firmware/viper/keypin_spkiv.py, the source the board images ship for xtensawin and
# rv32imc), and with neither (pure-Python reference).
import gc
import hashlib
import os
import struct

import keypin
from keypin import pins, spki, spkiref

_V = os.getenv("KEYPIN_VECTORS")


def _vectors():
    out = []
    with open(_V + "/index.txt") as index:
        for line in index:
            n, p = line.split()
            with open(_V + "/" + n + ".der", "rb") as f:
                out.append((n, f.read(), p))
    return out


def _malformed():
    with open(_V + "/malformed.bin", "rb") as f:
        b = f.read()
    p = 0
    while p < len(b):
        kind, ln = struct.unpack(">BH", b[p:p + 3])
        p += 3
        label = b[p:p + ln].decode()
        p += ln
        (dl,) = struct.unpack(">I", b[p:p + 4])
        p += 4
        yield kind, label, b[p:p + dl]
        p += dl


def test_impl_matches_path():
    assert spki.IMPL == os.getenv("KEYPIN_EXPECT_IMPL"), spki.IMPL


def test_vector_pins():
    vs = _vectors()
    assert len(vs) >= 13
    for n, der, want in vs:
        assert spki.pin_of(der) == want, n
        assert spkiref.python_pin_of(der) == want, n
        assert pins.format_pin(spki.spki_sha256(der)) == want, n
        s, e = spki.spki_range(der)
        assert der[s] == 0x30 and 0 < s < e < len(der), n


def test_vector_pins_from_memoryview():
    for n, der, want in _vectors():
        assert spki.pin_of(memoryview(der)) == want, n


def test_sha256_into_fills_slot():
    out = bytearray(32)
    for n, der, want in _vectors():
        assert spki.sha256_into(memoryview(der), out) == 0, n
        assert pins.format_pin(out) == want, n
    assert spki.sha256_into(b"\x30\x00", out) < 0


def test_malformed_table_rejected_and_agrees():
    count = 0
    must = 0
    for kind, label, data in _malformed():
        count += 1
        py = spkiref.python_find(data)
        if spki.IMPL != "python":
            nat = spki._fnd(data)
            assert nat == py, "%s: %s %r != python %r" % (label, spki.IMPL, nat, py)
            nat_s = spki._sha(data)
            py_s = spkiref.python_sha256(data)
            assert nat_s == py_s, label
            out = bytearray(32)
            rc = spki.sha256_into(memoryview(data), out)
            assert rc == (py if isinstance(py, int) else 0), (label, rc, py)
            if rc == 0:
                assert bytes(out) == py_s, label
        if kind == 1:
            must += 1
            assert isinstance(py, int) and py < 0, "%s: accepted %r" % (label, py)
            try:
                spki.pin_of(data)
                raise AssertionError("%s: pin_of accepted it" % label)
            except keypin.CertError as e:
                assert "malformed certificate" in str(e)
    assert count > 1000 and must > 1000, (count, must)


def test_error_codes_specific():
    assert spkiref.python_find(b"") == spkiref.ERR_EMPTY
    assert spkiref.python_find(b"\x30\x80\x00\x00") == spkiref.ERR_INDEF
    assert spkiref.python_find(b"\x30\x85\x00\x00\x00\x00\x01") == spkiref.ERR_LENLEN
    assert spkiref.python_find(b"\x30\x81\x05\x00\x00\x00\x00\x00") == spkiref.ERR_NONMIN
    assert spkiref.python_find(b"\x31\x00") == spkiref.ERR_TAG
    assert spkiref.python_find(b"\x30\x05\x00") == spkiref.ERR_TRUNC
    assert spkiref.python_find(b"\x30\x00\x00") == spkiref.ERR_TRAILING
    if spki.IMPL != "python":
        for b in (b"", b"\x30\x80\x00\x00", b"\x30\x85\x00\x00\x00\x00\x01", b"\x31\x00",
                  b"\x30\x84\x80\x00\x00\x00", b"\x30\x84\xff\xff\xff\xff\x00", b"\x30\x84\x00\x00\x00\x80",
                  b"\x30\x84\x7f\xff\xff\xff\x00", b"\x30\x83\x00\x00\x80", b"\x30\x82\x00\x7f"):
            assert spki._fnd(b) == spkiref.python_find(b), b
    # lengths of 2**31 and more (four length bytes, top bit set): truncation, as in C, on every
    # word size (viper: 32-bit words on the boards, never formed as a negative int)
    assert spkiref.python_find(b"\x30\x84\x80\x00\x00\x00") == spkiref.ERR_TRUNC
    assert spkiref.python_find(b"\x30\x84\x00\x00\x00\x80") == spkiref.ERR_NONMIN


def test_impl_is_the_fastest_available():
    # native C > viper > python: whatever the path offers, the first that loads is used
    want = os.getenv("KEYPIN_EXPECT_IMPL")
    for name, impl in (("keypin_spki", "native"), ("keypin_spkiv", "viper")):
        try:
            __import__(name)
            assert spki.IMPL == impl, (name, spki.IMPL)
            return
        except ImportError:
            pass
    assert spki.IMPL == "python" == want


def test_sha256_into_allocates_nothing():
    # the verify-callback path: no heap allocation per call (the Python reference allocates)
    if spki.IMPL == "python":
        return
    out = bytearray(32)
    vs = [memoryview(der) for _, der, _ in _vectors()]
    bad = memoryview(b"\x30\x05\x00")
    for mv in vs:
        spki.sha256_into(mv, out)
    gc.collect()
    gc.disable()
    try:
        a = gc.mem_alloc()
        for _ in range(20):
            for mv in vs:
                spki.sha256_into(mv, out)
            spki.sha256_into(bad, out)
        b = gc.mem_alloc()
    finally:
        gc.enable()
    assert b - a == 0, (spki.IMPL, b - a)
    try:
        spki.sha256_into(vs[0], bytearray(31))
        raise AssertionError("short output accepted")
    except ValueError:
        pass


def test_viper_sha256_every_length_and_offset():
    # the viper SHA-256 against hashlib for every message length across the padding boundaries
    # (55, 56, 63, 64, 119, 120 bytes...) and unaligned starts
    try:
        import keypin_spkiv as v
    except ImportError:
        assert spki.IMPL == "python"
        return
    buf = bytes((i * 7 + 3) & 0xFF for i in range(700))
    out = bytearray(32)
    for off in (0, 1, 3, 5):
        for n in range(300):
            assert v._sha(buf, off, n, out) == 0
            assert bytes(out) == hashlib.sha256(buf[off:off + n]).digest(), (off, n)
    assert v._sha(buf, 0, 600, out) == 0 and bytes(out) == hashlib.sha256(buf[:600]).digest()


def test_native_and_viper_agree_with_each_other():
    # with both modules on the path (the native run), compare them directly too
    try:
        import keypin_spki as c
        import keypin_spkiv as v
    except ImportError:
        return
    o1, o2 = bytearray(32), bytearray(32)
    n = 0
    for kind, label, data in _malformed():
        assert c.find(data) == v.find(data), label
        assert c.sha256_into(data, o1) == v.sha256_into(data, o2), label
        assert o1 == o2, label
        n += 1
    assert n > 1000


def test_parse_pin_strict():
    good = "sha256/" + "A" * 43 + "="
    assert pins.parse_pin(good) == bytes(32)
    for bad in ("", "sha256/", good[:-1], good + "=", "sha1/" + "A" * 43 + "=", "SHA256/" + good[7:],
                "sha256/" + "A" * 42 + "B=", "sha256/" + "A" * 42 + "!=", "sha256//" + "A" * 43,
                "sha256/" + "A" * 44, None, b"sha256/" + b"A" * 43 + b"="):
        try:
            pins.parse_pin(bad)
            raise AssertionError("accepted %r" % (bad,))
        except keypin.PinFormatError as e:
            assert isinstance(e, keypin.KeypinError)
            if isinstance(bad, str) and bad:
                assert repr(bad) in str(e), str(e)


def test_format_roundtrip():
    for n, der, want in _vectors():
        assert pins.format_pin(pins.parse_pin(want)) == want
