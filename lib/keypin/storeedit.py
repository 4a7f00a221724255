# Every write of the pin store (PinStore.put/add_active/add_backup/retire, and the device's own
# rotate and replace), kept apart from keypin.store so that steady state (connect, check) holds
# none of it: keypin.store imports this module for a write and drops it afterwards. Each write is
# one atomic document replace through commit() (refused if the flash is newer than its base).
from keypin import PinFormatError, StoreError
from keypin.pindoc import check_name, encode, set_pins, validate, validate_set
from keypin.pindocx import purge
from keypin.pins import parse_pin


def commit(st, doc):
    # one truth per file: an edit based on an older state than the flash's is refused
    fl = st._scan()[0]
    if fl is not None and fl["seq"] > st.doc["seq"]:
        base = st.doc["seq"]
        st.load()
        raise StoreError("pin store changed on flash (seq %d, this edit was based on seq %d); reloaded, "
                         "repeat the edit" % (fl["seq"], base))
    if fl is not None:
        for r in fl["retired"]:  # retired pins: always the union of memory and flash
            if r not in doc["retired"]:
                doc["retired"].append(r)
    doc["seq"] = st.doc["seq"] + 1
    try:
        validate(doc)
    except (ValueError, PinFormatError) as e:
        raise StoreError(str(e))
    st._write(encode(doc))
    st.adopt(doc)


def _sync(st):
    # reload if the flash holds a newer document than this object
    fl = st._scan()[0]
    if fl is not None and fl["seq"] > st.doc["seq"]:
        st.load()


def _set(st, doc, name):
    s = doc["sets"].get(name)
    if s is None:
        raise StoreError("no pin set %r (have: %s)" % (name, ", ".join(st.names()) or "none"))
    return s


def rotate(st, name, k, pin):
    _sync(st)
    doc = st._copy()
    s = _set(st, doc, name)
    if pin in s["active"]:
        return False
    g = s["backups"]
    if not (0 <= k < len(g) and pin in g[k]):
        k = -1
        for i in range(len(g)):
            if pin in g[i]:
                k = i
                break
    if k < 0 or pin in doc["retired"]:
        raise StoreError("set %r changed during the connection; rotation to %s not applied" % (name, pin))
    old = s["active"]
    gone = list(old)
    for grp in g[:k]:
        gone += grp
    doc["retired"] += gone
    s["active"] = g[k]
    s["backups"] = g[k + 1:]
    purge(doc, gone)  # the retired pins leave every other set too
    if not s["backups"]:
        s["allow_no_backup"] = True  # the device must keep working; the status reports it
    commit(st, doc)
    print("keypin: rotated set %r: %s -> %s (seq %d)" % (name, ",".join(old), ",".join(s["active"]), st.seq))
    return True


def replace(st, doc):
    _sync(st)
    doc["fleet"] = st.doc["fleet"]
    for p in st.doc["retired"]:
        if p not in doc["retired"]:
            doc["retired"].append(p)
    commit(st, doc)


def set_fleet(st, fleet, force):
    old = st.doc["fleet"]
    if old == fleet:
        return
    if old is not None and not force:
        raise StoreError("this device is in fleet %r: changing it to %r needs force=True" % (old, fleet))
    doc = st._copy()
    doc["fleet"] = fleet
    commit(st, doc)
    print("keypin: store: fleet %r -> %r (seq %d)" % (old, fleet, st.seq))


def _err(e):
    raise StoreError(str(e))


def _new_pin(doc, pin, s=None, name=None):
    # a pin may be in several sets, once per set, and never if retired
    parse_pin(pin)
    if pin in doc["retired"]:
        raise StoreError("pin %s was retired on this device and is never trusted again" % pin)
    if s is not None and pin in set_pins(s):
        raise StoreError("pin %s is already in set %r" % (pin, name))


