# The less travelled paths of the pin document (keypin.pindoc): the keypin-pins/1 migration,
# the sets' CA anchors, the purge of retired pins from every set (rotation, retire), and the
# repair of the two current copies after a fallback (keypin.store.load).
from binascii import a2b_base64

# (no import of keypin.pindoc: it imports this module lazily; no import circle, test_imports.py)
FORMAT = "keypin-pins/2"
FORMAT1 = "keypin-pins/1"


def ca_ders(s):
    # the set's CA certificates as DER bytes, or None
    if "ca" not in s:
        return None
    out = []
    for c in s["ca"]:
        try:
            out.append(a2b_base64(c))
        except ValueError:
            raise ValueError("ca: a certificate is not base64")
    return out


def ca_pins(s):
    # the pins of the set's CA certificates' keys
    d = ca_ders(s)
    if d is None:
        return []
    from keypin import CertError
    from keypin.spki import pin_of
    out = []
    for der in d:
        try:
            out.append(pin_of(der))
        except CertError as e:
            raise ValueError("ca: not a certificate (%s)" % e)
    return out


def purge(doc, pins):
    # retired pins leave every set (active and backup groups; an emptied group goes), and so do
    # the CA anchors whose key is retired. A set left without a backup group gets allow_no_backup
    # (a set left with no pin at all stays, empty: its hosts are refused, fail closed), so that
    # the document stays loadable and the rotation or migration that retired the pins commits.
    for s in doc["sets"].values():
        n = len(s["backups"])
        s["active"] = [p for p in s["active"] if p not in pins]
        s["backups"] = [g for g in ([p for p in g if p not in pins] for g in s["backups"]) if g]
        if n and not s["backups"]:
            s["allow_no_backup"] = True
        if "ca" in s:
            try:
                cp = ca_pins(s)
            except ValueError:
                continue  # validate() names the bad certificate
            s["ca"] = [c for c, p in zip(s["ca"], cp) if p not in pins]
            if not s["ca"]:
                del s["ca"]



def migrate(doc):
    # keypin-pins/1 -> v2 in memory: active P -> [P], backups [P, Q] -> [[P], [Q]], every set's
    # retired -> the top-level retired (union, order kept), fleet null
    if not isinstance(doc, dict) or doc.get("format") != FORMAT1:
        return doc
    ret: list = []
    sets = {}
    try:
        for n, s in doc["sets"].items():
            ns = {"hosts": s["hosts"], "active": [s["active"]], "backups": [[p] for p in s["backups"]],
                  "policy": s["policy"]}
            if s.get("allow_no_backup"):
                ns["allow_no_backup"] = True
            for p in s["retired"]:
                if p not in ret:
                    ret.append(p)
            sets[n] = ns
        new = {"format": FORMAT, "seq": doc["seq"], "version": doc["version"], "signer": doc["signer"],
               "fleet": None, "retired": ret, "sets": sets}
        purge(new, ret)  # a pin retired in one v1 set is retired everywhere now
        return new
    except (KeyError, TypeError, AttributeError):
        raise ValueError("malformed keypin-pins/1 document")


def repair(st, best, bdata, raw, errs, v1, data):
    # the newest document is not in both P and P.2: log, note, write both copies
    p = st.path
    if raw[""] == bdata and v1:
        print("keypin: store: %s: keypin-pins/1 stored as v2 (seq %d)" % (p, best["seq"]))
    elif not (raw[""] == bdata and raw[".2"] is None and raw[".new"] is None and raw[".2.new"] is None):
        # (P alone is a freshly provisioned store: its second copy is made silently; a valid v1 P
        # is migrated once, logged, not noted: nothing failed)
        why = dict(errs)
        bad = []
        for x in ("", ".2"):
            if raw[x] != bdata:
                bad.append("%s: %s" % (p + x, why.get(x) or ("missing" if raw[x] is None else "older")))
        src = "?"
        for x in ("", ".2", ".new", ".2.new", ".old"):
            if raw.get(x) == bdata:
                src = p + x
                break
        note = "store: %s; using %s (seq %d)" % (", ".join(bad), src, best["seq"])
        print("keypin: " + note)
        st.notes.append(note)
    try:
        st._write(data, raw)  # (data: the document to store; bdata re-encoded as v2 for a v1 one)
    except OSError as e:
        print("keypin: store: repair of %s failed: %s" % (p, e))
