"""Fleet: N simulated devices, each with its own pin store, against one real mosquitto (TLS).

    .venv/bin/python tools/lab/fleet/fleet.py [N] [--workers 4] [--png build/fleet.png]

Workers are MicroPython Unix-port processes (tools/lab/fleet/fleet_dev.py), each running N/k devices
round-robin (device = own pins.json + own MQTT client id; keypin.mqtt.Client per connection).
Partway through (when --switch-after connections have been made, default 1.5 N) the broker is
restarted with backup 0's key and certificate, and a rogue mosquitto holding the old key starts
(the old key is now retired: a rogue with it must never be accepted). From then on every device
alternates real, rogue, real, rogue, real; it meets the rogue only after a successful real
connection since the switch (in the field, the window between a key compromise and a device's
first contact with the moved server is inherent to pinning and not what this measures).

Reports rotated devices and when, bricked devices (cannot reach the real broker at the end: the
last real step failed, or its store does not hold backup 0 as active), rogue connections accepted
(devices that got a CONNACK from the rogue, and clients the rogue's log shows connected), and the
wall time; draws rotated devices over time to a PNG (matplotlib, tools/lab/charts.py). Last line:
    fleet: N devices, R rotated, B bricked, A rogue-accepted, T s
Exit status 1 unless R == N, B == 0 and A == 0.
"""
import argparse
import json
import pathlib
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools" / "lab"))

import charts
from helpers.pki import CA, new_key, pin, pin_document, read_document
from helpers.realservers import Mosquitto

HOST = "device.example.test"


def _reader(stream, q, w):
    for line in stream:
        q.put((w, time.monotonic(), line))
    q.put((w, time.monotonic(), None))


