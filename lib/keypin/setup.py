# Configuration over the serial REPL:
#   import keypin.setup as ks
#   ks.wifi("ssid", "password"); ks.server(mqtt="broker.example.com", user="dev", password="...")
#   ks.pins("api", ["broker.example.com"], "sha256/...", ["sha256/..."]); ks.test(); ks.show()
# Every input is checked before anything is written; every write is power-safe.
import keypin
from keypin import config
from keypin.pins import parse_pin

CONFIG = config.PATH


def _cfg():
    return config.load_or_empty(CONFIG)


def _store():
    from keypin.store import PinStore
    return PinStore(_cfg().get("pins", "pins.json"))


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


def _pinlist(lst):
    if isinstance(lst, str):
        lst = [lst]
    for p in lst:
        parse_pin(p)
    return list(lst)


def pins(name, hosts, active, backups, policy="leaf", allow_no_backup=False):
    if isinstance(hosts, str):
        hosts = [hosts]
    hosts = [_host(h, "host") for h in hosts]
    parse_pin(active)
    st = _store()
    st.put(name, hosts, active, _pinlist(backups), policy=policy, allow_no_backup=allow_no_backup)
    print("ks: pin set %r saved (seq %d)" % (name, st.seq))


def add_backup(name, pin):
    st = _store()
    st.add_backup(name, pin)
    print("ks: backup added to %r (seq %d)" % (name, st.seq))


def retire(name, pin, force=False):
    st = _store()
    st.retire(name, pin, force=force)
    print("ks: %s retired from %r (seq %d)" % (pin, name, st.seq))


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
    print("pins: seq %d, %d set(s)" % (st.seq, len(st.names())), file=file)
    for n in st.names():
        s = st.get(n)
        print("  set %r hosts=%s policy=%s" % (n, ",".join(s["hosts"]), s["policy"]), file=file)
        print("    active:   " + s["active"], file=file)
        for i, p in enumerate(s["backups"]):
            print("    backup %d: %s" % (i + 1, p), file=file)
        for p in s["retired"]:
            print("    retired:  " + p, file=file)
        if not s["backups"]:
            print("    WARNING: no backup pin left; add one (ks.add_backup) or a signed update", file=file)


def test():
    # one pinned connection to each configured endpoint; prints the verdict
    from keypin import tls
    c = _cfg()
    tls.resolve.update(c.get("hosts") or {})
    st = keypin.use_store(c.get("pins", "pins.json"))
    ends = []
    if c.get("mqtt"):
        ends.append(("mqtt", c["mqtt"]["host"], c["mqtt"].get("port", 8883)))
    if c.get("https"):
        from keypin.https import _split
        h, p, _ = _split(c["https"]["url"])
        ends.append(("https", h, p))
    if not ends:
        print("ks: no endpoints configured; use ks.server(...)")
    ok = True
    for what, h, p in ends:
        try:
            s = tls.connect(h, p, store=st, timeout=10)
            print("ks: %s %s:%d OK, key is the %s pin%s" % (what, h, p, s.verdict,
                  "" if s.backup < 0 else " %d (rotates on the first real exchange)" % (s.backup + 1)))
            s.close()  # no confirm: a test connection never rotates
        except Exception as e:
            ok = False
            print("ks: %s %s:%d FAILED: %s" % (what, h, p, e))
    return ok
