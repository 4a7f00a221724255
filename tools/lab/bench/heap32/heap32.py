"""The 32-bit heap stage of `make bench`: keypin's heap in MicroPython's WebAssembly port.

The WebAssembly port (npm @micropython/micropython-webassembly-pyscript, version pinned in
tools/deps.sh, run by Node.js) is a 32-bit MicroPython: 4-byte words and an ESP32's object
layout, so its heap figures stand in for an ESP32's (the Unix port's are about twice as large).
It has no socket or tls module: heap32_dev.py stubs both (a fake tls.SSLContext that calls the
verify callback with real certificates, a fake broker and web server behind the stream), so
keypin's real code runs: the verify callback, the pin decision, MQTT and HTTP framing, the store.

The device files are the lib/keypin/*.mpy of `keypin image --arch xtensawin` (bytecode, loadable
anywhere) and umqtt.simple as make deps precompiles it; the wasm port loads no native code, so the
SPKI module there is the Python reference (on a board the viper module: see ``spki_note``).
Each figure is KiB after gc.collect(), measured in a fresh VM above its baseline (the VM with the
stubs and the frozen binascii loaded):

  heap32_umqtt_kib        umqtt.simple alone
  heap32_core_kib         import keypin, one pinned connection made and closed (keypin.tls,
                          the SPKI path), a store with two sets, that set's context objects
  heap32_mqtt_kib         keypin.mqtt's own cost on top of core (and of umqtt): a connected client
  heap32_https_kib        keypin.https's own cost on top of core, after a request
  heap32_app_steady_kib   what main.py keeps resident between cycles (mqtt + https + update check; the
                          first check applies a signed update; "app0" in build/heap32.json: none announced)
  heap32_update_peak_kib  the largest live heap at the steps of verifying and applying a signed
                          update (core loaded): received, parsed, signature verified, checked, applied
  heap32_aio_kib          keypin.aio imported on top of core (when lib/keypin/aio.py exists; this port has
                          no asyncio, a stand-in module takes its place: asyncio itself is not counted)

Usage: heap32.py [--json]   (bench.py calls run(work_dir, rows) -> dict; steps in build/heap32.json)

This port collects garbage only when control is back at the top level (a gc.collect() inside a
call only asks for one, the heap grows instead): runner.mjs runs each step of a case in a call of
its own and reads the live heap in the next, so every figure is the live heap at a step boundary.
The update peak is the largest such boundary (received, parsed, signature verified, checked,
applied); what a step allocates and drops inside itself is reported beside it, not in the peak.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[4]
HERE = pathlib.Path(__file__).resolve().parent
WASM_PKG = "@micropython/micropython-webassembly-pyscript"
WASM_MODULE = ROOT / "build" / "wasm" / "node_modules" / WASM_PKG / "micropython.mjs"
KEYPIN = ROOT / ".venv" / "bin" / "keypin"
MQTT_HOST, API_HOST = "mqtt.bench.test", "api.bench.test"
CASES = ("umqtt", "core", "mqtt", "https", "app", "update") + (("aio",) if (ROOT / "lib/keypin/aio.py").is_file() else ())
NAMES = {"app": "heap32_app_steady_kib", "update": "heap32_update_peak_kib"}
# bench.json keys (the x64 side-by-side cycle figures come from bench.py's heap_bisect and cycle.py)
KEYS = ["device_cycle_heap_over_unpinned", "device_cycle_unpinned_min_heap_kib"] + [
    NAMES.get(c, f"heap32_{c}_kib") for c in CASES]
TARGETS = {"device_cycle_heap_over_unpinned": ("<=", 1.3), "heap32_core_kib": ("<=", 6),
           "heap32_mqtt_kib": ("<=", 2), "heap32_https_kib": ("<=", 3), "heap32_app_steady_kib": ("<=", 16),
           "heap32_update_peak_kib": ("<=", 24)}


def _kp(*args, cwd):
    p = subprocess.run([str(KEYPIN), *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)
    if p.returncode:
        raise RuntimeError(f"keypin {' '.join(map(str, args))}: {p.stderr.strip()}")
    return p.stdout


def _leaf(d: pathlib.Path, host: str, stem: str):
    """A leaf for host under an intermediate -> (its key pin, a backup pin, [leaf DER, intermediate DER])."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.pki import new_key, pin
    from helpers.vectors import der, make_cert, name
    ik = new_key()
    inter = make_cert(ik, name(f"Heap32 {stem} Intermediate"), ca=True)
    lk = new_key()
    leaf = make_cert(lk, name(host), ik, inter.subject, hosts=[host], days=90)
    return pin(lk), pin(new_key()), [der(leaf), der(inter)]


