# Differential check, device side (MicroPython Unix port, run by tools/lab/fuzz/difffuzz.py via tools/upy).
# Usage: difffuzz_dev.py BATCHFILE [FIRST]
# BATCHFILE holds records: 4-byte big-endian length, then that many input bytes. Records
# before index FIRST are skipped (the host restarts a batch after a crash that way).
# For each input, the C native module keypin_spki and the viper module keypin_spkiv (find,
# sha256, sha256_into each) and the Python reference (python_find, python_sha256) must give
# the same result. One line per input, flushed:
#   R i code                  all reject with the same negative code
#   R i start end sha256hex   all accept, same span and digest
#   D i why                   disagreement (a module and the reference, or a module with itself)
# and "END n" after the last record. Exit 0 when the batch was read to its end.
import sys
from binascii import hexlify

try:
    import keypin_spki
    import keypin_spkiv
except ImportError as e:
    print("ERR native modules keypin_spki and keypin_spkiv not on the path (make natmod; KEYPIN_NATIVE "
          "must not be 0): %s" % e)
    sys.exit(3)
from keypin.spkiref import python_find, python_sha256

MODS = (("native", keypin_spki), ("viper", keypin_spkiv))


def _show(r):
    if isinstance(r, int):
        return str(r)
    if isinstance(r, tuple):
        return f"{r[0]}:{r[1]}"
    return hexlify(r).decode()


def check(i, der, out):
    pf = python_find(der)
    ps = python_sha256(der)
    why = None
    for name, nat in MODS:
        for k in range(32):
            out[k] = 0xA5
        why = compare(nat, der, out, pf, ps)
        if why is not None:
            why = name + " " + why
            break
    if why is not None:
        print(f"D {i} {why}")
    elif isinstance(pf, int):
        print(f"R {i} {pf}")
    else:
        print(f"R {i} {pf[0]} {pf[1]} {_show(ps)}")


def compare(nat, der, out, pf, ps):
    nf = nat.find(der)
    ns = nat.sha256(der)
    rc = nat.sha256_into(memoryview(der), out)  # the verify-callback path gets a memoryview
    why = None
    if isinstance(nf, int) or isinstance(pf, int):
        if nf != pf:
            why = f"find native={_show(nf)} python={_show(pf)}"
        elif ns != pf or ps != pf or rc != pf:
            why = f"sha256 native={_show(ns)} into={rc} python={_show(ps)} find={_show(pf)}"
    elif not (isinstance(nf, tuple) and isinstance(pf, tuple) and len(nf) == 2 and nf == pf):
        why = f"find native={_show(nf)} python={_show(pf)}"
    elif not isinstance(ns, bytes) or ns != ps or rc != 0 or bytes(out) != ps:
        why = f"sha256 native={_show(ns)} into={rc}/{_show(bytes(out))} python={_show(ps)}"
    return why


def main():
    path = sys.argv[1]
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    out = bytearray(32)
    i = 0
    with open(path, "rb") as f:
        while True:
            h = f.read(4)
            if not h:
                break
            n = (h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3]
            der = f.read(n)
            if len(der) != n:
                print(f"ERR short record {i}")
                sys.exit(4)
            if i >= first:
                check(i, der, out)
            i += 1
    print(f"END {i}")


main()
