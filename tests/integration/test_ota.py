"""Software releases end to end: `keypin release --publish` into the directory real nginx serves,
the device (a `keypin image` in the Unix port, powered on by tests/standins/power_on.py: the
esp32 partition stand-in's bootloader, boot.py, main.py) updates itself over pinned HTTPS into
an A/B slot, reboots, passes its pinned self-test and commits; power cuts at every step end in the
old or the new release; bad releases are refused with their reason and nothing changed; a
release whose main.py crashes is rolled back after the boot limit; a MITM gets zero bytes."""
import base64
import hashlib
import json
import os
import pathlib
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers.pki import CA, new_key, pin
from helpers.realservers import Mosquitto, Nginx
from helpers.servers import TLSServer
from test_updates import signer_of, write_key  # the same Ed25519 signer helpers as the pin updates

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv/bin/keypin")
UPY = str(ROOT / ".venv/bin/micropython")
STANDINS = ROOT / "tests" / "standins"
SRC = pathlib.Path(os.environ.get("KEYPIN_OTA_SRC") or ROOT)  # the device code under test (see image())
HOST = "device.example.test"
DEV = "dev-1"
FLEET = "plant-a"
RESET = 75  # boot.reset(): the software reset the board


def pins_document(pins, fleet=FLEET):
    """The device's pin store, in the format lib/keypin/store.py writes (v1 or v2), naming its fleet."""
    v2 = (ROOT / "lib/keypin/pindoc.py").is_file() and 'FORMAT = "keypin-pins/2"' in (
        ROOT / "lib/keypin/pindoc.py").read_text()
    s = {"hosts": [HOST], "policy": "leaf"}
    if v2:
        s.update(active=[pins["active"]], backups=[[pins["b0"]], [pins["b1"]]])
        doc = {"format": "keypin-pins/2", "seq": 1, "version": 0, "signer": None, "fleet": fleet,
               "retired": [], "sets": {"fleet": s}}
    else:
        s.update(active=pins["active"], backups=[pins["b0"], pins["b1"]], retired=[])
        doc = {"format": "keypin-pins/1", "seq": 1, "version": 0, "signer": None, "fleet": fleet,
               "sets": {"fleet": s}}
    line = json.dumps(doc).encode()
    return line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota")
    ca = CA("OTA")
    keys = {n: new_key() for n in ("active", "b0", "b1", "mitm")}
    signers = {n: ed25519.Ed25519PrivateKey.generate() for n in ("rel", "evil", "next")}
    return {"dir": d, "files": {n: ca.write_chain(d, n, k, HOST) for n, k in keys.items()},
            "pins": {n: pin(k) for n, k in keys.items()}, "signers": signers,
            "keyfiles": {n: write_key(d / f"{n}.key", k) for n, k in signers.items()}}


@pytest.fixture(scope="module")
def image(pki):
    """The factory software: one x64 image built by the CLI (no config, no pins: the device's own)."""
    out = pki["dir"] / "image"
    # KEYPIN_OTA_SRC: a mutated copy of the source tree (boot.py, main.py, lib/), to see a check's test fail
    src = ["--src", os.environ["KEYPIN_OTA_SRC"]] if os.environ.get("KEYPIN_OTA_SRC") else []
    r = subprocess.run([KEYPIN, "image", "--out", str(out), "--arch", "x64", *src], check=False,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "lib/keypin/ota.mpy").is_file()
    return out


@pytest.fixture(scope="module")
def servers(pki):
    crt, key = (str(p) for p in pki["files"]["active"])
    with Nginx(pki["dir"], crt, key) as ng, Mosquitto(pki["dir"], crt, key, users={"dev": "secret"}) as mq:
        yield ng, mq


def release(pki, image, version, publish, *extra, key="rel", check=True):
    """keypin release, as an operator runs it -> (returncode, stdout + stderr)."""
    argv = [KEYPIN, "release", "--key", str(pki["keyfiles"][key]), "--version", str(version), "--fleet", FLEET,
            "--image", str(image), "--publish", str(publish), *map(str, extra)]
    r = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r.returncode, r.stdout + r.stderr


def marked_main(d, version, crash=False):
    """A main.py that says which release runs (or crashes), for --file ...=main.py."""
    src = (ROOT / "main.py").read_text()
    p = d / f"main-{version}.py"
    p.write_text((f'raise RuntimeError("release {version} is broken")\n' if crash else "")
                 + f'print("software: release {version}")\n' + src)
    return p


