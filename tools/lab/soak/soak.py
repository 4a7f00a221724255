"""Soak: thousands of pinned HTTPS + MQTTS connect cycles in ONE long-running device process.

    .venv/bin/python tools/lab/soak/soak.py [--cycles 2000] [--restart-every 200] [--warmup 50]

Real nginx and mosquitto on loopback; the device (tools/lab/soak/soak_dev.py in the Unix port) makes one
HTTPS request and one MQTTS connect/publish/disconnect per cycle. At every checkpoint (the
warm-up cycle, every --restart-every cycles, the end) the device runs gc.collect() and reports
its heap; the host counts /proc/<pid>/fd and VmRSS of the micropython process, then lets it go
on, stops mosquitto and nginx (0-0.2 s later, --down-seconds long) and starts them again while the
device keeps connecting: it must survive with keypin.mqtt.Client's reconnect and its HTTPS
retries. The "mqtt log" column counts keypin.mqtt's own reconnect log lines (retries inside it).

Draws the heap and the descriptors over the cycles to build/soak.png (--png).

Budgets (exit status 1 when one fails): 0 failed cycles, heap drift <= --heap-budget bytes
between the warm-up checkpoint and the end, no descriptor growth, the process ends by itself
within --max-seconds (no stuck state), the pin store unchanged. Last line:
    soak: N cycles, F failures, heap drift D bytes, fds A->B, T s
"""
import argparse
import json
import os
import pathlib
import queue
import random
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
from helpers.pki import CA, new_key, pin, pin_document
from helpers.realservers import Mosquitto, Nginx

