"""The viper SPKI module (firmware/viper/keypin_spkiv.py) with 32-bit machine words, as on the boards.

The Unix-port tests run the x64 build (64-bit words). The boards run the same source compiled for
xtensawin and rv32imc, whose words are 32 bits, and no 32-bit viper runs on this machine. So this
test executes the viper functions in CPython under a model of the viper emitter's word rules
(py/emitnative.c): `int` and `uint` are machine words that wrap at 32 (or 64) bits, the result of a
binary op has the type of its left operand, `>>` is arithmetic for int and logical for uint,
ptr8/ptr32 loads give an int (a ptr32 load is sign-extended with 32-bit words, zero-extended on
x64), stores keep the low bits, int() / uint() only retype a word, comparing int with uint is an
error. Both word sizes must give the results of the Python reference and hashlib on the vector
table, the malformed table and a fuzz sample; and the test shows that it catches the two 32-bit
mistakes the x64 build cannot show (a length >= 2**31 formed in a word, a missing uint cast).
"""
import hashlib
import pathlib
import struct
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = (ROOT / "firmware" / "viper" / "keypin_spkiv.py").read_text()


def word_types(bits):
    mask = (1 << bits) - 1

    def signed(v):
        v &= mask
        return v - (1 << bits) if v >> (bits - 1) else v

    class W:
        __slots__ = ("v",)
        unsigned = False

        def __init__(self, v):
            v = v.v if isinstance(v, W) else v
            self.v = (v & mask) if self.unsigned else signed(v)

        def _o(self, o):
            if isinstance(o, W):
                return o.v
            if isinstance(o, bool | int):
                return int(o)
            raise TypeError(f"viper: binary op with {type(o).__name__}")

        def _cmp(self, o):
            if isinstance(o, W) and o.unsigned != self.unsigned:
                raise TypeError("viper: comparison of int and uint")
            if not isinstance(o, W) and self.unsigned:
                raise TypeError("viper: comparison of uint and an int constant")
            return self._o(o)

        # result type: the left operand's; a constant on the left is an int
        def __add__(self, o): return type(self)(self.v + self._o(o))
        def __sub__(self, o): return type(self)(self.v - self._o(o))
        def __mul__(self, o): return type(self)(self.v * self._o(o))
        def __and__(self, o): return type(self)(self.v & self._o(o))
        def __or__(self, o): return type(self)(self.v | self._o(o))
        def __xor__(self, o): return type(self)(self.v ^ self._o(o))
        def __lshift__(self, o): return type(self)(self.v << (self._o(o) & (bits - 1)))
        def __rshift__(self, o): return type(self)(self.v >> (self._o(o) & (bits - 1)))
        def __radd__(self, o): return Int(self._o(o) + self.v)
        def __rsub__(self, o): return Int(self._o(o) - self.v)
        def __rand__(self, o): return Int(self._o(o) & self.v)
        def __ror__(self, o): return Int(self._o(o) | self.v)
        def __rxor__(self, o): return Int(self._o(o) ^ self.v)
        def __rlshift__(self, o): return Int(self._o(o) << (self.v & (bits - 1)))
        def __rrshift__(self, o): return Int(self._o(o) >> (self.v & (bits - 1)))
        def __neg__(self): return type(self)(-self.v)
        def __lt__(self, o): return self.v < self._cmp(o)
        def __le__(self, o): return self.v <= self._cmp(o)
        def __gt__(self, o): return self.v > self._cmp(o)
        def __ge__(self, o): return self.v >= self._cmp(o)
        def __eq__(self, o): return self.v == self._cmp(o)
        def __ne__(self, o): return self.v != self._cmp(o)
        def __bool__(self): return self.v != 0
        def __index__(self): return self.v
        __hash__ = None

    class Int(W):
        unsigned = False

    class Uint(W):
        unsigned = True

    class P8:
        def __init__(self, obj):
            self.m = memoryview(obj).cast("B")

        def __getitem__(self, i):
            return Int(self.m[int(i)])

        def __setitem__(self, i, v):
            self.m[int(i)] = int(v.v if isinstance(v, W) else v) & 0xFF

    class P32(P8):
        def __getitem__(self, i):
            v = struct.unpack_from("<I", self.m, 4 * int(i))[0]
            return Int(signed(v) if bits == 32 else v)  # 32-bit load: a word; x64: zero-extended

        def __setitem__(self, i, v):
            struct.pack_into("<I", self.m, 4 * int(i), int(v.v if isinstance(v, W) else v) & 0xFFFFFFFF)

    def cast(kind):
        def c(x):
            if isinstance(x, (W, bool, int)):
                return kind(x)
            raise TypeError(f"viper: {kind.__name__}() of {type(x).__name__}")
        return c

    return Int, Uint, P8, P32, cast