def device(pki, image, tmp_path, servers, rel="rel", **over):
    ng, mq = servers
    d = tmp_path / "device"
    shutil.copytree(image, d)
    (d / "MANIFEST").unlink()
    for name in ("pins.json", "pins.json.2"):  # both current copies (v2): the store has nothing to repair
        (d / name).write_bytes(pins_document(pki["pins"]))
    cfg = {"device_id": DEV, "pins": "pins.json", "hosts": {HOST: "127.0.0.1"}, "cycles": 1, "period": 0,
           "mqtt": {"host": HOST, "port": mq.port, "user": "dev", "password": "secret", "tries": 2},
           "https": {"url": f"https://{HOST}:{ng.port}/checkin", "interval": 300},
           "release": {"url": f"https://{HOST}:{ng.port}/files/{rel}/", "signer": signer_of(pki["signers"]["rel"]),
                       "boots": 3}}
    cfg.update(over)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def power_on(d, standins=True):
    """One power-on in the Unix port -> (exit status, output)."""
    path = f".frozen:{d}/lib:{ROOT}/build/umqtt-pypi" + (f":{STANDINS}" if standins else "")
    heap = ["-X", "heapsize=" + os.environ["KEYPIN_OTA_HEAP"]] if os.environ.get("KEYPIN_OTA_HEAP") else []
    p = subprocess.run([UPY, *heap, str(STANDINS / "power_on.py")], check=False, cwd=d, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, MICROPYPATH=path))
    return p.returncode, p.stdout + p.stderr


def boots(d, n=8, **kw):
    """Power on again after every reset, at most n times -> [(status, output)]."""
    out = []
    for _ in range(n):
        out.append(power_on(d, **kw))
        if out[-1][0] != RESET:
            break
    return out


def pin_files(d):
    return {p.name: p.read_bytes() for p in d.glob("pins.json*")}


def pointer(d):
    return json.loads((d / "slot.json").read_text())


