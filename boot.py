# keypin boot: choose the software slot, count trial boots, join Wi-Fi from config.json.
# Software updates (keypin.ota) install a release into slot_a/ or slot_b/ and switch by one
# rename of the small pointer file slot.json ("" = the factory software: /main.py and /lib):
#   {"slot": "slot_b", "version": 5, "state": "trial"|"ok", "boots": 1, "max": 3,
#    "prev": {"slot": "slot_a", "version": 4}, "fw": "ota_1"|null, "bad": [rolled-back versions],
#    "last": {...}}
# A slot on trial that has booted `max` times without its pinned self-test committing it (or
# whose firmware image the bootloader rolled back) goes back to prev here, by itself. The pin
# store and config.json live at the root, outside the slots: nothing here touches them.
# main.py calls start(run): the chosen slot's main.py runs; a crash on trial resets the board.
import sys

PTR = "slot.json"


def read():
    import json
    try:
        with open(PTR) as f:
            p = json.load(f)
        if isinstance(p, dict) and isinstance(p.get("slot"), str) and isinstance(p.get("version"), int):
            return p
    except (OSError, ValueError):
        pass
    return {"slot": "", "version": 0, "state": "ok"}


def write(p, fs=None):
    # slot.json.new, then one rename over slot.json (atomic and power-safe on LittleFS)
    import json
    d = json.dumps(p).encode()
    if fs:
        fs.write(PTR + ".new", d)
        fs.rename(PTR + ".new", PTR)
        return
    import os
    with open(PTR + ".new", "wb") as f:
        f.write(d)
    os.rename(PTR + ".new", PTR)


def reset(why):
    print("boot: reset:", why)
    try:
        import machine
        machine.reset()
    except (ImportError, AttributeError):  # the Unix port: the harness powers the device on again
        pass
    raise SystemExit(75)


def _running():
    # label of the running firmware partition, None without esp32.Partition
    try:
        from esp32 import Partition
        return Partition(Partition.RUNNING).info()[4]  # type: ignore[arg-type]
    except (ImportError, AttributeError, OSError):
        return None


def _ok(slot):
    import os
    try:
        if slot:  # release.json is written last: the slot is complete
            os.stat(slot + "/release.json")
            os.stat(slot + "/main.py")
        return True
    except OSError:
        return False


def rollback(p, why, fs=None, strikes=0):
    # back to p["prev"]; a new firmware image still running is switched back first. keypin.ota
    # refuses a version with 2 strikes in "bad": a used-up boot limit is 2, a reset during a trial
    # boot (the bootloader rolled the firmware back: a crash, or a power cut) 1, a switch that a
    # power cut stopped before the first trial boot 0
    fw = p.get("fw") and _running() == p["fw"]
    if fw:
        from esp32 import Partition
        Partition(Partition.RUNNING).get_next_update().set_boot()  # type: ignore[arg-type]
    prev = p.get("prev") or {}
    n = {"slot": prev.get("slot", ""), "version": prev.get("version", 0), "state": "ok",
         "bad": (p.get("bad") or [])[-6:] + [p["version"]] * strikes,
         "last": {"version": p["version"], "ok": False, "reason": "rolled back: " + why}}
    write(n, fs)
    print("boot: release %d rolled back to %s (%s)" % (p["version"], n["slot"] or "factory", why))
    if fw:
        reset("old firmware")
    return n


def choose(fs=None):
    # once per power-on: count a trial boot or roll back; -> the pointer in force
    p = read()
    if p.get("state") == "trial":
        if p.get("fw") and _running() != p["fw"]:
            return rollback(p, "firmware %s did not boot" % p["fw"], fs, 1 if p.get("boots") else 0)
        if p.get("boots", 0) >= p.get("max", 3):
            return rollback(p, "no pinned self-test passed in %d boots" % p.get("boots", 0), fs, 2)
        if not _ok(p["slot"]):
            return rollback(p, "slot %s incomplete" % p["slot"], fs)
        p["boots"] = p.get("boots", 0) + 1
        write(p, fs)
        print("boot: release %d on trial in %s, boot %d of %d" % (p["version"], p["slot"], p["boots"], p.get("max", 3)))
    elif not _ok(p["slot"]):
        print("boot: slot %s incomplete; factory software" % p["slot"])
        p = {"slot": "", "version": 0, "state": "ok"}
    use(p["slot"])
    return p


def use(slot):
    # the slot's lib first on sys.path: its keypin package shadows the factory /lib one
    if slot:
        lib = slot + "/lib"
        while lib in sys.path:
            sys.path.remove(lib)
        sys.path.insert(0, lib)


def start(run):
    # main.py's entry: the chosen slot's main.py defines run() like main.py; "" runs `run`
    p = read()
    s = p["slot"] if _ok(p["slot"]) else ""
    try:
        if not s:
            return run()
        use(s)
        sys.modules.pop("main", None)
        sys.path.insert(0, s)  # only while importing the slot's main.py as module "main"
        try:
            m = __import__("main")
        finally:
            sys.path.remove(s)
        return m.run()
    except Exception as e:
        if p.get("state") != "trial":
            raise
        sys.print_exception(e)  # type: ignore[attr-defined]
        reset("release %d crashed on trial" % p["version"])


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


if __name__ == "__main__":
    try:
        choose()
    except Exception as e:  # never keep the board from booting: the factory software runs
        print("boot: slot selection failed (%r); factory software" % e)
    if sys.platform == "linux":
        print("boot: Unix port, no Wi-Fi to join (skipped)")
    else:
        _wifi()
