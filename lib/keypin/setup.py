# Configuration over the serial REPL:
#   import keypin.setup as ks
#   ks.wifi("ssid", "password"); ks.server(mqtt="broker.example.com", user="dev", password="...")
#   ks.pins("api", ["broker.example.com"], "sha256/...", ["sha256/..."]); ks.test(); ks.show()
#   ks.add_active("api", pin); ks.add_backup("api", pin[, group=K]); ks.retire("api", pin[, force=True])
#   ks.fleet("plant-a") (a store migrated from v1 has none: it refuses every signed update until set)
# Every input is checked before anything is written; every write is power-safe. ks uses the one
# PinStore object of the file (keypin.store.open), the same one the running app uses.
import keypin
from keypin import config

CONFIG = config.PATH


def _cfg():
    return config.load_or_empty(CONFIG)


def _store_at(path):
    from keypin.store import open as _open
    return _open(path)


def _store():
    return _store_at(_cfg().get("pins", "pins.json"))


def _err(msg):
    raise ValueError("ks: " + msg)


def wifi(ssid, password=""):
    if not isinstance(ssid, str) or not 0 < len(ssid) <= 32:
        _err("ssid must be 1..32 characters")
    if not isinstance(password, str) or len(password) > 64 or 0 < len(password) < 8:
        _err("Wi-Fi password must be empty or 8..64 characters")
    c = _cfg()
    c["wifi"] = {"ssid": ssid, "password": password}
    config.save(c, CONFIG)
    print("ks: Wi-Fi set to %r (joined at next boot)" % ssid)


def _host(h, what):
    if not isinstance(h, str) or not h or " " in h or "/" in h or ":" in h:
        _err("%s must be a host name like 'broker.example.com', got %r" % (what, h))
    return h.lower()


def _port(p, what):
    if not isinstance(p, int) or not 0 < p < 65536:
        _err("%s must be 1..65535, got %r" % (what, p))
    return p


def server(mqtt=None, mqtt_port=8883, user=None, password=None, https=None, interval=300,
           device_id=None, topic_prefix=None, period=None):
    # mqtt: broker host name; https: check-in URL ("https://host[:port]/path")
    c = _cfg()
    if mqtt is not None:
        m = c.get("mqtt") or {}
        m["host"] = _host(mqtt, "mqtt")
        m["port"] = _port(mqtt_port, "mqtt_port")
        if (user is None) != (password is None):
            _err("give both user and password, or neither")
        if user is not None:
            m["user"], m["password"] = str(user), str(password)
        if topic_prefix is not None:
            m["topic_prefix"] = str(topic_prefix)
        c["mqtt"] = m
    if https is not None:
        from keypin.https import _split
        try:
            _split(https)
        except Exception as e:
            _err(str(e))
        if not isinstance(interval, int) or interval < 10:
            _err("interval must be >= 10 seconds")
        c["https"] = {"url": https, "interval": interval}
    if device_id is not None:
        if not isinstance(device_id, str) or not 0 < len(device_id) <= 64 or "/" in device_id:
            _err("device_id must be 1..64 characters without '/'")
        c["device_id"] = device_id
    if period is not None:
        if not isinstance(period, int) or period < 1:
            _err("period must be >= 1 second")
        c["period"] = period
    config.save(c, CONFIG)
    print("ks: servers saved")


def pins(name, hosts, active, backups, policy="leaf", allow_no_backup=False):
    # active: a pin or a list of pins in service; backups: a list of pins or of groups (lists)
    if isinstance(hosts, str):
        hosts = [hosts]
    hosts = [_host(h, "host") for h in hosts]
    st = _store()
    st.put(name, hosts, active, backups, policy=policy, allow_no_backup=allow_no_backup)
    print("ks: pin set %r saved (seq %d)" % (name, st.seq))


def add_active(name, pin):
    st = _store()
    st.add_active(name, pin)
    print("ks: %s now in service in %r (seq %d)" % (pin, name, st.seq))


