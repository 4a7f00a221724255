# keypin_spkiv: keypin's SPKI walk and SHA-256 in MicroPython viper. mpy-cross compiles this one
# source to machine code for each chip (-march=xtensawin: ESP32/S2/S3, rv32imc: C3/C6) and for
# x64, where the Unix port runs the tests, the vector tables and the differential fuzz on it.
# Same grammar, same error codes as firmware/spki/spki_core.c and lib/keypin/spkiref.py.
#   sha256_into(der, out) -> 0 or a negative error code; fills out[0:32]. Allocates nothing
#                            (the verify-callback path): walk and hash run on preallocated words.
#   sha256(der)           -> 32-byte digest (hashlib over the SPKI slice) or a negative code
#   find(der)             -> (start, end) of the SPKI element, or a negative code
# Word discipline: viper ints are machine words, 32 bits on the boards, 64 on x64. Every value
# that is shifted right is a uint masked to 32 bits (& M; a no-op on the boards), every load
# from memory is cast to uint, and lengths that could pass 2**31 are caught before they are
# formed, so the x64 build computes exactly what the 32-bit builds compute.
# ptr32 buffers are bytearrays made at import: heap blocks, so 4-byte aligned (Xtensa needs it).
# The scratch words are shared: one call at a time (the verify callback is never re-entered).
# ruff: noqa: F821 (viper types ptr8/ptr32/uint are builtins of the viper emitter)
import micropython
from micropython import const

_EMPTY = const(-1)
_TRUNC = const(-2)
_TAG = const(-3)
_INDEF = const(-4)
_LENLEN = const(-5)
_NONMIN = const(-6)
_TRAILING = const(-7)
# scratch word indexes: 0-7 hash state, 8-23 message schedule (16-word ring), 24-55 the
# padded tail (two blocks), 56 the 32-bit mask, 58-59 the SPKI span
_W = const(8)
_TAIL = const(96)  # byte offset of word 24
_M = const(56)
_ST = const(58)
_EN = const(59)
_S = bytearray(240)
_S[224:228] = b"\xff\xff\xff\xff"
# SHA-256 round constants (64 words), then the initial hash value (8 words); little-endian,
# which all three targets are
_K = bytearray(
    b"\x98\x2f\x8a\x42\x91\x44\x37\x71\xcf\xfb\xc0\xb5\xa5\xdb\xb5\xe9\x5b\xc2\x56\x39\xf1\x11\xf1\x59"
    b"\xa4\x82\x3f\x92\xd5\x5e\x1c\xab\x98\xaa\x07\xd8\x01\x5b\x83\x12\xbe\x85\x31\x24\xc3\x7d\x0c\x55"
    b"\x74\x5d\xbe\x72\xfe\xb1\xde\x80\xa7\x06\xdc\x9b\x74\xf1\x9b\xc1\xc1\x69\x9b\xe4\x86\x47\xbe\xef"
    b"\xc6\x9d\xc1\x0f\xcc\xa1\x0c\x24\x6f\x2c\xe9\x2d\xaa\x84\x74\x4a\xdc\xa9\xb0\x5c\xda\x88\xf9\x76"
    b"\x52\x51\x3e\x98\x6d\xc6\x31\xa8\xc8\x27\x03\xb0\xc7\x7f\x59\xbf\xf3\x0b\xe0\xc6\x47\x91\xa7\xd5"
    b"\x51\x63\xca\x06\x67\x29\x29\x14\x85\x0a\xb7\x27\x38\x21\x1b\x2e\xfc\x6d\x2c\x4d\x13\x0d\x38\x53"
    b"\x54\x73\x0a\x65\xbb\x0a\x6a\x76\x2e\xc9\xc2\x81\x85\x2c\x72\x92\xa1\xe8\xbf\xa2\x4b\x66\x1a\xa8"
    b"\x70\x8b\x4b\xc2\xa3\x51\x6c\xc7\x19\xe8\x92\xd1\x24\x06\x99\xd6\x85\x35\x0e\xf4\x70\xa0\x6a\x10"
    b"\x16\xc1\xa4\x19\x08\x6c\x37\x1e\x4c\x77\x48\x27\xb5\xbc\xb0\x34\xb3\x0c\x1c\x39\x4a\xaa\xd8\x4e"
    b"\x4f\xca\x9c\x5b\xf3\x6f\x2e\x68\xee\x82\x8f\x74\x6f\x63\xa5\x78\x14\x78\xc8\x84\x08\x02\xc7\x8c"
    b"\xfa\xff\xbe\x90\xeb\x6c\x50\xa4\xf7\xa3\xf9\xbe\xf2\x78\x71\xc6\x67\xe6\x09\x6a\x85\xae\x67\xbb"
    b"\x72\xf3\x6e\x3c\x3a\xf5\x4f\xa5\x7f\x52\x0e\x51\x8c\x68\x05\x9b\xab\xd9\x83\x1f\x19\xcd\xe0\x5b"
)


