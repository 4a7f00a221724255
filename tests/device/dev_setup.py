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
    ks.pins("api", ["api.example.com"], P(1), [P(2)])
    ks.add_backup("api", P(3))
    ks.retire("api", P(2))
    assert "without a backup" in _bad(ks.retire, "api", P(3))
    ks.retire("api", P(3), force=True)
    from keypin.store import PinStore
    s = PinStore("pins.json").get("api")
    assert s["active"] == P(1) and s["backups"] == [] and s["retired"] == [P(2), P(3)]


def test_show_prints_state_and_hides_password():
    _dir("s3")
    ks.server(mqtt="b.example.com", user="dev", password="topsecret")
    ks.pins("api", "b.example.com", P(1), [P(2)])
    import io
    buf = io.StringIO()
    ks.show(file=buf)
    out = buf.getvalue()
    assert "topsecret" not in out and "***" in out
    assert "active:   " + P(1) in out and "backup 1: " + P(2) in out


def test_corrupt_config_is_a_clear_error():
    _dir("s4")
    with open("config.json", "w") as f:
        f.write("{not json")
    m = _bad(ks.wifi, "net", "longenough")
    assert "config.json is not valid JSON" in m