def load(bits, src=SRC):
    """The module's namespace with its viper functions running on words of `bits`."""
    Int, Uint, P8, P32, cast = word_types(bits)
    conv = {"int": Int, "uint": Uint, "ptr8": P8, "ptr32": P32}
    ns: dict = {"uint": "uint", "ptr8": "ptr8", "ptr32": "ptr32"}
    over = {"int": cast(Int), "uint": cast(Uint), "ptr8": P8, "ptr32": P32}

    def viper(f):
        # annotations are evaluated: int is the builtin class, the viper types the names put in ns
        ann = {k: (v.__name__ if isinstance(v, type) else v) for k, v in f.__annotations__.items()}
        ret = ann.pop("return", None)
        names = f.__code__.co_varnames[:f.__code__.co_argcount]

        def call(*args):
            g = dict(ns)
            g.update(over)
            fn = types.FunctionType(f.__code__, g, f.__name__)
            a = [conv[ann[n]](x) if n in ann else x for n, x in zip(names, args, strict=True)]
            r = fn(*a)
            return r.v if ret == "int" and isinstance(r, Int | Uint) else r
        return call

    mp = types.ModuleType("micropython")
    mp.viper = viper
    mp.const = lambda x: x
    saved = sys.modules.get("micropython")
    sys.modules["micropython"] = mp
    try:
        exec(compile(src, "keypin_spkiv.py", "exec"), ns)  # noqa: S102 - the module under test
    finally:
        if saved is None:
            del sys.modules["micropython"]
        else:
            sys.modules["micropython"] = saved
    return ns


def reference():
    mp = types.ModuleType("micropython")
    mp.const = lambda x: x
    sys.modules.setdefault("micropython", mp)
    ns: dict = {}
    exec(compile((ROOT / "lib/keypin/spkiref.py").read_text(), "spkiref.py", "exec"), ns)  # noqa: S102
    return ns["python_find"]


def inputs(vectors_dir):
    out = [(p.name, p.read_bytes()) for p in sorted(vectors_dir.glob("*.der"))]
    b = (vectors_dir / "malformed.bin").read_bytes()
    p = 0
    while p < len(b):
        _kind, ln = struct.unpack(">BH", b[p:p + 3])
        label = b[p + 3:p + 3 + ln].decode()
        p += 3 + ln
        (dl,) = struct.unpack(">I", b[p:p + 4])
        out.append((label, b[p + 4:p + 4 + dl]))
        p += 4 + dl
    sys.path.insert(0, str(ROOT / "tools" / "lab" / "fuzz"))
    try:
        import difffuzz
        import fuzz_seeds
    finally:
        sys.path.remove(str(ROOT / "tools" / "lab" / "fuzz"))
    seeds = [d for _, d in fuzz_seeds.make_certs()]
    out += [(f"fuzz#{i}", d) for i, d in enumerate(difffuzz.generate(200, 7, seeds))]
    # lengths at the word boundaries: 2**31 and over in four length bytes, and just under
    out += [(f"len{h}", b"\x30\x84" + h + b"\x00") for h in (b"\x80\x00\x00\x00", b"\xff\xff\xff\xff",
                                                             b"\x7f\xff\xff\xff", b"\x00\x00\x00\x80")]
    return out


def check(ns, cases, find):
    bad = []
    out = bytearray(32)
    for label, der in cases:
        want = find(der)
        got = ns["find"](der)
        rc = ns["sha256_into"](memoryview(der), out)
        if isinstance(want, int):
            ok = got == want and rc == want
        else:
            ok = got == want and rc == 0 and bytes(out) == hashlib.sha256(der[want[0]:want[1]]).digest()
        if not ok:
            bad.append((label, want, got, rc))
    return bad


@pytest.mark.parametrize("bits", [32, 64])
def test_viper_module_on_machine_words(bits, vectors_dir):
    cases = inputs(vectors_dir)
    find = reference()
    assert sum(1 for _, d in cases if not isinstance(find(d), int)) >= 20  # enough accepted certificates
    ns = load(bits)
    assert check(ns, cases, find) == []
    # the hash alone across the padding boundaries and unaligned starts
    buf = bytes((i * 7 + 3) & 0xFF for i in range(400))
    out = bytearray(32)
    for off in (0, 3):
        for n in [*range(130), 200, 255, 256, 300]:
            assert ns["_sha"](buf, off, n, out) == 0
            assert bytes(out) == hashlib.sha256(buf[off:off + n]).digest(), (bits, off, n)


def test_the_word_model_catches_32_bit_mistakes(vectors_dir):
    # mutants that the 64-bit (x64) build runs correctly, and boards would not
    cases = [c for c in inputs(vectors_dir) if c[0].endswith(".der") or c[0].startswith("len")]
    find = reference()
    guard = "            if k == 4 and b[p] >= 0x80:\n"
    assert guard in SRC
    m1 = SRC.replace(guard, "            if False:\n")
    cast = "                y = uint(s[_W + ((i + 14) & 15)])  # w[i-2]\n"
    assert cast in SRC
    m2 = SRC.replace(cast, "                y = s[_W + ((i + 14) & 15)]  # w[i-2]\n")
    for name, src in (("length formed in a word", m1), ("signed schedule word", m2)):
        assert check(load(64, src), cases, find) == [], name  # x64 cannot tell
        bad = check(load(32, src), cases, find)
        assert bad, f"{name}: not caught with 32-bit words"
