"""Differential fuzzing of the SPKI parser: C native module, viper module, Python reference, cryptography.

Usage: difffuzz.py [--count N] [--seed S] [--batch B] [--seeds DIR] [--corpus DIR]
                   [--out DIR] [--input FILE ...]

Generates N mutated certificates (deterministic from --seed) from real seed certificates
(tools/lab/fuzz/fuzz_seeds.py, or the .der files of --seeds DIR), writes them in batches of B to
OUT/batch.bin and runs tools/lab/fuzz/difffuzz_dev.py in the MicroPython Unix port (tools/upy) on each
batch: there the C module keypin_spki, the viper module keypin_spkiv (the x64 build of the source
the board images ship) and the Python reference keypin.spkiref must agree
on every input (same span and digest, or the same error code). --corpus DIR adds the files of
a libFuzzer corpus; --input checks just the given files and prints a verdict for each.

Host side, every input that cryptography loads as a certificate is also checked: where we
accept it, SHA-256 of our SPKI span must equal SHA-256 of cryptography's SubjectPublicKeyInfo
(when cryptography re-encodes the key differently, our span must load as the same key). A
cryptography-accepted certificate we reject is a "strict rejection" if the code names a rule
of our narrower grammar; a truncation or empty-input code there is a disagreement.

Last line: "difffuzz: N inputs, D disagreements"; exit 1 if D > 0, 2 on a setup failure.
Disagreeing inputs are kept as OUT/disagree-*.der.
"""
import argparse
import hashlib
import os
import random
import subprocess
import sys
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
UPY = os.path.join(ROOT, "tools", "upy")
DEV = os.path.join(HERE, "difffuzz_dev.py")
MAX_LEN = 8192
ERR_EMPTY, ERR_TRUNC = -1, -2
STRICT_CODES = {-3: "tag", -4: "indefinite", -5: "lenlen", -6: "nonminimal", -7: "trailing"}
INTERESTING = (0x00, 0x01, 0x02, 0x03, 0x05, 0x1F, 0x30, 0x31, 0x7F, 0x80, 0x81, 0x82, 0x83,
               0x84, 0x85, 0xA0, 0xA3, 0xFF)


# ---- a lenient DER tree, only for building mutations ----
# node: [tag, children(list) or value(bytes), length override (bytes or None)]

def parse_tree(b):
    out, p = [], 0
    while p < len(b):
        if p + 2 > len(b):
            return None
        tag, ln = b[p], b[p + 1]
        h = 2
        if ln & 0x80:
            k = ln & 0x7F
            if k == 0 or k > 4 or p + 2 + k > len(b):
                return None
            ln = int.from_bytes(b[p + 2:p + 2 + k], "big")
            h += k
        if p + h + ln > len(b):
            return None
        v = bytes(b[p + h:p + h + ln])
        kids = parse_tree(v) if (tag & 0x20) and v else None
        out.append([tag, kids if kids is not None else v, None])
        p += h + ln
    return out


def enc_len(n):
    if n < 0x80:
        return bytes([n])
    nb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(nb)]) + nb


def encode(nodes):
    out = []
    for tag, v, lo in nodes:
        body = encode(v) if isinstance(v, list) else v
        out.append(bytes([tag]) + (lo if lo is not None else enc_len(len(body))) + body)
    return b"".join(out)


def all_nodes(nodes, acc=None, depth=0):
    # -> [(node, parent_list, index, depth)]
    acc = [] if acc is None else acc
    for i, n in enumerate(nodes):
        acc.append((n, nodes, i, depth))
        if isinstance(n[1], list):
            all_nodes(n[1], acc, depth + 1)
    return acc


def clone(nodes):
    return [[t, clone(v) if isinstance(v, list) else v, lo] for t, v, lo in nodes]


def header_offsets(b):
    # -> [(offset of the length byte, header length)] of every element, walked leniently
    acc = []

    def walk(p, end):
        while p + 2 <= end:
            tag, ln, h = b[p], b[p + 1], 2
            if ln & 0x80:
                k = ln & 0x7F
                if k == 0 or k > 4 or p + 2 + k > end:
                    return
                ln = int.from_bytes(b[p + 2:p + 2 + k], "big")
                h += k
            if p + h + ln > end:
                return
            acc.append((p + 1, h - 1))
            if tag & 0x20:
                walk(p + h, p + h + ln)
            p += h + ln

    walk(0, len(b))
    return acc


# ---- mutators: (rnd, der, seeds) -> bytes ----

def m_bitflip(r, d, _s):
    b = bytearray(d)
    for _ in range(r.choice((1, 1, 1, 2, 3, 8))):
        if b:
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
    return bytes(b)