def tree(d):
    """Every file of the device but the ones the software writes (state, logs): {path: bytes}."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def slot_matches(d, slot, rel_dir):
    m = json.loads((rel_dir / "release.json").read_bytes().split(b"\n")[0])
    for f in m["files"]:
        data = (d / slot / f["path"]).read_bytes()
        assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]
    return m


# ------------------------------------------------------------------------------ a good release


def test_good_release_installed_rebooted_selftested_committed(pki, image, tmp_path, servers):
    ng, mq = servers
    pub = ng.root / "good"
    release(pki, image, 1, pub, "--file", f"{marked_main(tmp_path, 1)}=main.py")
    d = device(pki, image, tmp_path, servers, rel="good")
    pins0 = pin_files(d)
    mq.publish(f"keypin/{DEV}/status", b"", retain=True)  # no retained status of an earlier test
    sub = mq.subscriber(f"keypin/{DEV}/status", count=4, timeout=60)
    runs = boots(d)
    assert [s for s, _ in runs] == [RESET, 0], "\n".join(o for _, o in runs)
    first, second = runs[0][1], runs[1][1]
    assert "ota: release 1 installed in slot_a" in first and "software: release" not in first, first
    assert "boot: release 1 on trial in slot_a, boot 1 of 3" in second, second
    assert "software: release 1" in second and "ota: release 1 committed in slot_a" in second, second
    p = pointer(d)
    assert p["slot"] == "slot_a" and p["version"] == 1 and p["state"] == "ok" and p["prev"]["slot"] == ""
    slot_matches(d, "slot_a", pub)
    assert pin_files(d) == pins0
    # the status message reports it, like pin updates
    msgs = [json.loads(m) for _, m in sub.result()]
    sw = msgs[-1]["software"]
    assert sw["version"] == 1 and sw["state"] == "ok" and "committed" in sw["last"]["reason"], msgs[-1]
    # all over pinned HTTPS from the real server: the version first, then the manifest, then the blobs
    reqs = [r["uri"] for r in ng.requests() if "/files/good/" in r["uri"]]
    assert reqs[:2] == ["/files/good/release.version", "/files/good/release.json"], reqs
    assert {u.rsplit("/", 1)[1] for u in reqs if "/blobs/" in u} == {
        f["sha256"] for f in json.loads((pub / "release.json").read_bytes().split(b"\n")[0])["files"]}
    # next power-on: the committed release runs, only the version is checked
    n = len(reqs)
    s, out = power_on(d)
    assert s == 0 and "software: release 1" in out and "boot: release" not in out, out
    assert [r["uri"] for r in ng.requests() if "/files/good/" in r["uri"]][n:] == ["/files/good/release.version"]


# ------------------------------------------------------------------------------ power cuts


def test_power_cuts_at_every_step_old_or_new_never_a_mixture(pki, image, tmp_path, servers):
    ng, _ = servers
    small = tmp_path / "small"  # a small release keeps the sweep short; every step is still cut
    small.mkdir()
    (small / "data").mkdir()
    (small / "data" / "table.bin").write_bytes(os.urandom(1500))
    for v in (1, 2):
        fw = tmp_path / f"fw{v}.bin"
        fw.write_bytes(os.urandom(9000))
        (small / "main.py").write_text(f'def run():\n    print("release {v}")\n')
        (small / "MANIFEST").write_text("".join(f"{n} {hashlib.sha256((small / n).read_bytes()).hexdigest()}\n"
                                                for n in ("data/table.bin", "main.py")))
        release(pki, small, v, ng.root / f"cut/rel{v}", "--firmware", fw)
    work = tmp_path / "work"
    work.mkdir()
    d = device(pki, image, tmp_path, servers)
    shutil.move(str(d), str(work / "factory"))
    env = dict(os.environ, MICROPYPATH=f".frozen:{SRC}/lib:{ROOT}/build/natmod/x64:{STANDINS}")
    p = subprocess.run([UPY, str(ROOT / "tests/integration/dev_ota.py"), str(work), str(ng.root / "cut"),
                        f"https://{HOST}:{ng.port}/files/cut/", HOST], check=False, capture_output=True, text=True,
                       timeout=int(os.environ.get("KEYPIN_OTA_TIMEOUT", "300")), env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"ota power cuts: {r['total']} cut points: {r['cuts']}")
    assert r["bad"] == [], r["bad"][:20]
    assert r["notnew"] == [], r["notnew"][:20]
    assert all(n >= 1 for n in r["cuts"].values()), r["cuts"]
    assert r["total"] >= 40, r


def dev_ota(pki, image, tmp_path, servers, *args):
    ng, _ = servers
    work = tmp_path / "work"
    work.mkdir()
    d = device(pki, image, tmp_path, servers)
    shutil.move(str(d), str(work / "factory"))
    env = dict(os.environ, MICROPYPATH=f".frozen:{SRC}/lib:{ROOT}/build/natmod/x64:{STANDINS}")
    p = subprocess.run([UPY, str(ROOT / "tests/integration/dev_ota.py"), str(work), str(ng.root), *args],
                       check=False, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_full_flash_refused_before_writing_and_enospc_cleaned_up(pki, image, tmp_path, servers):
    ng, _ = servers
    release(pki, image, 1, ng.root / "full")
    r = dev_ota(pki, image, tmp_path, servers, f"https://{HOST}:{ng.port}/files/full/", HOST, "full")
    pre, nospc = r["precheck"], r["enospc"]
    assert pre["result"] == "refused" and pre["reason"].startswith("not enough free flash: need "), pre
    assert nospc["result"] == "refused" and "download failed: OSError: 28" in nospc["reason"], nospc
    for case in (pre, nospc):
        assert not case["changed"] and case["slots"] == [] and case["version"] == 0 and case["bad"] == [], case


# ------------------------------------------------------------------------------ refusals

STATE_FILES = ("keypin-ota.json", "keypin-state.json", "keypin-reports.json")


def software(d):
    """What decides which software runs: every file but the ones the device writes about itself."""
    return {k: v for k, v in tree(d).items() if k not in STATE_FILES}


def sign_raw(key, manifest):
    line = json.dumps(manifest, separators=(",", ":")).encode()
    return line + b"\ned25519:" + base64.b64encode(key.sign(line)) + b"\n"


def publish_raw(pub, key, manifest, version_text=None):
    """A release the CLI refuses to make, signed with `key`, published like the CLI does."""
    (pub / "release.json").write_bytes(sign_raw(key, manifest))
    (pub / "release.version").write_text(f"{version_text or manifest['version']}\n")


def good_manifest(pub):
    return json.loads((pub / "release.json").read_bytes().split(b"\n")[0])


def _bad_sig(pki, image, pub, tmp):
    release(pki, image, 1, pub, key="evil")


def _wrong_hash(pki, image, pub, tmp):
    release(pki, image, 1, pub)
    f = next(f for f in good_manifest(pub)["files"] if f["path"] == "lib/keypin/app.mpy")
    b = pub / "blobs" / f["sha256"]
    b.write_bytes(bytes(x ^ 1 for x in b.read_bytes()))  # same size, other bytes


def _truncated(pki, image, pub, tmp):
    release(pki, image, 1, pub)
    f = next(f for f in good_manifest(pub)["files"] if f["path"] == "lib/keypin/app.mpy")
    b = pub / "blobs" / f["sha256"]
    b.write_bytes(b.read_bytes()[: f["size"] // 2])


def _other_fleet(pki, image, pub, tmp):
    release(pki, image, 1, pub)
    r = subprocess.run([KEYPIN, "release", "--key", str(pki["keyfiles"]["rel"]), "--version", "2", "--fleet",
                        "plant-b", "--image", str(image), "--publish", str(pub)], check=False, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def _other_device(pki, image, pub, tmp):
    release(pki, image, 1, pub, "--device", "dev-2", "--device", "dev-3")


def _min_version(pki, image, pub, tmp):
    release(pki, image, 2, pub, "--min-version", "1")


def _traversal(pki, image, pub, tmp):
    release(pki, image, 1, pub)
    m = good_manifest(pub)
    data = b"attacker's pins"
    (pub / "blobs" / hashlib.sha256(data).hexdigest()).write_bytes(data)
    m["files"].append({"path": "../pins.json", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    m["version"] = 2
    publish_raw(pub, pki["signers"]["rel"], m)


REFUSALS = {  # case: (make the release, the recorded reason, release base under nginx)
    "bad signature": (_bad_sig, "bad signature (not signed by ed25519/", "files"),
    "wrong hash": (_wrong_hash, "lib/keypin/app.mpy: SHA-256 does not match the release", "files"),
    "truncated file": (_truncated, "lib/keypin/app.mpy: Content-Length", "files"),
    "another fleet": (_other_fleet, "not for this device: fleet 'plant-b' (device is in 'plant-a')", "files"),
    "another device": (_other_device, "not for this device: device 'dev-1' is not in the release's devices",
                       "files"),
    "min version": (_min_version, "version 2 updates only from version 1 or later (device has 0)", "files"),
    "path outside the slot": (_traversal, "malformed: bad file path '../pins.json'", "files"),
    "no Content-Length": (lambda pki, image, pub, tmp: release(pki, image, 1, pub), "boot.py: Content-Length None", "chunked"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_with_its_reason_and_nothing_changed(pki, image, tmp_path, servers, case):
    ng, mq = servers
    make, want, loc = REFUSALS[case]
    name = "refuse-" + case.replace(" ", "-")
    pub = ng.root / name
    make(pki, image, pub, tmp_path)
    d = device(pki, image, tmp_path, servers, rel=name)
    if loc == "chunked":
        cfg = json.loads((d / "config.json").read_text())
        cfg["release"]["url"] = f"https://{HOST}:{ng.port}/chunked/{name}/"
        (d / "config.json").write_text(json.dumps(cfg))
    before = software(d)
    mq.publish(f"keypin/{DEV}/status", b"", retain=True)  # no retained status of an earlier test
    sub = mq.subscriber(f"keypin/{DEV}/status", count=2, timeout=60)
    s, out = power_on(d)
    assert s == 0, out  # refused, and the device runs on
    assert "ota: refused release" in out and want in out, out
    assert software(d) == before, "the device's software or pins changed"
    st = json.loads((d / "keypin-ota.json").read_text())
    assert st["last"]["ok"] is False and want in st["last"]["reason"], st
    msgs = [json.loads(m) for _, m in sub.result()]
    assert want in msgs[-1]["software"]["last_check"]["reason"], msgs[-1]
    assert msgs[-1]["software"]["version"] == 0 and msgs[-1]["software"]["slot"] == "factory"
    # refused again at the next power-on, with no new flash write for the same reason
    st_bytes = (d / "keypin-ota.json").read_bytes()
    s, out = power_on(d)
    assert s == 0 and want in out and (d / "keypin-ota.json").read_bytes() == st_bytes


def test_older_version_refused_after_an_update(pki, image, tmp_path, servers):
    ng, _ = servers
    pub = ng.root / "older"
    release(pki, image, 2, pub, "--file", f"{marked_main(tmp_path, 2)}=main.py")
    d = device(pki, image, tmp_path, servers, rel="older")
    assert [s for s, _ in boots(d)] == [RESET, 0]
    assert pointer(d)["version"] == 2 and pointer(d)["state"] == "ok"
    # the server now offers the older release 1 (genuinely signed), claiming a newer version
    _, out = release(pki, image, 1, tmp_path / "v1")
    shutil.copytree(tmp_path / "v1/blobs", pub / "blobs", dirs_exist_ok=True)
    shutil.copy(tmp_path / "v1/release.json", pub / "release.json")
    (pub / "release.version").write_text("9\n")
    before = software(d)
    s, out = power_on(d)
    assert s == 0 and "software: release 2" in out, out
    assert "ota: refused release 1: version 1 is not newer than the installed 2" in out, out
    assert software(d) == before


def test_release_whose_main_crashes_rolls_back_after_the_boot_limit(pki, image, tmp_path, servers):
    ng, _ = servers
    pub = ng.root / "crash"
    release(pki, image, 1, pub, "--file", f"{marked_main(tmp_path, 1)}=main.py")
    d = device(pki, image, tmp_path, servers, rel="crash")
    assert [s for s, _ in boots(d)] == [RESET, 0]
    release(pki, image, 2, pub, "--file", f"{marked_main(tmp_path, 2, crash=True)}=main.py")
    pins0 = pin_files(d)
    runs = boots(d)
    status = [s for s, _ in runs]
    # release 1 installs 2 (reset); release 2 crashes on each of its 3 trial boots (reset); then
    # boot.py rolls back to release 1, which refuses release 2 (still served, and newer): a
    # rolled-back version is never installed again, or the device would loop
    assert status[:4] == [RESET, RESET, RESET, RESET], runs
    assert all("release 2 is broken" in o for _, o in runs[1:4]), runs
    assert "boot: release 2 rolled back to slot_a (no pinned self-test passed in 3 boots)" in runs[4][1], runs
    assert status[4] == 0 and "software: release 1" in runs[4][1], runs[4]
    assert "ota: refused release 2: version 2 was rolled back on this device" in runs[4][1], runs[4]
    p = pointer(d)
    assert p["slot"] == "slot_a" and p["version"] == 1 and p["state"] == "ok"
    assert "rolled back" in p["last"]["reason"]
    assert pin_files(d) == pins0


def test_mitm_on_the_update_server_gets_zero_bytes(pki, image, tmp_path, servers):
    crt, key = pki["files"]["mitm"]  # a CA-valid certificate for the right name, the attacker's key
    with TLSServer(str(crt), str(key)) as mitm:
        d = device(pki, image, tmp_path, servers)
        cfg = json.loads((d / "config.json").read_text())
        cfg["release"]["url"] = f"https://{HOST}:{mitm.port}/files/good/"
        (d / "config.json").write_text(json.dumps(cfg))
        before = software(d)
        s, out = power_on(d)
    assert s == 0, out
    assert "release check failed: PinMismatch" in out, out
    assert mitm.accepted >= 1 and mitm.handshakes == 0 and mitm.received == b"", (mitm.handshakes, mitm.received)
    assert software(d) == before


def test_release_failing_its_pinned_selftest_rolls_back(pki, image, tmp_path, servers):
    # the new software boots, but a server it must reach does not prove its pinned key (here the
    # check-in is intercepted by a MITM while the release is on trial): no commit, and after the
    # boot limit the device goes back to the factory software by itself
    ng, _ = servers
    pub = ng.root / "selftest"
    release(pki, image, 1, pub, "--file", f"{marked_main(tmp_path, 1)}=main.py")
    d = device(pki, image, tmp_path, servers, rel="selftest")
    s, out = power_on(d)
    assert s == RESET and "ota: release 1 installed in slot_a" in out, out
    crt, key = pki["files"]["mitm"]
    with TLSServer(str(crt), str(key)) as mitm:
        cfg = json.loads((d / "config.json").read_text())
        cfg["https"]["url"] = f"https://{HOST}:{mitm.port}/checkin"
        (d / "config.json").write_text(json.dumps(cfg))
        runs = boots(d, 5)
    assert [s for s, _ in runs] == [RESET, RESET, RESET, 0], runs
    for _, o in runs[:3]:
        assert "software: release 1" in o and "https check-in failed: PinMismatch" in o, o
        assert "failed its pinned self-test" in o and "committed" not in o, o
    assert "boot: release 1 rolled back to factory (no pinned self-test passed in 3 boots)" in runs[3][1]
    assert "software: release" not in runs[3][1] and mitm.received == b""
    p = pointer(d)
    assert p["slot"] == "" and p["version"] == 0 and p["bad"] == [1, 1]


def test_firmware_image_written_booted_and_marked_valid_only_after_the_selftest(pki, image, tmp_path, servers):
    ng, _ = servers
    pub = ng.root / "fw"
    fw = tmp_path / "micropython.app-bin"
    fw.write_bytes(b"\xe9" + os.urandom(20000))  # an app image starts with ESP-IDF's magic byte
    release(pki, image, 1, pub, "--file", f"{marked_main(tmp_path, 1)}=main.py", "--firmware", fw)
    d = device(pki, image, tmp_path, servers, rel="fw")

    def otadata():
        return json.loads((d / "esp32-flash/otadata.json").read_text())

    s, out = power_on(d)
    assert s == RESET and "ota: release 1 installed in slot_a" in out, out
    assert otadata()["boot"] == "ota_1" and otadata()["state"]["ota_1"] == "new"
    assert (d / "esp32-flash/ota_1.bin").read_bytes()[:fw.stat().st_size] == fw.read_bytes()
    assert pointer(d)["fw"] == "ota_1" and pointer(d)["state"] == "trial"
    s, out = power_on(d)
    assert s == 0 and "software: release 1" in out and "ota: release 1 committed" in out, out
    st = otadata()
    assert st["running"] == "ota_1" and st["state"]["ota_1"] == "valid", st  # marked after the self-test
    assert pointer(d)["state"] == "ok"
    s, out = power_on(d)  # and it stays: the bootloader boots the valid image
    assert s == 0 and otadata()["running"] == "ota_1" and "software: release 1" in out


def test_firmware_release_failing_its_selftest_goes_back_to_the_old_firmware(pki, image, tmp_path, servers):
    ng, _ = servers
    pub = ng.root / "fw-bad"
    fw = tmp_path / "micropython.app-bin"
    fw.write_bytes(b"\xe9" + os.urandom(9000))
    release(pki, image, 1, pub, "--file", f"{marked_main(tmp_path, 1, crash=True)}=main.py", "--firmware", fw)
    d = device(pki, image, tmp_path, servers, rel="fw-bad")
    runs = boots(d, 6)
    # install (reset); the new firmware + software crash on their trial boot (reset); the bootloader
    # rolls the firmware back, boot.py the slot (one strike: a reset of a firmware trial may have
    # been a power cut), the factory software installs it once more (reset), it crashes again
    # (reset), second strike: old firmware, factory software, the release refused from now on
    assert [s for s, _ in runs] == [RESET, RESET, RESET, RESET, 0], "\n".join(o for _, o in runs)
    assert "release 1 is broken" in runs[1][1] and "release 1 is broken" in runs[3][1]
    for o in (runs[2][1], runs[4][1]):
        assert "rolled back to factory (firmware ota_1 did not boot)" in o, o
    assert "ota: refused release 1: version 1 was rolled back on this device" in runs[4][1], runs[4][1]
    st = json.loads((d / "esp32-flash/otadata.json").read_text())
    assert st["running"] == "ota_0" and st["state"]["ota_1"] == "aborted", st
    p = pointer(d)
    assert p["slot"] == "" and p["version"] == 0 and p["bad"] == [1, 1]


def test_release_signer_rotates_with_next_signer(pki, image, tmp_path, servers):
    # release 1 (signed by the provisioned key) names the next signer; from then on only that key
    # signs: the old key's release 2 is refused, the new key's is installed; the pins never move
    ng, _ = servers
    pub = ng.root / "rotate"
    release(pki, image, 1, pub, "--next-signer", pki["keyfiles"]["next"])
    d = device(pki, image, tmp_path, servers, rel="rotate")
    pins0 = pin_files(d)
    assert [s for s, _ in boots(d)] == [RESET, 0]
    assert json.loads((d / "slot_a/release.json").read_bytes().split(b"\n")[0])["signer"] == \
        signer_of(pki["signers"]["next"])
    release(pki, image, 2, pub)  # the old key again
    s, out = power_on(d)
    assert s == 0 and "ota: refused release 2: bad signature (not signed by " + signer_of(pki["signers"]["next"]) in out
    release(pki, image, 3, pub, key="next")
    runs = boots(d)
    assert [s for s, _ in runs] == [RESET, 0] and "ota: release 3 committed in slot_b" in runs[1][1], runs
    assert pointer(d)["version"] == 3 and pin_files(d) == pins0