@micropython.viper
def _find(der, n: int) -> int:
    # -> 0 with the SPKI span in words _ST, _EN; or a negative error code. One pass, no calls:
    # step st reads one TLV at p inside lim (the same sequence of reads as kp_spki_find)
    #   0 Certificate  1 tbsCertificate  2 [0] version  3 serialNumber  4-7 signature, issuer,
    #   validity, subject  8 subjectPublicKeyInfo  9 its algorithm  10 subjectPublicKey
    #   11 issuerUniqueID, subjectUniqueID, extensions (any tag)  12 signatureAlgorithm
    #   13 signatureValue
    if n == 0:
        return _EMPTY
    b = ptr8(der)
    st = 0
    p = 0
    lim = n
    ce = 0
    te = 0
    ke = 0
    start = 0
    while True:
        want = 0x30
        if st == 2:
            want = 0xA0
        elif st == 3:
            want = 0x02
        elif st == 10 or st == 13:
            want = 0x03
        elif st == 11:
            want = -1
        # the TLV header at p: tag, length; value b[vs:ve] inside lim
        if p >= lim:
            return _TRUNC
        tag = b[p]
        p += 1
        if (tag & 0x1F) == 0x1F or (want >= 0 and tag != want):
            return _TAG
        if p >= lim:
            return _TRUNC
        ln = b[p]
        p += 1
        if ln == 0x80:
            return _INDEF
        if ln > 0x80:
            k = ln & 0x7F
            if k > 4:
                return _LENLEN
            if k > lim - p:
                return _TRUNC
            if b[p] == 0:
                return _NONMIN
            if k == 4 and b[p] >= 0x80:
                return _TRUNC  # >= 2**31: past any buffer (C: n > end - pos); never formed in a word
            ln = 0
            while k:
                ln = (ln << 8) | b[p]
                p += 1
                k -= 1
            if ln < 0x80:
                return _NONMIN
        if ln > lim - p:
            return _TRUNC
        vs = p
        ve = p + ln
        # where the walk goes next
        if st == 0:
            if ve != n:
                return _TRAILING
            ce = ve
            p = vs
            st = 1
        elif st == 1:
            te = ve
            p = vs
            lim = te
            st = 3
            if p < te and b[p] == 0xA0:
                st = 2
        elif st <= 7:
            p = ve
            st += 1
            if st == 8:
                start = p
        elif st == 8:
            ke = ve
            p = vs
            lim = ke
            st = 9
        elif st == 9:
            p = ve
            st = 10
        elif st == 10:
            if ve != ke:
                return _TRAILING
            p = ke
            lim = te
            st = 11
            if p >= te:
                lim = ce
                st = 12
        elif st == 11:
            p = ve
            if p >= te:
                lim = ce
                st = 12
        elif st == 12:
            p = ve
            st = 13
        else:
            if ve != ce:
                return _TRAILING
            s = ptr32(_S)
            s[_ST] = start
            s[_EN] = ke
            return 0
    return 0


