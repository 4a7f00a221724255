# Ed25519 signature verification (RFC 8032, section 5.1.7), pure MicroPython big ints.
# verify(public_key_32, message, signature_64) -> bool. Only verification: no secrets here,
# so constant time does not matter. Rejects S >= L, public keys with y >= p or no square
# root, x = 0 with the sign bit set, keys of small order (check_key), and (by comparing
# canonical encodings) any R that is
# not the canonical encoding of [S]B - [k]A. Cofactorless check, like OpenSSL.
# MicroPython has no SHA-512: _sha512 below is the FIPS 180-4 one, tested against hashlib.
# Big constants are plain globals, not const(): a const big int would be copied into the
# bytecode at every use.
_P = 57896044618658097711785492504343953926634992332820282019728792003956564819949
_L = 7237005577332262213973186563042994240857116359379907606001950938285454250989
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161
_I = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_M64 = 0xFFFFFFFFFFFFFFFF

try:
    _POW3 = pow(2, 2, 5) == 4
except (TypeError, NotImplementedError):  # firmware built without three-argument pow
    _POW3 = False


def _pw(b, e, m):
    if _POW3:
        return pow(b, e, m)
    r = 1
    while e:
        if e & 1:
            r = r * b % m
        b = b * b % m
        e >>= 1
    return r


# ---- SHA-512 ----
def _root(n, k, x):
    # integer k-th root of n (k = 2 or 3), Newton from x >= the root
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            return x
        x = y


def _consts():
    # the 80 round constants and 8 initial values (cube and square roots of the first primes),
    # made per hash and not kept: 88 big ints cost more RAM than the ~1 ms to make them
    pr: list = []
    n = 2
    while len(pr) < 80:
        if all(n % q for q in pr):
            pr.append(n)
        n += 1
    m = _M64
    return [_root(q << 192, 3, 8 << 64) & m for q in pr] + [_root(q << 128, 2, 5 << 64) & m for q in pr[:8]]


def _block(h, b, w, K):
    M = _M64
    for i in range(16):
        w[i] = int.from_bytes(b[8 * i:8 * i + 8], "big")
    for i in range(16, 80):
        x = w[i - 15]
        y = w[i - 2]
        s0 = ((x >> 1) | (x << 63)) ^ ((x >> 8) | (x << 56)) ^ (x >> 7)
        s1 = ((y >> 19) | (y << 45)) ^ ((y >> 61) | (y << 3)) ^ (y >> 6)
        w[i] = (w[i - 16] + s0 + s1 + w[i - 7]) & M
    a, b, c, d, e, f, g, hh = h
    for i in range(80):
        s1 = ((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))
        t1 = (hh + (s1 & M) + ((e & f) ^ ((e ^ M) & g)) + K[i] + w[i]) & M
        s0 = ((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))
        t2 = ((s0 & M) + ((a & b) ^ (a & c) ^ (b & c))) & M
        hh = g
        g = f
        f = e
        e = (d + t1) & M
        d = c
        c = b
        b = a
        a = (t1 + t2) & M
    for i, v in enumerate((a, b, c, d, e, f, g, hh)):
        h[i] = (h[i] + v) & M


def _sha512(*parts):
    # SHA-512 of the concatenated parts, block by block: the message is never copied whole
    K = _consts()
    h = K[80:]
    w = [0] * 80
    n = 0
    for p in parts:
        n += len(p)
    buf = bytearray(128)
    fill = 0
    for p in parts + (b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big"),):
        mv = memoryview(p)
        i = 0
        while i < len(mv):
            k = min(128 - fill, len(mv) - i)
            buf[fill:fill + k] = mv[i:i + k]
            fill += k
            i += k
            if fill == 128:
                _block(h, buf, w, K)
                fill = 0
    return b"".join(x.to_bytes(8, "big") for x in h)


# ---- the curve: extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z ----
def _add(p, q):
    # RFC 8032 5.1.4 (add-2008-hwcd-3, a = -1); also correct for p == q
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 % _P * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _dbl(p):
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decode(s):
    # 32 bytes -> point, or None (RFC 8032 5.1.3)
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * _pw(v, _P - 2, _P) % _P
    x = _pw(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _I % _P
        if (x * x - x2) % _P:
            return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode(p):
    x, y, z, _ = p
    zi = _pw(z, _P - 2, _P)
    x = x * zi % _P
    y = y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def check_key(public_key):
    # -> the point of a usable public key, or raises ValueError: a canonical encoding (y < p,
    # no "-0") of a point that is not of small order (the identity and the 7 other points of
    # order 2, 4 or 8 would let anyone forge a signature)
    if len(public_key) != 32:
        raise ValueError("not 32 bytes")
    a = _decode(bytes(public_key))
    if a is None:
        raise ValueError("not a canonical encoding of a curve point")
    x, y, z, _ = _dbl(_dbl(_dbl(a)))
    if x % _P == 0 and (y - z) % _P == 0:
        raise ValueError("a point of small order (a weak key anyone can forge signatures for)")
    return a


def verify(public_key, message, signature):
    if len(public_key) != 32 or len(signature) != 64:
        return False
    public_key = bytes(public_key)
    signature = bytes(signature)
    try:
        a = check_key(public_key)
    except ValueError:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    k = int.from_bytes(_sha512(signature[:32], public_key, message), "little") % _L
    # [s]B + [k](-A), both scalars at once (Straus/Shamir), then compare with R's bytes
    na = (_P - a[0], a[1], 1, _P - a[3])
    b = (_BX, _BY, 1, _BX * _BY % _P)
    ba = _add(b, na)
    q = (0, 1, 1, 0)
    for i in range(252, -1, -1):
        q = _dbl(q)
        u = (s >> i) & 1
        v = (k >> i) & 1
        if u and v:
            q = _add(q, ba)
        elif u:
            q = _add(q, b)
        elif v:
            q = _add(q, na)
    return _encode(q) == signature[:32]