def add_backup(name, pin, group=None):
    # group: None for a new backup group, or K (from 1, as ks.show() numbers them) to join it
    st = _store()
    if group is not None and (not isinstance(group, int) or group < 1):
        _err("group must be a backup group number from 1 (see ks.show()), got %r" % (group,))
    st.add_backup(name, pin, None if group is None else group - 1)
    print("ks: backup added to %r (seq %d)" % (name, st.seq))


def retire(name, pin, force=False):
    # retiring an active pin (one a live server still uses) needs force=True
    st = _store()
    st.retire(name, pin, force=force)
    print("ks: %s retired (seq %d): never trusted again on this device" % (pin, st.seq))


def fleet(name, force=False):
    # the fleet this device belongs to (signed updates must name it); changing a set one: force=True
    st = _store()
    st.set_fleet(name, force=force)
    print("ks: fleet %r (seq %d)" % (name, st.seq))


def show(file=None):
    # file: a stream to print to (default the console)
    if file is None:
        import sys
        file = sys.stdout
    c = _cfg()
    safe = {}
    for k in c:
        v = c[k]
        if isinstance(v, dict):
            v = dict(v)
            if "password" in v:
                v["password"] = "***"
        safe[k] = v
    print("config:", safe, file=file)
    try:
        st = _store()
    except keypin.KeypinError as e:
        print("pins: ERROR", e, file=file)
        return
    d = st.doc
    print("pins: seq %d, version %d, fleet %s, %d set(s)" % (st.seq, d["version"], d["fleet"], len(st.names())),
          file=file)
    for n in st.names():
        s = st.get(n)
        print("  set %r hosts=%s policy=%s%s" % (n, ",".join(s["hosts"]), s["policy"],
                                                 " ca=%d" % len(s["ca"]) if "ca" in s else ""), file=file)
        for p in s["active"]:
            print("    active:   " + p, file=file)
        for i, g in enumerate(s["backups"]):
            print("    backup %d: %s" % (i + 1, ", ".join(g)), file=file)
        if not s["active"] and not s["backups"]:
            print("    WARNING: no pin left: its hosts are refused; ks.pins(...) or a signed update", file=file)
        elif not s["backups"]:
            print("    WARNING: no backup pin left; add one (ks.add_backup) or a signed update", file=file)
    for p in d["retired"]:
        print("  retired:    " + p, file=file)
    for x in st.notes:
        print("  note: " + x, file=file)


def test(file=None):
    # one pinned connection to each configured endpoint; prints the verdict (to file, default the console)
    if file is None:
        import sys
        file = sys.stdout
    from keypin import tls
    try:
        c = _cfg()
        tls.resolve.update(c.get("hosts") or {})
        st = keypin.use_store(c.get("pins", "pins.json"))
    except (ValueError, keypin.KeypinError) as e:  # printed like ks.show(), not a traceback
        print("ks: test not run: ERROR", e, file=file)
        return False
    ends = []
    if c.get("mqtt"):
        ends.append(("mqtt", c["mqtt"]["host"], c["mqtt"].get("port", 8883)))
    if c.get("https"):
        from keypin.https import _split
        h, p, _ = _split(c["https"]["url"])
        ends.append(("https", h, p))
    if not ends:
        print("ks: no endpoints configured; use ks.server(...)", file=file)
    ok = True
    for what, h, p in ends:
        try:
            s = tls.connect(h, p, store=st, timeout=10)
            print("ks: %s %s:%d OK, key is the %s pin%s" % (what, h, p, s.verdict,
                  "" if s.backup < 0 else " %d (rotates on the first real exchange)" % (s.backup + 1)), file=file)
            s.close()  # no confirm: a test connection never rotates
        except Exception as e:
            ok = False
            print("ks: %s %s:%d FAILED: %s" % (what, h, p, e), file=file)
    return ok
