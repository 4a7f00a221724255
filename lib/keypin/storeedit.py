# Pin-set edits (PinStore.put/add_backup/retire), kept apart from keypin.store so that a
# device that only connects and rotates never loads them.
from keypin import StoreError
from keypin.pins import parse_pin
from keypin.store import check_name, validate_set


def put(self, name, hosts, active, backups, policy, allow_no_backup):
    try:
        check_name(name)
    except ValueError as e:
        raise StoreError(str(e))
    doc = self._copy()
    old = doc["sets"].get(name)
    retired = old["retired"] if old else []
    if isinstance(hosts, str):
        hosts = [hosts]
    s = {"hosts": [h.lower() for h in hosts], "active": active, "backups": list(backups),
         "retired": list(retired), "policy": policy}
    if allow_no_backup:
        s["allow_no_backup"] = True
    for p in [active] + list(backups):
        if p in retired:
            raise StoreError("pin %s was retired in set %r and is never trusted again" % (p, name))
    try:
        validate_set(s)
    except ValueError as e:
        raise StoreError("set %r: %s" % (name, e))
    doc["sets"][name] = s
    self._try(doc)


def add_backup(self, name, pin):
    parse_pin(pin)
    doc = self._copy()
    s = self._set(doc, name)
    if pin in s["retired"]:
        raise StoreError("pin %s was retired in set %r and is never trusted again" % (pin, name))
    if pin == s["active"] or pin in s["backups"]:
        raise StoreError("pin %s is already in set %r" % (pin, name))
    s["backups"].append(pin)
    self._try(doc)


def retire(self, name, pin, force):
    doc = self._copy()
    s = self._set(doc, name)
    if pin == s["active"]:
        if not s["backups"]:
            raise StoreError("cannot retire the only key of set %r" % name)
        s["active"] = s["backups"].pop(0)
    elif pin in s["backups"]:
        s["backups"].remove(pin)
    else:
        raise StoreError("pin %s is not active or a backup in set %r" % (pin, name))
    if not s["backups"]:
        if not force and not s.get("allow_no_backup"):
            raise StoreError("retiring %s leaves set %r without a backup; force=True to insist" % (pin, name))
        s["allow_no_backup"] = True
    s["retired"].append(pin)
    self._try(doc)
