# keypin boot: join Wi-Fi from config.json on ESP32. The Unix port has no radio.
import sys


def _wifi():
    import json
    import time
    try:
        with open("config.json") as f:
            w = json.load(f).get("wifi") or {}
    except Exception as e:
        print("boot: no usable config.json (%s); configure with: import keypin.setup as ks" % e)
        return
    if not w.get("ssid"):
        print("boot: no Wi-Fi configured; use ks.wifi(ssid, password)")
        return
    import network
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(w["ssid"], w.get("password", ""))
        t = time.ticks_ms()
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), t) < w.get("timeout_ms", 15000):
            time.sleep_ms(200)
    if sta.isconnected():
        print("boot: Wi-Fi connected to %s, address %s" % (w["ssid"], sta.ifconfig()[0]))
    else:
        print("boot: Wi-Fi %s not joined; main.py will retry its connections" % w["ssid"])


if sys.platform == "linux":
    print("boot: Unix port, no Wi-Fi to join (skipped)")
else:
    _wifi()
