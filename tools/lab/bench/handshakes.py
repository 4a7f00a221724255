"""The handshake stage of `make bench`: today's Let's Encrypt chains and the lean device listener.

One real nginx (TLS 1.2 only, as the official ESP32 builds) serves, each on its own port:
the Generation Y ECDSA default chain (leaf P-256 <- YE1 P-384 <- Root YE by X2 <- X2 by X1, four
certificates), the same leaf alone with the same key (the lean device listener), and the RSA
chain (leaf RSA-2048 <- YR1 <- Root YR by X1) with its own lean listener. tests/helpers/geny.py
makes the look-alike chains. The device side (handshakes_dev.py, Unix port) times full
handshakes, every case once per round with the order rotated each round; medians.

Figures (ratios of medians):
  handshake_geny_pinned_over_unpinned   full Gen Y chain: keypin pin-only ÷ CERT_NONE
  handshake_pinned_over_ca_verified     full Gen Y chain: keypin pin-only ÷ CERT_REQUIRED with
                                        the root (ISRG Root X1 look-alike) as cadata
  handshake_lean_pinned_over_unpinned   lean listener: keypin pin-only ÷ CERT_NONE
  certificate_message_bytes             TLS 1.2 Certificate message per listener, read from
                                        the listener by keypin check's own probe
"""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
for _p in (ROOT / "tests", ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from helpers.geny import GenY, LeanNginx, der, make_x1
from helpers.pki import new_key, pin, pin_document
from keypin_cli.decide import listener
from keypin_cli.tlsprobe import fetch_chain

UPY = str(ROOT / "tools" / "upy")
DEV = str(ROOT / "tools" / "lab" / "bench" / "handshakes_dev.py")
HOST, RSA_HOST = "device.example.test", "rsa.example.test"
# handshake_geny_pinned_over_unpinned has no target: it is the cost the lean listener removes
TARGETS = {"handshake_pinned_over_ca_verified": ("<=", 1.0),
           "handshake_lean_pinned_over_unpinned": ("<=", 1.02)}
KEYS = ["handshake_geny_pinned_over_unpinned", "handshake_pinned_over_ca_verified",
        "handshake_lean_pinned_over_unpinned", "certificate_message_bytes",
        "handshake_lean_pinned_over_ca_verified"]  # the last: the device on its lean listener vs CA-verified


def _store(d, chains):
    sets = {f"{c.kind}": {"hosts": [c.host], "active": pin(c.key), "backups": [pin(new_key())], "retired": [],
                          "policy": "leaf"} for c in chains}
    p = d / "hs-pins.json"
    p.write_bytes(pin_document(sets))
    return p


def plan(d, ng, e, r):
    """The cases the device runs: name -> (listener port, host, mode)."""
    anchor = d / "x1.der"
    anchor.write_bytes(der(e.anchor))
    lean, rsa, rsa_lean = ng.ports["lean"], ng.ports["rsa"], ng.ports["rsa-lean"]
    cases = [("geny_plain", ng.port, HOST, "plain"), ("geny_pinned", ng.port, HOST, "pinned"),
             ("geny_ca", ng.port, HOST, "ca"), ("lean_plain", lean, HOST, "plain"),
             ("lean_pinned", lean, HOST, "pinned"), ("rsa_plain", rsa, RSA_HOST, "plain"),
             ("rsa_pinned", rsa, RSA_HOST, "pinned"), ("rsa_ca", rsa, RSA_HOST, "ca"),
             ("rsa_lean_plain", rsa_lean, RSA_HOST, "plain"), ("rsa_lean_pinned", rsa_lean, RSA_HOST, "pinned")]
    return {"store": str(_store(d, [e, r])),
            "cases": [{"name": n, "port": p, "host": h, "mode": m, "cadata": str(anchor)} for n, p, h, m in cases]}


def device(plan_path, n):
    p = subprocess.run([UPY, DEV, str(plan_path), str(n)], check=False, capture_output=True, text=True, timeout=900)
    if p.returncode:
        raise RuntimeError(f"handshakes_dev.py failed:\n{p.stdout}\n{p.stderr}")
    out = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")][-1]["cases"]
    bad = {k: v["verdict"] for k, v in out.items() if v["verdict"] not in ("active", "ok")}
    if bad:
        raise RuntimeError(f"handshakes_dev.py: unexpected verdicts {bad}")
    return out


def message_bytes(ng):
    """TLS 1.2 Certificate message size of each listener, from what it presents."""
    ports = {"geny_ecdsa_full": ng.port, "geny_ecdsa_lean": ng.ports["lean"], "geny_rsa_full": ng.ports["rsa"],
             "geny_rsa_lean": ng.ports["rsa-lean"]}
    out, kinds = {}, {}
    for k, port in ports.items():
        ch = fetch_chain("127.0.0.1", port, HOST if "ecdsa" in k else RSA_HOST, timeout=5)
        if not ch.complete:
            raise RuntimeError("this Python cannot read the presented chain")
        lst = listener(ch.certs)
        out[k], kinds[k] = lst.message_bytes, lst
    return out, kinds


def run(work, servers, rows, n=100):
    """Build the chains, start nginx, time the handshakes; returns the figures (KEYS + extras)."""
    d = pathlib.Path(work) / "handshakes"
    d.mkdir(parents=True, exist_ok=True)
    x1 = make_x1()
    e = GenY.build("ecdsa", d, HOST, x1=x1)
    r = GenY.build("rsa", d, RSA_HOST, x1=x1)
    ng = LeanNginx(d / "nginx", e, listeners={"rsa": (r.files["fullchain"], r.files["privkey"]),
                                              "rsa-lean": (r.files["leaf"], r.files["privkey"])},
                   protocols=("TLSv1.2",))
    servers.append(ng)
    try:
        sizes, kinds = message_bytes(ng)
        pp = d / "plan.json"
        pp.write_text(json.dumps(plan(d, ng, e, r)))
        t = device(pp, n)
    finally:
        ng.stop()
    us = {k: v["us"] for k, v in t.items()}
    res = {"handshake_geny_pinned_over_unpinned": round(us["geny_pinned"] / us["geny_plain"], 4),
           "handshake_pinned_over_ca_verified": round(us["geny_pinned"] / us["geny_ca"], 4),
           "handshake_lean_pinned_over_unpinned": round(us["lean_pinned"] / us["lean_plain"], 4),
           "certificate_message_bytes": sizes,
           # not targets
           "handshake_lean_pinned_over_ca_verified": round(us["lean_pinned"] / us["geny_ca"], 4),
           "handshake_lean_pinned_over_geny_pinned": round(us["lean_pinned"] / us["geny_pinned"], 4),
           "handshake_rsa_pinned_over_unpinned": round(us["rsa_pinned"] / us["rsa_plain"], 4),
           "handshake_rsa_pinned_over_ca_verified": round(us["rsa_pinned"] / us["rsa_ca"], 4),
           "handshake_rsa_lean_pinned_over_unpinned": round(us["rsa_lean_pinned"] / us["rsa_lean_plain"], 4),
           "handshake_ms": {k: round(v / 1000, 3) for k, v in us.items()}}
    m = res["handshake_ms"]
    full = (f"pinned {m['geny_pinned']:.2f} ms, CERT_NONE {m['geny_plain']:.2f} ms, CA-verified (X1 as cadata) "
            f"{m['geny_ca']:.2f} ms (n={n} each, interleaved); {kinds['geny_ecdsa_full'].text()}")
    lean = (f"pinned {m['lean_pinned']:.2f} ms, CERT_NONE {m['lean_plain']:.2f} ms; "
            f"{kinds['geny_ecdsa_lean'].text()}")
    rsa = (f"pinned {m['rsa_pinned']:.2f} ms, CERT_NONE {m['rsa_plain']:.2f} ms, CA-verified {m['rsa_ca']:.2f} ms, "
           f"lean pinned {m['rsa_lean_pinned']:.2f} ms, lean CERT_NONE {m['rsa_lean_plain']:.2f} ms")
    rows.append(("handshake, Gen Y ECDSA full chain (4 certificates, TLS 1.2)", full))
    rows.append(("handshake, lean listener (the same leaf alone)", lean))
    rows.append(("handshake, Gen Y RSA chain (leaf RSA-2048 <- YR1 <- Root YR by X1)", rsa))
    return res


if __name__ == "__main__":  # the stage alone: python tools/lab/bench/handshakes.py [N]
    import shutil
    import tempfile
    w = pathlib.Path(tempfile.mkdtemp(prefix="keypin-hs-"))
    srv: list = []
    rw: list = []
    try:
        print(json.dumps(run(w, srv, rw, int(sys.argv[1]) if len(sys.argv) > 1 else 100), indent=2))
        for a, b in rw:
            print(f"- {a}: {b}")
    finally:
        for s in srv:
            s.stop()
        shutil.rmtree(w, ignore_errors=True)
