# run: both
# Device tests for keypin.spki / keypin.pins (Unix port). Runs twice: with the native
# module on the path and without it (pure-Python reference).
import os
import struct

import keypin
from keypin import pins, spki

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
        assert spki.python_pin_of(der) == want, n
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
        py = spki.python_find(data)
        if spki.IMPL == "native":
            nat = spki._fnd(data)
            assert nat == py, "%s: native %r != python %r" % (label, nat, py)
            nat_s = spki._sha(data)
            py_s = spki.python_sha256(data)
            assert nat_s == py_s, label
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
    assert spki.python_find(b"") == spki.ERR_EMPTY
    assert spki.python_find(b"\x30\x80\x00\x00") == spki.ERR_INDEF
    assert spki.python_find(b"\x30\x85\x00\x00\x00\x00\x01") == spki.ERR_LENLEN
    assert spki.python_find(b"\x30\x81\x05\x00\x00\x00\x00\x00") == spki.ERR_NONMIN
    assert spki.python_find(b"\x31\x00") == spki.ERR_TAG
    assert spki.python_find(b"\x30\x05\x00") == spki.ERR_TRUNC
    assert spki.python_find(b"\x30\x00\x00") == spki.ERR_TRAILING
    if spki.IMPL == "native":
        for b in (b"", b"\x30\x80\x00\x00", b"\x30\x85\x00\x00\x00\x00\x01", b"\x31\x00"):
            assert spki._fnd(b) == spki.python_find(b)


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