def m_byteset(r, d, _s):
    b = bytearray(d)
    for _ in range(r.randint(1, 4)):
        if b:
            b[r.randrange(len(b))] = r.choice(INTERESTING) if r.random() < 0.6 else r.randrange(256)
    return bytes(b)


def m_insert(r, d, _s):
    p = r.randint(0, len(d))
    ins = bytes(r.choice(INTERESTING) if r.random() < 0.5 else r.randrange(256)
                for _ in range(r.randint(1, 16)))
    return d[:p] + ins + d[p:]


def m_delete(r, d, _s):
    if not d:
        return d
    p = r.randrange(len(d))
    return d[:p] + d[p + r.randint(1, 16):]


def m_truncate(r, d, _s):
    if not d:
        return d
    return d[:len(d) - r.randint(1, 8)] if r.random() < 0.3 else d[:r.randrange(len(d))]


def m_append(r, d, _s):
    return d + bytes(r.randrange(256) for _ in range(r.choice((1, 1, 2, 5, 40))))


def _len_variant(r, n):
    nb = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    c = r.randrange(11)
    if c == 0:
        return enc_len(max(0, n + r.choice((-3, -2, -1, 1, 2, 3))))
    if c == 1:
        return bytes([0x81, n]) if n < 0x80 else bytes([0x80 | (len(nb) + 1), 0]) + nb  # non-minimal
    if c == 2:
        return bytes([0x84]) + n.to_bytes(4, "big")  # long form, leading zeros unless huge
    if c == 3:
        return b"\x80"  # indefinite
    if c == 4:
        return bytes([0x80 | r.randint(5, 127)]) + bytes(r.randint(0, 8))  # length of length > 4
    if c == 5:
        return b"\x84\xff\xff\xff\xff"
    if c == 6:
        return b"\x00"
    if c == 7:
        return bytes([0x82]) + (n & 0xFFFF).to_bytes(2, "big")
    if c == 8:
        return bytes([0x81, 0x7F]) if r.random() < 0.5 else bytes([0x82, 0x00, 0x80])
    if c == 9:
        return bytes([0x81]) + bytes([r.randrange(256)])
    return enc_len(r.randrange(0, 2 * n + 3))


def m_lenedit(r, d, _s):
    # rewrite one length field in place; the enclosing lengths stay as they were
    hs = header_offsets(d)
    if not hs:
        return m_bitflip(r, d, _s)
    off, hl = r.choice(hs)
    ln = d[off]
    n = int.from_bytes(d[off + 1:off + hl], "big") if ln & 0x80 else ln
    return d[:off] + _len_variant(r, n) + d[off + hl:]


def m_tree(r, d, seeds):
    # structural edit, then re-encode with consistent (minimal) enclosing lengths
    t = parse_tree(d)
    if not t:
        return m_insert(r, d, seeds)
    nodes = all_nodes(t)
    node, parent, i, _depth = r.choice(nodes)
    c = r.randrange(12)
    if c == 0:
        del parent[i]
    elif c == 1:
        parent.insert(i, clone([node])[0])
    elif c == 2 and len(parent) > 1:
        j = r.randrange(len(parent))
        parent[i], parent[j] = parent[j], parent[i]
    elif c == 3:
        node[0] = r.choice(INTERESTING + (0x04, 0x06, 0x0C, 0x13, 0x17, 0x18, 0xA1, 0xA2, 0xBF, 0x3F))
    elif c == 4:
        node[1] = bytes(r.randrange(256) for _ in range(r.choice((0, 1, 5, 40, 130, 300))))
    elif c == 5:
        parent.insert(r.randint(0, len(parent)),
                      [r.choice((0x30, 0x02, 0x05, 0xA1, 0xA2, 0xA3, 0x04, 0x1F, 0x9F)),
                       bytes(r.randrange(256) for _ in range(r.choice((0, 2, 127, 128, 256)))), None])
    elif c == 6:
        # grow a leaf across a length-encoding boundary (short <-> long form)
        if isinstance(node[1], bytes):
            node[1] = node[1] + bytes(r.choice((1, 127 - len(node[1]) % 128, 128, 200, 256)))
    elif c == 7:
        node[2] = _len_variant(r, len(encode(node[1]) if isinstance(node[1], list) else node[1]))
    elif c == 8:
        # splice: replace with a random node of another certificate (same depth when possible)
        other = all_nodes(parse_tree(r.choice(seeds)) or [])
        same = [o for o in other if o[3] == _depth] or other
        if same:
            parent[i] = clone([r.choice(same)[0]])[0]
    elif c == 9:
        # move the tail of a node's children into its parent (flatten one level)
        if isinstance(node[1], list) and node[1]:
            parent[i:i + 1] = [[node[0], node[1][:1], None]] + node[1][1:]
    elif c == 10:
        # wrap in an extra SEQUENCE
        parent[i] = [0x30, [node], None]
    else:
        if isinstance(node[1], bytes) and node[1]:
            node[1] = node[1][:r.randrange(len(node[1]))]
    return encode(t)


