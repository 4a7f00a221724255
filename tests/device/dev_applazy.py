# Device tests for keypin.app's lazy modules (issue 13.2, the 32-bit heap): keypin.update and
# keypin.ed25519 are imported only when an update is offered (or a newer version announced)
# and dropped after, keypin.report only when there is something to report, keypin.config only
# to load config.json. Dropping a module must not drop a check: the per-boot bound on refusal
# writes, the "this very update is installed" state and the report ring's rules still hold.
import json
import os
import sys

import dev_update
import keypin
from dev_update import EVIL, K1, SET, CountFS, P, mkstore, signer_of, upd
from keypin import app, tls

dev_update._n[0] = 10000  # its store directories (KEYPIN_TMP/update<n>), apart from dev_update's own run

LAZY = ("keypin.update", "keypin.ed25519", "keypin.report", "keypin.config")


def _gone(*names):
    for n in names:
        sys.modules.pop(n, None)
        short = n.split(".")[1]
        if short in keypin.__dict__:
            delattr(keypin, short)


def _app(st, **extra):
    cfg = {"device_id": "dev-1", "mqtt": {"host": "h"},
           "update": {"url": "https://h/u", "state": st.path.rsplit("/", 1)[0] + "/keypin-state.json"}}
    cfg.update(extra)
    _gone(*LAZY)
    return app.App(cfg, st)


def _loaded():
    return [n for n in LAZY if n in sys.modules]


def test_update_max_is_the_updaters():
    from keypin.update import MAX_SIZE
    assert app.App.update_max == MAX_SIZE  # keypin.app's own constant (it must not import keypin.update)


def test_steady_state_holds_no_update_report_or_config_code():
    st = mkstore()
    a = _app(st)
    assert a.updater is not None and a.updater.last is None
    assert a.reports is None  # nothing to report: no ring made
    assert _loaded() == [], _loaded()
    a.status()
    assert _loaded() == [], _loaded()


def test_an_offer_applies_and_drops_the_update_code():
    st = mkstore()
    a = _app(st)
    new = {"api": SET(1, [2, 3]), "web": SET(5, [6], hosts=["w"])}
    assert a.updater.offer(upd(K1, 1, new), "mqtt") == "applied"
    assert st.doc["version"] == 1 and st.get("api")["backups"] == [[P(2)], [P(3)]]
    assert _loaded() == [], _loaded()
    assert "update" not in keypin.__dict__ and "ed25519" not in keypin.__dict__
    assert a.updater.last["ok"] is True and a.status()["last_update"]["version"] == 1
    # the same update again is "current" (the state survived the drop), and after a reboot too
    assert a.updater.offer(upd(K1, 1, new), "mqtt") == "current"
    assert _app(st).updater.last["version"] == 1
    assert _app(st).updater.offer(upd(K1, 1, new), "mqtt") == "current"


def test_refusal_writes_stay_bounded_per_boot_across_offers():
    fs = CountFS()
    st = mkstore(fs=fs)
    fs.writes = 0
    a = _app(st)
    for v in range(1, 12):  # a flood of different refusals, each offer imports keypin.update anew
        assert a.updater.offer(upd(EVIL, v, {"api": SET(1, [2, 3])}, signer=signer_of(K1)), "mqtt") == "refused"
        assert _loaded() == []
    assert fs.writes == 4, fs.writes
    assert a.updater.last["version"] == 11 and a.updater.st[0]["refused"] == 11  # counted in RAM


def test_report_ring_made_at_the_first_mismatch_or_from_flash():
    st = mkstore()
    d = st.path.rsplit("/", 1)[0]
    path = d + "/r.json"
    a = _app(st, reports={"path": path, "min_interval": 0})
    assert a.reports is None and tls.on_mismatch == a._mismatch and _loaded() == []
    e = keypin.PinMismatch("test")
    e.host, e.port, e.pinset, e.reason, e.chain = "h", 443, "api", "unknown key", [(0, P(9))]
    tls.on_mismatch(e)
    r = a.reports
    assert r is not None and len(r.items) == 1 and r.items[0]["reason"] == "unknown key"
    assert os.stat(path)[6] > 0  # written to flash at once (rate limits allow it)
    assert a.reports is r  # kept: its per-boot write count and rate limit go on
    # after a reboot the ring on flash is found and published
    b = _app(st, reports={"path": path})
    assert b.reports is not None and b.reports.pending() and b.reports.items[0]["host"] == "h"
    # reports: false -> never a ring, no hook
    tls.on_mismatch = None
    c = _app(st, reports=False)
    assert c.reports is None and tls.on_mismatch is None
    tls.on_mismatch = None


def test_config_dropped_after_loading():
    d = mkstore().path.rsplit("/", 1)[0]
    with open(d + "/config.json", "w") as f:
        f.write(json.dumps({"device_id": "x", "pins": d + "/pins.json", "hosts": {"h": "127.0.0.1"}}))
    _gone("keypin.config")
    cfg, st = app._setup(d + "/config.json")
    assert cfg["device_id"] == "x" and st.doc["version"] == 0 and tls.resolve["h"] == "127.0.0.1"
    assert "keypin.config" not in sys.modules and "config" not in keypin.__dict__
    try:  # a bad config is still refused (and the module still dropped)
        with open(d + "/bad.json", "w") as f:
            f.write(json.dumps({"mqtt": {"port": "x"}}))
        app._config(d + "/bad.json")
        raise AssertionError("bad config accepted")
    except keypin.KeypinError as e:
        assert "mqtt.port" in str(e), e
    assert "keypin.config" not in sys.modules
