# Device tests for keypin.setup (the serial-REPL configuration) and keypin.config.
import json
import os

import keypin
import keypin.setup as ks

TMP = os.getenv("KEYPIN_TMP")


def _dir(name):
    d = TMP + "/" + name
    os.mkdir(d)
    os.chdir(d)


def P(i):
    from keypin.pins import format_pin
    return format_pin(bytes([i]) * 32)


def _bad(fn, *a, **kw):
    before = _files()
    try:
        fn(*a, **kw)
    except (ValueError, keypin.KeypinError) as e:
        assert _files() == before, "a refused call changed files"
        return str(e)
    raise AssertionError("accepted %r %r" % (a, kw))


def _files():
    out = {}
    for n in os.listdir():
        with open(n, "rb") as f:
            out[n] = f.read()
    return out


def test_wifi_and_server_validated_and_saved():
    _dir("s1")
    assert "ssid" in _bad(ks.wifi, "")
    assert "8..64" in _bad(ks.wifi, "net", "short")
    ks.wifi("net", "longenough")
    assert "host name" in _bad(ks.server, mqtt="https://x")
    assert "1..65535" in _bad(ks.server, mqtt="b.example.com", mqtt_port=70000)
    assert "both user and password" in _bad(ks.server, mqtt="b.example.com", user="u")
    assert "https://" in _bad(ks.server, https="http://plain.example.com/")
    ks.server(mqtt="Broker.Example.com", user="dev", password="pw", https="https://api.example.com/checkin",
              device_id="dev-1")
    with open("config.json") as f:
        c = json.load(f)
    assert c["wifi"] == {"ssid": "net", "password": "longenough"}
    assert c["mqtt"]["host"] == "broker.example.com" and c["mqtt"]["port"] == 8883
    assert c["https"]["url"] == "https://api.example.com/checkin" and c["device_id"] == "dev-1"
    assert "config.json.new" not in os.listdir()


def test_pins_add_backup_retire():
    _dir("s2")
    _bad(ks.pins, "api", ["api.example.com"], "sha256/bad", [P(2)])
    assert "brick" in _bad(ks.pins, "api", ["api.example.com"], P(1), [])
    # issue 17.5: a string where the list of backups belongs is named as such
    m = _bad(ks.pins, "api", ["api.example.com"], P(1), P(2))
    assert "must be a list" in m and "bad pin 's'" not in m, m
    ks.pins("api", ["api.example.com"], P(1), [P(2)])
    ks.add_backup("api", P(3))
    ks.add_backup("api", P(5), group=2)  # joins backup group 2
    ks.add_active("api", P(6))
    assert "group" in _bad(ks.add_backup, "api", P(7), group=0)
    ks.retire("api", P(2))
    # issue 12.8: the active pin is the key a live server uses: force needed
    m = _bad(ks.retire, "api", P(1))
    assert "in service" in m and "force=True" in m, m
    ks.retire("api", P(1), force=True)
    from keypin.store import PinStore
    st = PinStore("pins.json")
    s = st.get("api")
    assert s["active"] == [P(6)] and s["backups"] == [[P(3), P(5)]] and st.doc["retired"] == [P(2), P(1)]
    assert "without a backup" not in _bad(ks.retire, "api", P(6))
    ks.retire("api", P(3))
    assert "without a backup" in _bad(ks.retire, "api", P(5))
    ks.retire("api", P(5), force=True)


def test_repl_and_app_share_one_store():
    # issue 12.2: ks edits go to the very object the running app uses (keypin.store.open)
    _dir("s5")
    ks.pins("api", ["api.example.com"], P(1), [P(2), P(3)])
    app = keypin.use_store("pins.json")
    ks.retire("api", P(2))
    assert P(2) in app.doc["retired"] and app.digests("api")[1] == [bytes([3]) * 32]


def test_fleet_sets_a_null_fleet_and_changes_a_set_one_only_with_force():
    # H8 "M4": a store migrated from v1 has fleet null and refuses every signed update; ks.fleet
    # sets it (a set fleet changes only with force=True)
    _dir("s7")
    ks.pins("api", ["api.example.com"], P(1), [P(2)])
    app = keypin.use_store("pins.json")
    assert app.doc["fleet"] is None
    ks.fleet("plant-a")
    assert app.doc["fleet"] == "plant-a" and keypin.store.PinStore("pins.json").doc["fleet"] == "plant-a"
    m = _bad(ks.fleet, "plant-b")
    assert "force=True" in m and "'plant-a'" in m, m
    _bad(ks.fleet, "a/b")  # not a fleet name
    ks.fleet("plant-b", force=True)
    assert keypin.store.PinStore("pins.json").doc["fleet"] == "plant-b"


def test_show_names_a_set_left_with_no_pin():
    # H8 "H2": a rotation that retires every pin of another set leaves it empty; ks.show says so
    _dir("s8")
    ks.pins("api", ["api.example.com"], P(1), [P(2)])
    ks.pins("old", ["old.example.com"], P(1), [], allow_no_backup=True)
    assert keypin.use_store("pins.json").rotate("api", 0, P(2))
    import io
    buf = io.StringIO()
    ks.show(file=buf)
    assert "set 'old'" in buf.getvalue() and "no pin left: its hosts are refused" in buf.getvalue(), buf.getvalue()


def test_test_prints_errors_instead_of_a_traceback():
    # issue 17.5: ks.test() reports a broken pin store like ks.show() does
    _dir("s6")
    ks.server(mqtt="b.example.com")
    with open("pins.json", "w") as f:
        f.write("garbage")
    import io
    buf = io.StringIO()
    r = ks.test(file=buf)
    assert r is False and "ERROR" in buf.getvalue() and "unreadable" in buf.getvalue(), buf.getvalue()


def test_show_prints_state_and_hides_password():
    _dir("s3")
    ks.server(mqtt="b.example.com", user="dev", password="topsecret")
    ks.pins("api", "b.example.com", P(1), [P(2)])
    import io
    buf = io.StringIO()
    ks.show(file=buf)
    out = buf.getvalue()
    assert "topsecret" not in out and "***" in out
    assert "active:   " + P(1) in out and "backup 1: " + P(2) in out and "fleet None" in out


def test_corrupt_config_is_a_clear_error():
    _dir("s4")
    with open("config.json", "w") as f:
        f.write("{not json")
    m = _bad(ks.wifi, "net", "longenough")
    assert "config.json is not valid JSON" in m