HOST = "device.example.test"


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kib(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def device_pid(popen, timeout=10.0):
    """The micropython process: tools/upy (sh) execs .venv/bin/micropython (the PyPI Unix port runs
    inside that process), so the Popen's pid is the device once its comm is "micropython"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pathlib.Path(f"/proc/{popen.pid}/comm").read_text().strip() == "micropython":
                return popen.pid
        except OSError:
            pass
        if popen.poll() is not None:
            break
        time.sleep(0.01)
    raise RuntimeError("the device process did not start micropython")


def _reader(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


def chart(path, checkpoints, budget):
    """Heap after gc.collect() (left axis, bytes) and open descriptors (right axis) at each checkpoint."""
    cyc = [c["cycle"] for c in checkpoints]
    fig, ax = charts.new(f"keypin soak: device heap and descriptors over {cyc[-1]} cycles",
                         "connect cycle (1 HTTPS + 1 MQTTS each)", "heap in use after gc.collect() (bytes)")
    ax.plot(cyc, [c["heap"] for c in checkpoints], marker="o", color="tab:blue", label="heap (bytes)")
    ax.axhline(checkpoints[0]["heap"] + budget, color="tab:blue", linestyle=":",
               label=f"heap budget (first + {budget} B)")
    fx = ax.twinx()
    fx.set_ylabel("open file descriptors (count)")
    fx.plot(cyc, [c["fds"] for c in checkpoints], marker="s", color="tab:orange", label="descriptors (count)")
    fx.set_ylim(0, max(c["fds"] for c in checkpoints) * 1.5 + 1)
    return charts.save(fig, path, [ax, fx])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--restart-every", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--down-seconds", type=float, default=0.5, help="how long the servers stay down")
    ap.add_argument("--heap-budget", type=int, default=1024, help="bytes of heap drift allowed")
    ap.add_argument("--max-seconds", type=float, default=900, help="hard bound on the whole run")
    ap.add_argument("--stall-seconds", type=float, default=120, help="no device output for this long = stuck")
    ap.add_argument("--heap", default=None, help="device -X heapsize (e.g. 128k); default: the Unix port's")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--png", default=str(ROOT / "build" / "soak.png"), help="chart of heap and fds ('' = none)")
    a = ap.parse_args(argv)

    t_start = time.monotonic()
    work = pathlib.Path(tempfile.mkdtemp(prefix="keypin-soak-"))
    ctl = work / "ctl"
    ctl.mkdir()
    ca = CA("Soak")
    key, b0 = new_key(), new_key()
    crt, kp = ca.write_chain(work, "server", key, HOST)
    store = work / "pins.json"
    store.write_bytes(pin_document({"soak": {"hosts": [HOST], "active": pin(key), "backups": [pin(b0)],
                                             "retired": [], "policy": "leaf"}}))
    store_before = store.read_bytes()
    web = mq = dev = None
    checkpoints = []
    kinds = {}  # transient errors seen by the device (retried), "where kind" -> count
    restarts = 0
    final = None
    problems = []
    try:
        web = Nginx(work, crt, kp)
        mq = Mosquitto(work, crt, kp, users={"dev": "secret"})
        env = dict(os.environ)
        if a.heap:
            env["KEYPIN_HEAP"] = a.heap
        dev = subprocess.Popen([str(ROOT / "tools/upy"), str(ROOT / "tools/lab/soak/soak_dev.py"), str(store),
                                str(web.port), str(mq.port), str(a.cycles), str(a.restart_every), str(a.warmup),
                                str(ctl)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        pid = device_pid(dev)
        q = queue.Queue()
        threading.Thread(target=_reader, args=(dev.stdout, q), daemon=True).start()
        print(f"soak: {a.cycles} cycles, restarts every {a.restart_every}, device pid {pid}, work {work}")
        print(f"{'cycle':>6} {'heap B':>8} {'fds':>4} {'RSS KiB':>8} {'retries':>7} {'mqtt log':>8} {'fail':>4} "
              f"{'s':>7}  transient errors (retried by the soak loop)")
        while True:
            left = a.max_seconds - (time.monotonic() - t_start)
            try:
                line = q.get(timeout=max(0.1, min(a.stall_seconds, left)))
            except queue.Empty:
                problems.append(f"device stuck: no output for {min(a.stall_seconds, left):.0f} s")
                break
            if line is None:
                break
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            if "transient" in rec:
                kinds[rec["transient"]] = kinds.get(rec["transient"], 0) + 1
                continue
            if "error" in rec:
                problems.append("device: " + rec["error"])
                continue
            if "done" in rec:
                final = rec
                continue
            rec["fds"] = proc_fds(pid)
            rec["rss"] = proc_rss_kib(pid)
            rec["t"] = time.monotonic() - t_start
            checkpoints.append(rec)
            shown = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "-"
            print(f"{rec['cycle']:>6} {rec['heap']:>8} {rec['fds']:>4} {rec['rss']:>8} {rec['retries']:>7} "
                  f"{rec['mq_logs']:>8} {rec['failures']:>4} {rec['t']:>7.1f}  {shown}", flush=True)
            if rec["connected"]:
                problems.append(f"cycle {rec['cycle']}: MQTT client still marked connected at a checkpoint")
            (ctl / f"go.{rec['cycle']}").write_text("go")
            if rec["cycle"] % a.restart_every == 0 and rec["cycle"] < a.cycles:
                # while the device goes on: it meets the restarts. From this (main) thread: the servers
                # die with the thread that started them (setpriv --pdeathsig)
                # down for a while (refused connects, broken ones if a cycle was in flight), then back
                restarts += 1
                time.sleep(random.uniform(0, 0.2))
                mq.stop()
                web.stop()
                time.sleep(a.down_seconds)
                mq.restart()
                web.restart()
        if problems and dev.poll() is None:  # stuck: do not wait for it
            dev.kill()
        try:
            dev.wait(max(1.0, a.max_seconds - (time.monotonic() - t_start)))
        except subprocess.TimeoutExpired:
            problems.append("device did not exit")
    finally:
        if dev is not None and dev.poll() is None:
            dev.kill()
            dev.wait(10)
        err = dev.stderr.read() if dev is not None else ""
        for srv in (mq, web):
            if srv is not None:
                srv.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - t_start
    if dev.returncode:
        problems.append(f"device exit status {dev.returncode}: {err.strip()[-500:]}")
    if final is None:
        problems.append("device did not finish its cycles")
    if store.exists() and store.read_bytes() != store_before or (final and final["seq_changed"]):
        problems.append("pin store changed")
    first = next((c for c in checkpoints if c["cycle"] == a.warmup), checkpoints[0] if checkpoints else None)
    last = checkpoints[-1] if checkpoints else None
    n = final["done"] if final else (last["cycle"] if last else 0)
    fails = final["failures"] if final else (last["failures"] if last else -1)
    drift = last["heap"] - first["heap"] if first else 0
    fds_a, fds_b = (first["fds"], last["fds"]) if first else (-1, -1)
    if fails:
        problems.append(f"{fails} failed cycles")
    if drift > a.heap_budget:
        problems.append(f"heap drift {drift} B > {a.heap_budget} B")
    if fds_b > fds_a:
        problems.append(f"descriptor leak: {fds_a} -> {fds_b}")
    if first and last:
        print(f"heap after gc.collect(): {first['heap']} B at cycle {first['cycle']} -> {last['heap']} B at "
              f"cycle {last['cycle']} (max {max(c['heap'] for c in checkpoints)} B); RSS {first['rss']} -> "
              f"{last['rss']} KiB; {restarts} restarts of mosquitto + nginx; "
              f"{final['retries'] if final else '?'} retries; "
              f"{(n * 2 / (last['ms'] / 1000)) if last['ms'] else 0:.1f} handshakes/s")
    if a.png and checkpoints:
        print(f"chart: {chart(a.png, checkpoints, a.heap_budget)}")
    for p in problems:
        print("soak: FAIL:", p)
    print(f"soak: {n} cycles, {fails} failures, heap drift {drift} bytes, fds {fds_a}->{fds_b}, {wall:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
