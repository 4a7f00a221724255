# Stand-in for MicroPython's esp32 module on the Unix port: the two OTA app partitions
# (ota_0, ota_1) of an ESP32 as files, with the same Partition API keypin.ota uses
# (RUNNING/BOOT, info, ioctl 4/5/6, readblocks, writeblocks, get_next_update, set_boot,
# mark_app_valid_cancel_rollback) and ESP-IDF's app-rollback bootloader rule (bootloader()):
# an image set with set_boot() boots once in "pending"; reset while pending and not marked
# valid, it is "aborted" and the previous image boots again. Files live in esp32-flash/ under
# the current directory (the device's filesystem root). Tests put this directory on MICROPYPATH;
# a real board has the real module.
import json
import os

_DIR = "esp32-flash"
_LABELS = ("ota_0", "ota_1")
_SIZE = 0x180000  # 1.5 MiB per app partition, as MicroPython's OTA partition tables
_BS = 4096
HOOK = None  # tests set a callable(op) that may cut the power before a partition write


def _load():
    try:
        with open(_DIR + "/otadata.json") as f:
            return json.load(f)
    except OSError:
        return {"boot": "ota_0", "running": "ota_0", "prev": None, "state": {"ota_0": "valid"}}


def _save(s):
    try:
        os.mkdir(_DIR)
    except OSError:
        pass
    with open(_DIR + "/otadata.json.new", "w") as f:
        f.write(json.dumps(s))
    os.rename(_DIR + "/otadata.json.new", _DIR + "/otadata.json")


def bootloader():
    # what the second-stage bootloader decides at reset; the power-on harness calls it
    s = _load()
    was = json.dumps(s)
    b = s["boot"]
    st = s["state"].get(b, "valid")
    if st == "new":
        s["state"][b] = "pending"
    elif st in ("pending", "aborted") and s.get("prev"):
        s["state"][b] = "aborted"
        b = s["boot"] = s["prev"]
    s["running"] = b
    if json.dumps(s) != was:
        _save(s)
    return b


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_BS):
        if id == Partition.RUNNING:
            id = _load()["running"]
        elif id == Partition.BOOT:
            id = _load()["boot"]
        if id not in _LABELS:
            raise ValueError("partition not found")
        self.label = id
        self.path = f"{_DIR}/{id}.bin"

    def __repr__(self):
        return f"<Partition stand-in {self.label}>"

    def info(self):
        i = _LABELS.index(self.label)
        return (Partition.TYPE_APP, 0x10 + i, 0x10000 + i * _SIZE, _SIZE, self.label, False)

    def ioctl(self, op, arg):
        if op == 4:
            return _SIZE // _BS
        if op == 5:
            return _BS
        if op == 6:
            return 0
        return None

    def _file(self):
        try:
            os.stat(self.path)
        except OSError:
            try:
                os.mkdir(_DIR)
            except OSError:
                pass
            with open(self.path, "wb"):
                pass
        return open(self.path, "r+b")

    def readblocks(self, n, buf, off=0):
        with self._file() as f:
            f.seek(n * _BS + off)
            d = f.read(len(buf))
        buf[:len(d)] = d
        for i in range(len(d), len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, n, buf, off=None):
        if off is None and len(buf) % _BS:
            raise OSError(22)  # EINVAL: whole blocks only (erase + write)
        if n * _BS + (off or 0) + len(buf) > _SIZE:
            raise OSError(28)
        if HOOK:
            HOOK("writeblocks")
        with self._file() as f:
            f.seek(n * _BS + (off or 0))
            f.write(buf)

    def get_next_update(self):
        return Partition(_LABELS[1 - _LABELS.index(self.label)])

    def set_boot(self):
        if HOOK:
            HOOK("set_boot")
        s = _load()
        s["prev"] = s["running"]
        s["boot"] = self.label
        s["state"][self.label] = "new"
        _save(s)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        if HOOK:
            HOOK("mark_app_valid")
        s = _load()
        s["state"][s["running"]] = "valid"
        s["boot"] = s["running"]
        _save(s)

    @staticmethod
    def find(type=TYPE_APP, subtype=255, label=None):
        return [Partition(x) for x in _LABELS if label in (None, x)] if type == Partition.TYPE_APP else []