def prepare(work: pathlib.Path) -> pathlib.Path:
    """The device filesystem the wasm VM gets: lib/, pins.json (two sets), config.json, chains, update."""
    files = work / "files"
    img = work / "image"
    _kp("image", "--out", img, "--arch", "xtensawin", "--force", cwd=work)
    shutil.copytree(img / "lib" / "keypin", files / "lib" / "keypin")  # bytecode only: no native module
    umqtt = ROOT / "build" / "umqtt-pypi" / "umqtt"
    if not (umqtt / "simple.mpy").is_file():
        raise RuntimeError(f"{umqtt}/simple.mpy missing: run make deps")
    shutil.copytree(umqtt, files / "lib" / "umqtt")
    shutil.copyfile(ROOT / "main.py", files / "main.py")
    shutil.copyfile(ROOT / "boot.py", files / "boot.py")
    chains = {}
    doc = work / "pins.json"
    _kp("signer", "keygen", "--out", work / "signer.key", cwd=work)
    for host, stem, extra in ((MQTT_HOST, "mq", ["--fleet", "bench"]), (API_HOST, "api", [])):
        active, backup, chain = _leaf(work, host, stem)
        _kp("pinset", "new", "--file", doc, "--name", stem, "--host", host, "--active", active, "--backup", backup,
            *extra, cwd=work)
        for i, d in enumerate(chain):
            (files / f"{stem}-{i}.der").write_bytes(d)
        chains[host] = [f"{stem}-{i}.der" for i in range(len(chain))]
    _kp("pinset", "set-signer", "--file", doc, "--key", work / "signer.key", cwd=work)
    shutil.copyfile(doc, files / "pins.json")  # what the device holds; sign records the version in doc
    _kp("pinset", "sign", "--file", doc, "--key", work / "signer.key", "--version", "2", "--out",
        files / "update.txt", cwd=work)
    cfg = {"device_id": "heap32", "period": 1, "pins": "pins.json",
           "mqtt": {"host": MQTT_HOST, "port": 8883, "user": "dev", "password": "secret", "tries": 1},
           "https": {"url": f"https://{API_HOST}/checkin", "interval": 300},
           "update": {"url": f"https://{API_HOST}/files/update.txt"}}
    (files / "config.json").write_text(json.dumps(cfg))
    (files / "heap32.json").write_text(json.dumps({"chains": chains, "mqtt_host": MQTT_HOST,
                                                   "api_host": API_HOST}))
    return files


def node_case(files: pathlib.Path, case: str, script: pathlib.Path = HERE / "heap32_dev.py") -> dict:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found: apt-get install nodejs npm (make deps does)")
    if not WASM_MODULE.is_file():
        raise RuntimeError(f"{WASM_MODULE} missing: run make deps (it installs {WASM_PKG} with npm)")
    p = subprocess.run([node, str(HERE / "runner.mjs"), str(WASM_MODULE), str(files), str(script), case],
                       capture_output=True, text=True, check=False, timeout=600)
    got = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("HEAP32 ")]
    if p.returncode or not got:
        raise RuntimeError(f"heap32 case {case} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return got[-1]


def run(work: pathlib.Path | None = None, rows: list | None = None) -> dict:
    """-> {heap32_*_kib: value}; the steps of every case go to build/heap32.json (and to rows)."""
    own = work is None
    work = pathlib.Path(tempfile.mkdtemp(prefix="keypin-heap32-")) if own else work / "heap32"
    try:
        work.mkdir(parents=True, exist_ok=True)
        files = prepare(work)
        detail = {c: node_case(files, c) for c in CASES + ("app0", "modules")}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "heap32.json").write_text(json.dumps(detail, indent=1) + "\n")
    for c, d in detail.items():
        if rows is not None and c != "modules":
            rows.append((f"heap32 {c} (WebAssembly port, KiB live after each step | allocated in it)",
                         "; ".join(f"{lab} {live} | {alloc}" for lab, live, alloc in d["steps"])))
    if rows is not None:  # each module alone, imported in this order (each step: what it adds)
        prev, parts = 0.0, []
        for lab, live, _ in detail["modules"]["steps"]:
            parts.append(f"{lab.removeprefix('keypin.')} {live - prev:.2f}")
            prev = live
        rows.append(("heap32 modules (KiB each adds, in this order)", ", ".join(parts)))
    return {NAMES.get(c, f"heap32_{c}_kib"): detail[c]["kib"] for c in CASES}


if __name__ == "__main__":
    got_rows: list = []
    res = run(rows=got_rows)
    if "--json" in sys.argv:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            t = TARGETS.get(k)
            print(f"{k:26} {v:>8}  {'' if t is None else 'target ' + t[0] + str(t[1])}")
        for a, b in got_rows:
            print(f"- {a}: {b}")

