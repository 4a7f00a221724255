# Device side of test_ota.py (Unix port): power cuts at every step of a software update, against
# real nginx over pinned HTTPS. A fault-injecting file layer (and the esp32 stand-in's partition
# hook) cuts the power after step k of: download + install into the inactive slot, the firmware
# image, the switch, the trial boot count, the commit, and a rollback. After each cut the device
# powers on (bootloader stand-in, boot.choose()) and must run exactly the old or the new release:
# every file of the chosen slot as its signed manifest says, the firmware of the same release,
# pins.json byte-identical; then the update carried on from there must end in the new release.
#   dev_ota.py WORK WWW URL HOST
# WORK/factory is the device template; WWW the nginx root with rel1/ and rel2/ published.
import hashlib
import json
import os
import sys
from binascii import hexlify

import esp32  # the stand-in (tests/standins on MICROPYPATH)

W, WWW, URL, HOST = sys.argv[1:5]
sys.path.insert(0, W + "/factory")  # the root boot.py, as on the device
from keypin import https, tls
from keypin.ota import Ota
from keypin.ota_get import FS
from keypin.store import PinStore

import boot

tls.resolve[HOST] = "127.0.0.1"

# Each URL is fetched once over pinned HTTPS from nginx; the sweep's later runs replay those bytes
# from memory (the cuts are in the file layer; the network path is tested by test_ota.py itself).
# A replayed response is a real one's status, headers and body, streamed in the same pieces.
_get = https.get
CACHE = {}


class _Replay:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.content = status, headers, body

    def iter_content(self, n=512):
        for i in range(0, len(self.content), n):
            yield self.content[i:i + n]

    def close(self):
        pass


def _cached_get(url, **kw):
    if url not in CACHE:
        kw.pop("stream", None)
        kw["max_body"] = 1 << 20
        r = _get(url, **kw)
        CACHE[url] = (r.status, r.headers, r.content)
    return _Replay(*CACHE[url])


https.get = _cached_get


def pin_files():
    out = {}
    for n in os.listdir("."):
        if n.startswith("pins.json"):
            with open(n, "rb") as f:
                out[n] = f.read()
    return out


os.chdir(W + "/factory")
PINS0 = pin_files()


class Cut(BaseException):
    pass


class FaultFS(FS):
    # every write step counts: create, each torn/complete chunk, rename, remove, mkdir, rmdir
    def __init__(self, k):
        self.k = k
        self.n = 0
        self.at = None

    def step(self, what):
        self.n += 1
        if self.n == self.k:
            self.at = what
            raise Cut()

    def write(self, path, data):
        f = self.open(path)
        f.write(data)
        f.close()

    def open(self, path):
        f = FS.open(self, path)
        self.step(path)
        return _File(self, f, path)

    def rename(self, a, b):
        os.rename(a, b)
        self.step(b)

    def remove(self, path):
        os.remove(path)
        self.step(path)

    def mkdir(self, path):
        os.mkdir(path)
        self.step(path)

    def rmdir(self, path):
        os.rmdir(path)
        self.step(path)


class _File:
    def __init__(self, fs, f, path):
        self.fs, self.f, self.path = fs, f, path

    def write(self, d):
        h = len(d) // 2
        self.f.write(d[:h])
        self.f.flush()
        self.fs.step(self.path)  # torn chunk
        self.f.write(d[h:])
        self.f.flush()
        self.fs.step(self.path)

    def close(self):
        self.f.close()


def sha(path, n=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read() if n is None else f.read(n))
    return hexlify(h.digest()).decode()


def manifest(v):
    with open("%s/rel%d/release.json" % (WWW, v), "rb") as f:
        return json.loads(f.read().split(b"\n")[0])


def copy(src, dst):
    os.mkdir(dst)
    for e in os.ilistdir(src):
        if e[1] == 0x4000:
            copy(src + "/" + e[0], dst + "/" + e[0])
        else:
            with open(src + "/" + e[0], "rb") as f, open(dst + "/" + e[0], "wb") as g:
                g.write(f.read())


FACTORY = {}


def _walk(d, pre=""):
    for e in os.ilistdir(d):
        p = pre + e[0]
        if e[1] == 0x4000:
            yield from _walk(d + "/" + e[0], p + "/")
        else:
            yield p


for p in _walk(W + "/factory/lib", "lib/"):
    FACTORY[p] = sha(W + "/factory/" + p)
FACTORY["main.py"] = sha(W + "/factory/main.py")


def running():
    # power on: the bootloader stand-in, then boot.py's choice -> (version, problems)
    bad = []
    esp32.bootloader()
    path = list(sys.path)
    try:
        p = boot.choose()
    except SystemExit:  # boot.py reset the board (firmware rolled back): power on again
        esp32.bootloader()
        p = boot.choose()
    finally:
        sys.path[:] = path
    v, slot = p["version"], p["slot"]
    if v == 0:
        want = {k: (None, h) for k, h in FACTORY.items()}
        fw = None
    else:
        m = manifest(v)
        want = {f["path"]: (f["size"], f["sha256"]) for f in m["files"]}
        fw = m["firmware"]
    for path, (_, h) in want.items():
        try:
            if sha((slot + "/" if slot else "") + path) != h:
                bad.append("v%d %s: wrong content" % (v, path))
        except OSError:
            bad.append("v%d %s: missing" % (v, path))
    run = esp32.Partition(esp32.Partition.RUNNING)
    if fw is not None and sha(run.path, fw["size"]) != fw["sha256"]:
        bad.append("v%d: firmware %s is not this release's" % (v, run.label))
    if fw is None and run.label != "ota_0":
        bad.append("v%d: runs firmware %s of another release" % (v, run.label))
    if pin_files() != PINS0:
        bad.append("pin store touched")
    return p, bad