def m_swap_spki(r, d, seeds):
    # well-formed certificate with another certificate's key: cryptography-loadable
    a, b = parse_tree(d), parse_tree(r.choice(seeds))
    try:
        ta, tb = a[0][1][0][1], b[0][1][0][1]
        ia = 6 if ta[0][0] == 0xA0 else 5
        ib = 6 if tb[0][0] == 0xA0 else 5
        ta[ia] = clone([tb[ib]])[0]
    except (TypeError, IndexError):
        return m_splice(r, d, seeds)
    return encode(a)


def m_splice(r, d, seeds):
    o = r.choice(seeds)
    return d[:r.randint(0, len(d))] + o[r.randint(0, len(o)):]


def _rand_tlv(r, depth):
    tag = r.choice((0x30, 0x30, 0x31, 0x02, 0x03, 0x04, 0x05, 0x06, 0xA0, 0xA3, 0x13, 0x17,
                    r.randrange(256)))
    if tag & 0x20 and depth < 4:
        body = b"".join(_rand_tlv(r, depth + 1) for _ in range(r.randint(0, 4)))
    else:
        body = bytes(r.randrange(256) for _ in range(r.choice((0, 1, 3, 20, 130))))
    return bytes([tag]) + enc_len(len(body)) + body


def m_random(r, _d, _s):
    return _rand_tlv(r, 0)


def m_skeleton(r, _d, seeds):
    # a synthetic certificate in our grammar's shape with random contents: reaches the accept
    # path with inputs no real CA would produce (cryptography usually refuses them)
    def el(tag, n=None):
        body = bytes(r.randrange(256) for _ in range(r.choice((0, 1, 9, 130)) if n is None else n))
        return bytes([tag]) + enc_len(len(body)) + body

    def tlv(tag, body):
        return bytes([tag]) + enc_len(len(body)) + body

    parts = [tlv(0xA0, el(0x02, 1))] if r.random() < 0.6 else []
    parts += [el(0x02), el(0x30), el(0x30), el(0x30), el(0x30)]
    parts.append(tlv(0x30, el(0x30) + el(0x03, r.choice((0, 33, 270)))))
    parts += [_rand_tlv(r, 2) for _ in range(r.choice((0, 0, 1, 3)))]
    der = tlv(0x30, tlv(0x30, b"".join(parts)) + el(0x30) + el(0x03))
    return der if r.random() < 0.8 else m_bitflip(r, der, seeds)


MUTATORS = (
    (m_bitflip, 12), (m_byteset, 8), (m_insert, 6), (m_delete, 6), (m_truncate, 6), (m_append, 3),
    (m_lenedit, 14), (m_tree, 20), (m_swap_spki, 5), (m_splice, 4), (m_random, 4), (m_skeleton, 8),
)


def generate(count, seed, seeds):
    r = random.Random(seed)
    funcs = [f for f, w in MUTATORS for _ in range(w)]
    out = [b""] + list(seeds)  # the empty input and every unmutated seed
    while len(out) < count:
        d = r.choice(seeds)
        for _ in range(r.choice((1, 1, 1, 2, 3))):
            d = r.choice(funcs)(r, d, seeds)
        out.append(d[:MAX_LEN])
    return out[:count]


# ---- running the device side ----

def die(msg):
    print(f"difffuzz: {msg}", file=sys.stderr)
    sys.exit(2)


def run_batch(items, base, out_dir, verbose):
    # -> {global index: parsed line}; a crash of the device process costs one input
    path = os.path.join(out_dir, "batch.bin")
    with open(path, "wb") as f:
        f.writelines(len(d).to_bytes(4, "big") + d for d in items)
    res, first = {}, 0
    while first < len(items):
        try:
            p = subprocess.run([UPY, DEV, path, str(first)], check=False, cwd=ROOT, capture_output=True,
                               timeout=300, stdin=subprocess.DEVNULL)
            out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
            err = p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:  # subprocess.run has killed it
            out, rc, err = (e.stdout or b"").decode("utf-8", "replace"), -9, "timeout"
        ended = False
        for line in out.splitlines():
            w = line.split(" ")
            if w[0] in ("R", "D") and len(w) >= 3:
                res[base + int(w[1])] = line
            elif w[0] == "END":
                ended = True
            elif w[0] == "ERR":
                die(f"device side: {line}")
        if ended and rc == 0:
            break
        if rc in (3, 127) and not res:
            die(f"cannot run the device side (rc {rc}): {err.strip() or out.strip()}")
        missing = next(i for i in range(first, len(items)) if base + i not in res)
        res[base + missing] = f"C {missing} device process died (rc {rc}): {err.strip()[-300:]}"
        if verbose:
            print(f"difffuzz: input {base + missing}: device crash rc {rc}", file=sys.stderr)
        first = missing + 1
    return res


