"""`make bench`: speed, memory and flash budgets of keypin, measured side by side.

Device figures come from the MicroPython Unix port (tools/upy), each comparison interleaved in
one process; servers are real (nginx, mosquitto) on loopback. Prints a table and writes
build/bench.json. Never run by `make test`.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from handshakes import KEYS as HS_KEYS  # issue 13 (H5): Gen Y chains, lean listener
from handshakes import TARGETS as HS_TARGETS
from handshakes import run as handshakes_run
from heap32.cycle import bisect, unpinned_min_heap  # issue 13 (H4): 32-bit heap, heap over unpinned
from heap32.heap32 import KEYS as HEAP32_KEYS
from heap32.heap32 import TARGETS as HEAP32_TARGETS
from heap32.heap32 import run as heap32_run
from helpers.pki import cert_pem, key_pem, new_key, pin, pin_document
from helpers.realservers import Mosquitto, Nginx
from helpers.vectors import der, make_cert, name

UPY = str(ROOT / "tools" / "upy")
DEV = str(ROOT / "tools" / "lab" / "bench" / "bench_dev.py")
HOST = "device.example.test"
TARGETS = {"spki_native_over_hash": ("<=", 1.5), "callback_alloc_bytes_per_cert": ("<=", 16),
           "callback_alloc_bytes_per_cert_viper": ("<=", 16),
           "handshake_pinned_over_unpinned": ("<=", 1.03), **HEAP32_TARGETS,
           "flash_writes_per_connect": ("==", 0), "flash_writes_per_rotation": ("==", 2),  # two current copies (issue 12.1)
           "image_bytes": ("<=", 32768), **HS_TARGETS}


def upy(*args, heap=None, cwd=None, env=None, timeout=600):
    e = dict(os.environ, **(env or {}))
    if heap:
        e["KEYPIN_HEAP"] = heap
    p = subprocess.run([UPY, *map(str, args)], check=False, capture_output=True, text=True, cwd=cwd, env=e,
                       timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"upy {args[:2]} failed:\n{p.stdout}\n{p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")][-1]


def chain(d, stem, int_key_kind):
    """leaf (EC P-256) under an intermediate of the given kind, like Let's Encrypt's R/E series."""
    rk = ec.generate_private_key(ec.SECP384R1())
    root = make_cert(rk, name("Bench Root"), ca=True)
    ik = rsa.generate_private_key(65537, 2048) if int_key_kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    inter = make_cert(ik, name(f"Bench {int_key_kind} Intermediate"), rk, root.subject, ca=True)
    lk = new_key()
    leaf = make_cert(lk, name(HOST), ik, inter.subject, hosts=[HOST], days=90)
    crt, key = d / f"{stem}.crt", d / f"{stem}.key"
    crt.write_bytes(cert_pem(leaf) + cert_pem(inter))
    key.write_bytes(key_pem(lk))
    return crt, key, lk, leaf, inter


def store_for(d, k, stem="pins"):
    p = d / f"{stem}.json"
    p.write_bytes(pin_document({"fleet": {"hosts": [HOST], "active": pin(k), "backups": [pin(new_key())],
                                          "retired": [], "policy": "leaf"}}))
    return p


def med(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    res, rows = {}, []
    work = pathlib.Path(tempfile.mkdtemp(prefix="keypin-bench-"))
    servers = []
    try:
        # ---- SPKI: native vs hash floor vs Python reference ----
        crt_r, key_r, lk, leaf, inter = chain(work, "rsa-int", "rsa")
        rk = rsa.generate_private_key(65537, 2048)
        rsa_leaf = make_cert(rk, name(HOST), hosts=[HOST])
        vecs = {"rsa2048_leaf.der": der(rsa_leaf), "ec256_leaf.der": der(leaf), "intermediate.der": der(inter)}
        for n, b in vecs.items():
            (work / n).write_bytes(b)
        sp = upy(DEV, "spki", *[work / n for n in vecs])["spki"]
        res["spki_native_over_hash"] = round(med([r["native_over_hash"] for r in sp]), 3)
        res["spki_python_over_native"] = round(med([r["python_over_native"] for r in sp]), 2)
        for r in sp:
            rows.append((f"spki {r['cert']}", (f"native {r['native_us']:.2f} us, hash {r['hash_us']:.2f} us, "
                                                f"python {r['python_us']:.1f} us")))
        # ---- allocation in the verify callback ----
        al = upy(DEV, "alloc", work / "ec256_leaf.der")
        res["callback_alloc_bytes_per_cert"] = al["alloc_bytes_per_cert"]
        rows.append(("callback allocation", f"{al['alloc_bytes_per_cert']} bytes/cert over {al['calls']} calls"))
        # the same with only the viper module (what the board images carry)
        av = upy(DEV, "alloc", work / "ec256_leaf.der", env={"KEYPIN_NATIVE": "viper"})
        assert av["impl"] == "viper", av
        res["callback_alloc_bytes_per_cert_viper"] = av["alloc_bytes_per_cert"]
        rows.append(("callback allocation, viper module", f"{av['alloc_bytes_per_cert']} bytes/cert"))
        # ---- handshakes against nginx ----
        ng = Nginx(work / "ng-rsa", str(crt_r), str(key_r))
        servers.append(ng)
        hs = upy(DEV, "handshake", store_for(work, lk, "hs"), ng.port, 200)
        res["handshake_pinned_over_unpinned"] = round(hs["ratio"], 4)
        rows.append(("handshake, EC leaf + RSA-2048 intermediate (Let's Encrypt R-series)",
                     (f"pinned {hs['pinned_us'] / 1000:.2f} ms, CERT_NONE {hs['plain_us'] / 1000:.2f} ms, "
                      f"ratio {hs['ratio']:.3f} (n={hs['n']} each)")))
        ng.stop()
        crt_e, key_e, lk_e, _, _ = chain(work, "ec-int", "ec")
        ng = Nginx(work / "ng-ec", str(crt_e), str(key_e))
        servers.append(ng)
        hs2 = upy(DEV, "handshake", store_for(work, lk_e, "hs2"), ng.port, 200)
        rows.append(("handshake, EC leaf + P-384 intermediate (E-series), not a target",
                     (f"pinned {hs2['pinned_us'] / 1000:.2f} ms, CERT_NONE {hs2['plain_us'] / 1000:.2f} ms, "
                      f"ratio {hs2['ratio']:.3f}: mbedTLS checks the chain signature in CERT_OPTIONAL")))
        res["handshake_pinned_over_unpinned_ec_intermediate"] = round(hs2["ratio"], 4)
        # ---- Let's Encrypt Gen Y chains and the lean device listener (handshakes.py) ----
        res.update(handshakes_run(work, servers, rows))
        # ---- flash writes ----
        wr = upy(DEV, "writes", store_for(work, lk_e, "wr"), ng.port)
        res["flash_writes_per_connect"] = wr["writes_per_connect"]
        res["flash_writes_per_rotation"] = wr["writes_per_rotation"]
        rows.append(("flash writes", (f"{wr['writes_per_connect']} per connect (20 HTTPS requests), "
                                      f"{wr['writes_per_rotation']} per rotation")))
        ng.stop()
        # ---- smallest heap for one device cycle ----
        res["device_cycle_min_heap_kib"], un = heap_bisect(work, crt_r, key_r, lk, servers, rows)
        res["device_cycle_unpinned_min_heap_kib"] = un
        res["device_cycle_heap_over_unpinned"] = round(res["device_cycle_min_heap_kib"] / un, 3)
        # ---- the 32-bit heap (MicroPython's WebAssembly port under Node.js) ----
        res.update(heap32_run(work, rows))
        # ---- image size ----
        img = work / "image-xtensawin"
        subprocess.run([str(ROOT / ".venv/bin/keypin"), "image", "--out", str(img), "--arch", "xtensawin"],
                       check=True, capture_output=True)
        lib = img / "lib"
        size = sum(f.stat().st_size for f in lib.rglob("*") if f.is_file() and "umqtt" not in f.parts)
        res["image_bytes"] = size
        mod = "C" if (lib / "keypin_spki.mpy").exists() else "viper" if (lib / "keypin_spkiv.mpy").exists() else None
        rows.append(("image (xtensawin) lib/", f"{size} bytes in {sum(1 for f in lib.rglob('*.mpy'))} .mpy files"
                     + (f", SPKI {mod} module included" if mod else " (no SPKI module: the Python reference)")))
        # ---- ed25519 ----
        if (ROOT / "lib/keypin/ed25519.py").exists():
            res["ed25519_verify_ms_unix"] = ed25519_ms(work, rows)
        # ---- host CLI vs openssl pipeline ----
        cli_vs_openssl(work, rows, res)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    keys = ["spki_native_over_hash", "spki_python_over_native", "callback_alloc_bytes_per_cert",
            "handshake_pinned_over_unpinned", "device_cycle_min_heap_kib", "flash_writes_per_connect",
            "flash_writes_per_rotation", "image_bytes"]
    if "ed25519_verify_ms_unix" in res:
        keys.append("ed25519_verify_ms_unix")
    keys += HS_KEYS + ["callback_alloc_bytes_per_cert_viper"] + HEAP32_KEYS
    out = {k: res[k] for k in keys}
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"keypin bench on {os.uname().machine}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print()
    print(f"| {'figure':32} | {'value':>10} | {'target':>8} | ok |")
    print(f"|{'-' * 34}|{'-' * 12}|{'-' * 10}|----|")
    missed = 0
    for k in keys:
        if isinstance(out[k], dict):  # certificate_message_bytes: in the list below
            rows.append((k, ", ".join(f"{a} {b:,}" for a, b in out[k].items())))
            continue
        t = TARGETS.get(k)
        ok = ""
        if t:
            op, lim = t
            good = out[k] <= lim if op == "<=" else out[k] == lim
            ok = "yes" if good else "NO"
            missed += not good
        print(f"| {k:32} | {out[k]:>10} | {(t[0] + str(t[1])) if t else '':>8} | {ok:2} |")
    for extra in ("cli_pin_1000_s", "openssl_pipeline_1000_s", "handshake_pinned_over_unpinned_ec_intermediate"):
        if extra in res:
            print(f"| {extra:32} | {res[extra]:>10} | {'':>8} |    |")
    print()
    for a, b in rows:
        print(f"- {a}: {b}")
    print("\nwrote build/bench.json")
    print(f"chart: {chart(ROOT / 'build' / 'bench.json', ROOT / 'build' / 'bench.png')}")
    return 0


def chart(src, dst):
    """The ratio figures of bench.json (keys with _over_) as bars, each with its target if it has one."""
    sys.path.insert(0, str(ROOT / "tools" / "lab"))
    import charts
    res = json.loads(pathlib.Path(src).read_text())
    names = [k for k, v in res.items() if "_over_" in k and isinstance(v, (int, float))]
    fig, ax = charts.new("keypin bench: cost ratios (1 = no overhead)", "ratio (times, log scale)", "figure")
    ax.barh(names, [res[k] for k in names], left=0.01, color="tab:blue", label="measured")
    lims = [(i, TARGETS[k][1]) for i, k in enumerate(names) if TARGETS.get(k, ("",))[0] == "<="]
    ax.scatter([v for _, v in lims], [i for i, _ in lims], marker="|", s=400, color="tab:red", label="target (at most)")
    ax.axvline(1.0, color="grey", linestyle=":", label="1 (equal cost)")
    charts.log_x(ax, [res[k] for k in names])
    return charts.save(fig, dst)


def heap_bisect(work, crt, key, lk, servers, rows):
    ng = Nginx(work / "ng-heap", str(crt), str(key))
    mq = Mosquitto(work / "mq-heap", str(crt), str(key), users={"dev": "secret"})
    servers += [ng, mq]
    src = work / "heap-src"
    src.mkdir()
    (src / "pins.json").write_bytes(store_for(work, lk, "heap").read_bytes())
    cfg = {"device_id": "bench", "mqtt": {"host": HOST, "port": mq.port, "user": "dev", "password": "secret",
                                          "tries": 1},
           "https": {"url": f"https://{HOST}:{ng.port}/checkin", "interval": 300},
           "update": {"url": f"https://{HOST}:{ng.port}/files/pins-update.txt"},
           "hosts": {HOST: "127.0.0.1"}, "pins": "pins.json"}
    (ng.root / "pins-update.txt.version").write_text("0\n")  # the version check finds nothing newer
    (src / "config.json").write_text(json.dumps(cfg))
    img = work / "image-x64"
    subprocess.run([str(ROOT / ".venv/bin/keypin"), "image", "--out", str(img), "--arch", "x64",
                    "--config", str(src / "config.json"), "--pins", str(src / "pins.json")],
                   check=True, capture_output=True)

    def passes(kib):
        d = work / f"dev-{kib}"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(img, d)
        env = dict(os.environ, MICROPYPATH=f".frozen:{d}/lib:{ROOT}/build/umqtt-pypi")
        p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-X", f"heapsize={kib}k", "-c",
                            "import main\nprint('GOOD', main.run(cycles=1))"],
                           cwd=d, env=env, check=False, capture_output=True, text=True, timeout=120)
        return p.returncode == 0 and p.stdout.strip().endswith("GOOD 1") and "failed" not in p.stdout
    hi, lo = bisect(passes)
    rows.append(("device cycle", ("one main.py cycle (HTTPS update version check, MQTTS status, HTTPS "
                                  f"check-in) passes with -X heapsize={hi}k, fails with {lo}k")))
    un, un_lo = unpinned_min_heap(img, work)
    rows.append(("device cycle without keypin", (f"umqtt.simple + bare HTTP/1.1 over a CERT_NONE tls context: "
                                                 f"passes with -X heapsize={un}k, fails with {un_lo}k")))
    ng.stop()
    mq.stop()
    return hi, un


def ed25519_ms(work, rows):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    k = ed25519.Ed25519PrivateKey.generate()
    msg = b"keypin bench " * 40
    from cryptography.hazmat.primitives import serialization
    pk = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (work / "ed.json").write_text(json.dumps([pk.hex(), msg.hex(), k.sign(msg).hex()]))
    r = upy(DEV, "ed25519", 10, work / "ed.json")
    rows.append(("ed25519 verify (Unix port)", f"{r['ed25519_verify_ms']:.1f} ms per verify, median of 10"))
    return round(r["ed25519_verify_ms"], 2)


def cli_vs_openssl(work, rows, res):
    d = work / "certs"
    d.mkdir()
    files = []
    for i in range(1000):
        k = new_key()
        f = d / f"c{i}.pem"
        f.write_bytes(cert_pem(make_cert(k, name(f"h{i}.example.test"))))
        files.append(f)
    t = time.perf_counter()
    p = subprocess.run([str(ROOT / ".venv/bin/keypin"), "pin", *map(str, files)], check=False,
                       capture_output=True, text=True)
    cli = time.perf_counter() - t
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1000, p.stderr
    t = time.perf_counter()
    for f in files:
        subprocess.run(f"openssl x509 -in {f} -pubkey -noout | openssl pkey -pubin -outform DER | "
                       "openssl dgst -sha256 -binary | base64", shell=True, check=True, capture_output=True)
    ossl = time.perf_counter() - t
    res["cli_pin_1000_s"] = round(cli, 2)
    res["openssl_pipeline_1000_s"] = round(ossl, 2)
    rows.append(("host: 1,000 certificates", (f"keypin pin (one process) {cli:.2f} s, openssl pipeline per "
                                              f"certificate {ossl:.2f} s: {ossl / cli:.0f}x")))


if __name__ == "__main__":
    sys.exit(main())