def chart(path, rotated_at, n, t_switch, wall):
    """Rotated devices over time: a step curve from 0 to n, the switch as a vertical line."""
    fig, ax = charts.new(f"keypin fleet: devices rotated to backup 0 over time (N={n})",
                         "time since start (s)", "devices rotated (count)")
    xs = [0.0] + list(rotated_at) + [max(wall, rotated_at[-1] if rotated_at else 0.0)]
    ys = [0] + list(range(1, len(rotated_at) + 1)) + [len(rotated_at)]
    ax.step(xs, ys, where="post", color="tab:blue", label="rotated devices")
    ax.axhline(n, color="tab:green", linestyle=":", label=f"fleet size ({n})")
    if t_switch is not None:
        ax.axvline(t_switch, color="tab:red", linestyle="--", label=f"switch to the backup key ({t_switch:.0f} s)")
    ax.set_xlim(0, xs[-1] or 1)
    ax.set_ylim(0, n * 1.05 + 0.5)
    ax.yaxis.set_major_locator(charts.MaxNLocator(integer=True))
    return charts.save(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--switch-after", type=int, default=None, help="connections before the switch (1.5 N)")
    ap.add_argument("--max-rounds", type=int, default=60)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--png", default=str(ROOT / "build" / "fleet.png"))
    ap.add_argument("--json", default=str(ROOT / "build" / "fleet.json"))
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    n, k = a.n, max(1, min(a.workers, a.n))
    switch_after = a.switch_after if a.switch_after is not None else n * 3 // 2

    t0 = time.monotonic()
    work = pathlib.Path(tempfile.mkdtemp(prefix="keypin-fleet-"))
    devdir, ctl = work / "devs", work / "ctl"
    devdir.mkdir()
    ctl.mkdir()
    ca = CA("Fleet")
    keys = {x: new_key() for x in ("old", "b0", "b1")}
    files = {x: ca.write_chain(work, x, key, HOST) for x, key in keys.items()}
    pins = {x: pin(key) for x, key in keys.items()}
    doc = pin_document({"fleet": {"hosts": [HOST], "active": pins["old"], "backups": [pins["b0"], pins["b1"]],
                                  "retired": [], "policy": "leaf"}})
    for i in range(n):
        (devdir / f"{i}.json").write_bytes(doc)

    real = rogue = None
    procs = []
    events = []  # (t, worker, record)
    finals = {}
    problems = []
    t_switch = None
    try:
        real = Mosquitto(work, *files["old"], users={"dev": "secret"})
        # the rogue's port is reserved now (it starts at the switch): a free port picked by a stopped broker
        rogue = Mosquitto(work, *files["old"], users={"dev": "secret"})
        rogue.stop()
        rogue_port = rogue.port
        q = queue.Queue()
        for w in range(k):
            p = subprocess.Popen([str(ROOT / "tools/upy"), str(ROOT / "tools/lab/fleet/fleet_dev.py"), str(w), str(k), str(n),
                                  str(devdir), str(real.port), str(rogue_port), str(ctl), str(a.max_rounds)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            threading.Thread(target=_reader, args=(p.stdout, q, w), daemon=True).start()
        print(f"fleet: {n} devices in {k} worker processes, switch after {switch_after} connections, "
              f"broker :{real.port}, rogue :{rogue_port}, work {work}", flush=True)
        open_streams, made, last_report = k, 0, t0
        while open_streams:
            left = a.max_seconds - (time.monotonic() - t0)
            if left <= 0:
                problems.append(f"time budget of {a.max_seconds:.0f} s exhausted")
                break
            try:
                w, t, line = q.get(timeout=min(left, 60))
            except queue.Empty:
                problems.append("no progress for 60 s")
                break
            if line is None:
                open_streams -= 1
                continue
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            if "worker" in rec:
                finals[rec["worker"]] = rec
                continue
            events.append((t - t0, w, rec))
            made += 1
            if t_switch is None and made >= switch_after:
                # the server moves to backup 0; the old key goes to a rogue broker
                real.restart(*files["b0"])
                rogue.restart()
                if rogue.port != rogue_port:
                    problems.append(f"rogue could not get its port {rogue_port} back")
                t_switch = time.monotonic() - t0
                (ctl / "switched").write_text("1")
                print(f"  {t_switch:6.1f} s  switch: broker restarted with backup 0, rogue up with the old key "
                      f"({made} connections so far)", flush=True)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                rot = len({r["d"] for _, _, r in events if r["v"] == "rotated"})
                print(f"  {last_report - t0:6.1f} s  {made} connections, {rot} rotated", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        errs = []
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            errs.append(p.stderr.read() if p.stderr else "")
        rogue_log = rogue.log() if rogue is not None else ""
        for srv in (real, rogue):
            if srv is not None:
                srv.stop()
    wall = time.monotonic() - t0

    for w, p in enumerate(procs):
        if p.returncode:
            problems.append(f"worker {w} exit status {p.returncode}: {errs[w].strip()[-400:]}")
    # per device
    rotated_at = {}
    rogue_tries = rogue_ok = 0
    last_real = {}
    for t, _, r in events:
        if r["v"] == "rotated" and r["d"] not in rotated_at:
            rotated_at[r["d"]] = t
        if r["t"] == "rogue":
            rogue_tries += 1
            if not r["v"].startswith(("PinMismatch", "OSError", "MQTTException", "CertError")):
                rogue_ok += 1
        if r["t"] == "real" and r["s"] == 4:
            last_real[r["d"]] = r["v"]
    rogue_log_clients = rogue_log.count("New client connected")
    rogue_accepted = max(rogue_ok, rogue_log_clients)
    bricked = []
    store_rotated = 0
    for i in range(n):
        try:
            d = read_document(devdir / f"{i}.json")
            s = d["sets"]["fleet"]
            active = s["active"] if isinstance(s["active"], list) else [s["active"]]  # v2: the pins in service
            retired = d.get("retired", []) + s.get("retired", [])  # v2: retired device-wide
            good = active == [pins["b0"]] and pins["old"] in retired
        except (OSError, ValueError, AssertionError, KeyError):
            good = False
        store_rotated += good
        if last_real.get(i) not in ("active", "rotated") or not good:
            bricked.append(i)
    unfinished = sum(len(f["unfinished"]) for f in finals.values())
    if len(finals) < k:
        problems.append(f"{k - len(finals)} workers did not finish")
    rotated = len(rotated_at)
    if t_switch is None:
        problems.append("the switch never happened")
    kinds = {}
    for _, _, r in events:
        key = f"{r['t']}:{r['v']}"
        kinds[key] = kinds.get(key, 0) + 1

    # figures
    print(f"connections: {len(events)} ({', '.join(f'{v} {key}' for key, v in sorted(kinds.items()))})")
    if rotated_at and t_switch is not None:
        ts = sorted(v - t_switch for v in rotated_at.values())
        print(f"rotation after the switch: first {ts[0]:.1f} s, median {ts[len(ts) // 2]:.1f} s, "
              f"90% {ts[int(len(ts) * 0.9) - 1 if len(ts) >= 10 else -1]:.1f} s, last {ts[-1]:.1f} s; "
              f"stores with backup 0 active and the old key retired: {store_rotated}/{n}")
    print(f"rogue: {rogue_tries} connection attempts, {rogue_ok} CONNACKs at devices, "
          f"{rogue_log_clients} clients connected in its log; unfinished devices: {unfinished}")
    if a.png and events:
        print(f"chart: {chart(a.png, sorted(rotated_at.values()), n, t_switch, wall)}")
    if a.json:
        pathlib.Path(a.json).parent.mkdir(exist_ok=True)
        pathlib.Path(a.json).write_text(json.dumps({
            "n": n, "workers": k, "rotated": rotated, "bricked": len(bricked), "rogue_accepted": rogue_accepted,
            "rogue_attempts": rogue_tries, "switch_s": t_switch, "wall_s": wall, "connections": len(events),
            "rotated_at_s": sorted(rotated_at.values()), "kinds": kinds}, indent=1))
    if rotated != n:
        problems.append(f"{n - rotated} devices did not rotate")
    if bricked:
        problems.append(f"bricked devices: {bricked[:20]}")
    if rogue_accepted:
        problems.append(f"{rogue_accepted} rogue connections accepted")
    for p in problems:
        print("fleet: FAIL:", p)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory kept: {work}")
    print(f"fleet: {n} devices, {rotated} rotated, {len(bricked)} bricked, {rogue_accepted} rogue-accepted, "
          f"{wall:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