N = [0]


def fresh(base):
    N[0] += 1
    d = "%s/d%d" % (W, N[0])
    copy(base, d)
    os.chdir(d)
    return d


def ota(v, fs=None):
    with open("config.json") as f:
        cfg = json.load(f)["release"]
    cfg["url"] = URL + "rel%d/" % v
    return Ota(cfg, PinStore(os.getcwd() + "/pins.json"), "dev-1", fs=fs, log=lambda *a: None)


def check(v, fs=None):
    return ota(v, fs).check(store=PinStore(os.getcwd() + "/pins.json"), timeout=10)


def commit(fs=None):
    ota(1, fs).commit()


class SmallFlash(FS):
    # stand-in for a board's flash of `cap` bytes (the host file system is larger): free() reports
    # what is left (or `lie` bytes), and a write past the end fails with ENOSPC like LittleFS
    def __init__(self, cap, lie=None):
        self.cap, self.lie = cap, lie

    def used(self):
        return sum(os.stat(p)[6] for p in _walk("."))

    def free(self, path):
        return 4096, self.lie if self.lie is not None else self.cap - self.used()

    def open(self, path):
        return _Full(self, FS.open(self, path))


class _Full:
    def __init__(self, fs, f):
        self.fs, self.f = fs, f

    def write(self, d):
        if self.fs.used() + len(d) > self.fs.cap:
            raise OSError(28)
        self.f.write(d)
        self.f.flush()

    def close(self):
        self.f.close()


def full_flash():
    # a release that does not fit: refused before writing (free space check), and if the flash
    # fills up anyway (free() was wrong), refused with the slot cleaned up; nothing changed
    res = {}
    for case, lie in (("precheck", None), ("enospc", 10 ** 9)):
        fresh(W + "/factory")
        before = sorted(_walk("."))
        fs = SmallFlash(SmallFlash(0).used() + 20000, lie)
        o = ota(1, fs)
        o.url = URL
        r = o.check(store=PinStore(os.getcwd() + "/pins.json"), timeout=10)
        after = sorted(p for p in _walk(".") if p != "keypin-ota.json")
        p, bad = running()
        res[case] = {"result": r, "reason": o.state.get("last", {}).get("reason"), "changed": after != before,
                     "version": p["version"], "bad": bad, "slots": [n for n in os.listdir(".") if n.startswith("slot")]}
    print(json.dumps(res))


if len(sys.argv) > 5 and sys.argv[5] == "full":
    full_flash()
    sys.exit(0)

out = {"cuts": {}, "bad": [], "notnew": []}


def sweep(name, base, v, act, old):
    # cut at step 1, 2, ... of act(fs) until it completes; returns the cut count
    k = 1
    while True:
        print("cut", name, k)
        fresh(base)
        fs = FaultFS(k)
        esp32.HOOK = fs.step
        try:
            act(fs)
            done = True
        except Cut:
            done = False
        except SystemExit:  # the act reset the board
            done = True
        finally:
            esp32.HOOK = None
        p, bad = running()
        if p["version"] not in (old, v):
            bad.append("version %d" % p["version"])
        out["bad"] += ["%s step %d (%s): %s" % (name, k, fs.at, b) for b in bad]
        # carry on from here: the update must still end in the new release
        if p["version"] != v:
            if name.startswith("rollback"):
                pass
            else:
                r = check(v)
                p, bad = running()
                out["bad"] += ["%s step %d, then %s: %s" % (name, k, r, b) for b in bad]
        if p.get("state") == "trial":
            commit()
            p, bad = running()
        if p["version"] != (old if name.startswith("rollback") else v) or p.get("state") != "ok":
            out["notnew"].append("%s step %d: %r" % (name, k, p))
        if done:
            return k - 1
        k += 1


def base_dir(label, setup):
    d = "%s/%s" % (W, label)
    copy(W + "/factory", d)
    os.chdir(d)
    setup()
    return d


# 1: factory -> release 1 (files + firmware image): download, install, firmware, switch
b0 = base_dir("b0", lambda: None)
out["cuts"]["install 0->1"] = sweep("install 0->1", b0, 1, lambda fs: check(1, fs), 0)


# 2: release 1 committed in slot_a, a stale slot_b: release 2 (clean, download, install, switch)
def _committed1():
    assert check(1) == "installed", "release 1 not installed"
    esp32.bootloader()
    boot.choose()
    commit()
    os.mkdir("slot_b")
    with open("slot_b/stale.bin", "wb") as f:
        f.write(b"old" * 100)


b1 = base_dir("b1", _committed1)
out["cuts"]["install 1->2"] = sweep("install 1->2", b1, 2, lambda fs: check(2, fs), 1)


# 3: release 1 installed, power on: the trial boot count, then the commit
def _installed1():
    assert check(1) == "installed"


def _trial1():
    _installed1()
    esp32.bootloader()
    boot.choose()


b2 = base_dir("b2", _installed1)


def _boot_count(fs):
    esp32.bootloader()
    boot.choose(fs)


out["cuts"]["trial boot"] = sweep("trial boot", b2, 1, _boot_count, 0)
b3 = base_dir("b3", _trial1)
out["cuts"]["commit"] = sweep("commit", b3, 1, commit, 0)


# 4: release 1 on trial with its boots used up: the rollback (firmware switched back first)
def _exhausted():
    _trial1()
    p = boot.read()
    p["boots"] = p["max"]
    boot.write(p)


b4 = base_dir("b4", _exhausted)


def _rollback(fs):
    esp32.bootloader()
    boot.choose(fs)


out["cuts"]["rollback"] = sweep("rollback", b4, 0, _rollback, 0)
out["total"] = sum(out["cuts"].values())
print(json.dumps(out))