def _list(v, what):
    if isinstance(v, str):
        raise StoreError("%s must be a list, not the string %r: write [%r]" % (what, v[:60], v))
    if not isinstance(v, (list, tuple)):
        raise StoreError("%s must be a list, not %r" % (what, type(v).__name__))
    return list(v)


def put(self, name, hosts, active, backups, policy, allow_no_backup, ca=None):
    # active: a pin or a list of pins; backups: a list whose items are pins (a group of one)
    # or lists of pins (a group staged together)
    try:
        check_name(name)
    except ValueError as e:
        _err(e)
    doc = self._copy()
    if isinstance(hosts, str):
        hosts = [hosts]
    act = [active] if isinstance(active, str) else _list(active, "active")
    if not act:
        raise StoreError("set %r: active must list at least one pin in service" % name)
    groups = []
    for g in _list(backups, "backups"):
        groups.append([g] if isinstance(g, str) else _list(g, "a backup group"))
    s = {"hosts": [h.lower() for h in _list(hosts, "hosts")], "active": act, "backups": groups, "policy": policy}
    if allow_no_backup:
        s["allow_no_backup"] = True
    if ca:
        s["ca"] = _list(ca, "ca")
    doc["sets"].pop(name, None)  # a replaced set's retired pins stay: retired is device-wide
    for p in set_pins(s):
        _new_pin(doc, p)
    try:
        validate_set(s)
    except (ValueError, PinFormatError) as e:
        raise StoreError("set %r: %s" % (name, e))
    doc["sets"][name] = s
    commit(self, doc)


def add_active(self, name, pin):
    doc = self._copy()
    s = _set(self, doc, name)
    _new_pin(doc, pin, s, name)
    if len(s["active"]) >= 8:
        raise StoreError("set %r already has 8 active pins" % name)
    s["active"].append(pin)
    commit(self, doc)


def add_backup(self, name, pin, group=None):
    doc = self._copy()
    s = _set(self, doc, name)
    _new_pin(doc, pin, s, name)
    g = s["backups"]
    if group is None:
        g.append([pin])
    elif isinstance(group, int) and 0 <= group < len(g):
        g[group].append(pin)
    else:
        raise StoreError("set %r has no backup group %r (it has %d)" % (name, group, len(g)))
    commit(self, doc)


def retire(self, name, pin, force):
    doc = self._copy()
    s = _set(self, doc, name)
    parse_pin(pin)
    if pin in doc["retired"]:
        raise StoreError("pin %s is already retired" % pin)
    g = s["backups"]
    if pin in s["active"]:
        if not force:
            raise StoreError("pin %s is in service (active) in set %r: a live server still uses it; "
                             "retire it anyway with force=True (keypin pinset retire --force)" % (pin, name))
        s["active"].remove(pin)
        if not s["active"]:
            if not g:
                raise StoreError("cannot retire the only key of set %r" % name)
            s["active"] = g.pop(0)  # the next group takes over
    else:
        for grp in g:
            if pin in grp:
                grp.remove(pin)
                if not grp:
                    g.remove(grp)
                break
        else:
            raise StoreError("pin %s is not active or a backup in set %r" % (pin, name))
    if not g and not s.get("allow_no_backup"):
        if not force:
            raise StoreError("retiring %s leaves set %r without a backup; force=True to insist" % (pin, name))
        s["allow_no_backup"] = True
    doc["retired"].append(pin)
    before = {n: (len(set_pins(o)), len(o["backups"])) for n, o in doc["sets"].items()}
    purge(doc, (pin,))  # retired device-wide: it leaves every other set too
    for n, o in doc["sets"].items():
        np, nb = before[n]
        if n != name and not force and ((np and not set_pins(o)) or (nb and not o["backups"])):
            raise StoreError("retiring %s leaves set %r %s; force=True to insist" % (
                pin, n, "with no pin (its hosts are refused)" if not set_pins(o) else "without a backup"))
    commit(self, doc)