@micropython.viper
def _sha(der, off: int, n: int, out) -> int:
    # SHA-256 (FIPS 180-4) of der[off:off + n] into out[0:32]
    b = ptr8(der)
    s = ptr32(_S)
    sb = ptr8(_S)
    k = ptr32(_K)
    o = ptr8(out)
    M = uint(s[_M])
    i = 0
    while i < 8:
        s[i] = k[64 + i]
        i += 1
    # the padded tail: the last partial block, 0x80, zeros, the length in bits (big-endian)
    full = n >> 6
    rem = n & 63
    src0 = off + (full << 6)
    q = 0
    while q < rem:
        sb[_TAIL + q] = b[src0 + q]
        q += 1
    sb[_TAIL + q] = 0x80
    q += 1
    last = 64
    if rem >= 56:
        last = 128
    while q < last - 5:
        sb[_TAIL + q] = 0
        q += 1
    hi = n >> 29
    lo = uint(n) << 3
    sb[_TAIL + last - 5] = hi
    sb[_TAIL + last - 4] = lo >> 24
    sb[_TAIL + last - 3] = lo >> 16
    sb[_TAIL + last - 2] = lo >> 8
    sb[_TAIL + last - 1] = lo
    nb = full + (last >> 6)
    j = 0
    while j < nb:
        src = b
        base = off + (j << 6)
        if j >= full:
            src = sb
            base = _TAIL + ((j - full) << 6)
        i = 0
        while i < 16:
            q = base + (i << 2)
            s[_W + i] = (src[q] << 24) | (src[q + 1] << 16) | (src[q + 2] << 8) | src[q + 3]
            i += 1
        a = uint(s[0])
        bb = uint(s[1])
        c = uint(s[2])
        d = uint(s[3])
        e = uint(s[4])
        f = uint(s[5])
        g = uint(s[6])
        hh = uint(s[7])
        i = 0
        while i < 64:
            if i < 16:
                wi = uint(s[_W + i])
            else:
                x = uint(s[_W + ((i + 1) & 15)])  # w[i-15]
                y = uint(s[_W + ((i + 14) & 15)])  # w[i-2]
                s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
                s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
                wi = (uint(s[_W + (i & 15)]) + s0 + uint(s[_W + ((i + 9) & 15)]) + s1) & M
                s[_W + (i & 15)] = wi
            t1 = (hh + (((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7)))
                  + ((e & f) ^ ((e ^ M) & g)) + uint(k[i]) + wi)
            t2 = ((((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10)))
                  + ((a & bb) ^ (a & c) ^ (bb & c)))
            hh = g
            g = f
            f = e
            e = (d + t1) & M
            d = c
            c = bb
            bb = a
            a = (t1 + t2) & M
            i += 1
        s[0] = uint(s[0]) + a
        s[1] = uint(s[1]) + bb
        s[2] = uint(s[2]) + c
        s[3] = uint(s[3]) + d
        s[4] = uint(s[4]) + e
        s[5] = uint(s[5]) + f
        s[6] = uint(s[6]) + g
        s[7] = uint(s[7]) + hh
        j += 1
    i = 0
    while i < 8:
        x = uint(s[i])
        o[4 * i] = x >> 24
        o[4 * i + 1] = x >> 16
        o[4 * i + 2] = x >> 8
        o[4 * i + 3] = x
        i += 1
    return 0


@micropython.viper
def sha256_into(der, out) -> int:
    if int(len(out)) < 32:  # noqa: RUF046 (viper: int() makes a machine word of the object)
        raise ValueError("out < 32 bytes")
    r = int(_find(der, int(len(der))))  # noqa: RUF046
    if r:
        return r
    s = ptr32(_S)
    return int(_sha(der, s[_ST], s[_EN] - s[_ST], out))


def find(der):
    r = _find(der, len(der))
    if r:
        return r
    s = memoryview(_S)
    return int.from_bytes(s[232:236], "little"), int.from_bytes(s[236:240], "little")


def sha256(der):
    r = find(der)
    if isinstance(r, int):
        return r
    import hashlib
    return hashlib.sha256(memoryview(der)[r[0]:r[1]]).digest()