def crypto_view(der):
    # -> None (cryptography does not load it), or (spki der re-encoded by cryptography or None)
    try:
        cert = x509.load_der_x509_certificate(der)
    except Exception:  # noqa: BLE001 - whatever cryptography raises means "not a certificate"
        return None
    try:
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    except Exception:  # noqa: BLE001 - unsupported or malformed key: nothing to compare
        return b""  # a certificate, but a key type or encoding cryptography cannot load


def same_key(span, spki):
    try:
        k = serialization.load_der_public_key(span)
        return k.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo) == spki
    except Exception:  # noqa: BLE001 - our span is not a key cryptography loads
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(prog="difffuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--seeds", help="directory of seed .der files (default: tools/lab/fuzz/fuzz_seeds.py)")
    ap.add_argument("--corpus", help="also check the files of this (libFuzzer) corpus directory")
    ap.add_argument("--corpus-max", type=int, default=3000)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "fuzz", "diff"))
    ap.add_argument("--input", nargs="+", help="check only these files, with a verdict for each")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # mutated serials etc.
    os.makedirs(a.out, exist_ok=True)

    names = []
    if a.input:
        inputs = []
        for fn in a.input:
            with open(fn, "rb") as f:
                inputs.append(f.read())
            names.append(fn)
    else:
        if a.seeds:
            seeds = []
            for fn in sorted(os.listdir(a.seeds)):
                if fn.endswith(".der"):
                    with open(os.path.join(a.seeds, fn), "rb") as f:
                        seeds.append(f.read())
        else:
            sys.path.insert(0, HERE)
            import fuzz_seeds
            seeds = [d for _, d in fuzz_seeds.make_certs()]
        if not seeds:
            die("no seed certificates")
        inputs = generate(a.count, a.seed, seeds)
        if a.corpus and os.path.isdir(a.corpus):
            extra = sorted(os.listdir(a.corpus))[:a.corpus_max]
            for fn in extra:
                with open(os.path.join(a.corpus, fn), "rb") as f:
                    inputs.append(f.read()[:MAX_LEN])
    names += [f"#{i}" for i in range(len(names), len(inputs))]

    res = {}
    for base in range(0, len(inputs), a.batch):
        res.update(run_batch(inputs[base:base + a.batch], base, a.out, a.verbose))

    disagree = strict = checked = equal = reenc = crashes = 0
    strict_by, codes = {}, {}
    for i, der in enumerate(inputs):
        line = res.get(i, f"C {i} no result")
        w = line.split(" ")
        bad = None
        if w[0] == "C":
            crashes += 1
            bad = line
        elif w[0] == "D":
            bad = line
        else:
            ours = int(w[2]) if len(w) == 3 else None
            codes[ours or 0] = codes.get(ours or 0, 0) + 1
            if ours is None:
                s, e, dig = int(w[2]), int(w[3]), w[4]
                if dig != hashlib.sha256(der[s:e]).hexdigest():
                    bad = "device digest is not SHA-256 of the span"
            cv = crypto_view(der)
            if bad is None and cv is not None:
                checked += 1
                if ours is not None:
                    if ours in STRICT_CODES:
                        strict += 1
                        strict_by[STRICT_CODES[ours]] = strict_by.get(STRICT_CODES[ours], 0) + 1
                    else:
                        bad = f"cryptography loads it, we reject it with {ours}"
                elif cv:
                    if hashlib.sha256(cv).hexdigest() == dig:
                        equal += 1
                    elif same_key(der[s:e], cv):
                        reenc += 1
                    else:
                        bad = f"pin differs from cryptography's ({hashlib.sha256(cv).hexdigest()})"
        if bad is not None:
            disagree += 1
            kept = os.path.join(a.out, f"disagree-{a.seed}-{i}.der")
            with open(kept, "wb") as f:
                f.write(der)
            print(f"difffuzz: DISAGREE {names[i]} ({len(der)} bytes, kept {kept}): {bad}")
        if a.input:
            verdict = "disagree" if bad is not None else "agree"
            print(f"difffuzz: {names[i]}: {' '.join(w[2:]) if w[0] == 'R' else line} -> {verdict}")

    print("difffuzz: results " + ", ".join(f"{'ok' if k == 0 else k} {v}" for k, v in sorted(codes.items())))
    sb = ", ".join(f"{k} {v}" for k, v in sorted(strict_by.items()))
    print(f"difffuzz: cryptography loaded {checked}: pins equal {equal}, re-encoded key {reenc}, "
          f"strict rejections {strict}" + (f" ({sb})" if sb else "") + f"; device crashes {crashes}")
    print(f"difffuzz: {len(inputs)} inputs, {disagree} disagreements")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
