"""`make demo`: the keypin story against real servers on loopback, in about a minute.

pebble (Let's Encrypt's test CA) issues certificates through certbot for a fixed server key;
nginx (HTTPS) and mosquitto (MQTTS) serve them; the device (main.py from a `keypin image`) runs
in the MicroPython Unix port. Renewals, a CA that changes its root, a key compromise with
rotation to backup 1, the stolen old key with a fresh CA-valid certificate, and a signed software
release the device installs over pinned HTTPS (A/B slots, self-test, commit) keeping its pins.
Prints a numbered narrative and a summary table; exits 1 if any step did not go as the story says.
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

from helpers.geny import LeanNginx
from helpers.realservers import Mosquitto, Pebble, certbot

KEYPIN = str(ROOT / ".venv" / "bin" / "keypin")
HOST = "device.example.test"


def sh(*argv):
    p = subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{p.stdout}{p.stderr}")
    return p.stdout


class Story:
    def __init__(self, work, out=print):
        self.w = pathlib.Path(work)
        self.out = out
        self.steps = []
        self.servers = []
        self.n = 0

    def say(self, text):
        self.out(text)

    # ---- the operator's side, with keypin's CLI ----
    def setup(self):
        w = self.w
        self.say("Setting up: pebble (ACME test CA), keys, pins, certbot, nginx, mosquitto, device image;"
                 " the device connects through lean listeners (the leaf alone)")
        self.pebble = Pebble(w / "pebble")
        self.servers.append(self.pebble)
        sh(KEYPIN, "keygen", "--out", w / "keys", "--backups", "2", "--type", "ec-p256")
        self.keys = {n: w / "keys" / f"{n}.key" for n in ("primary", "backup1", "backup2")}
        self.pins = {n: sh(KEYPIN, "pin", w / "keys" / f"{n}.pub").split()[0] for n in self.keys}
        self.label = {p: n for n, p in self.pins.items()}
        sh(KEYPIN, "pinset", "new", "--file", w / "pins.json", "--name", "fleet", "--host", HOST,
           "--active-key", w / "keys/primary.pub", "--backup-key", w / "keys/backup1.pub",
           "--backup-key", w / "keys/backup2.pub", "--fleet", "demo")
        self.issue("primary")
        # devices connect through lean listeners (the leaf alone, docs/operations.md); nginx's
        # main listener keeps the full chain for browsers
        self.ng = LeanNginx(w, certfile=self.cert["fullchain"], keyfile=self.keys["primary"],
                            listeners={"lean": (self.cert["cert"], self.keys["primary"])})
        self.mq = Mosquitto(w, self.cert["cert"], self.keys["primary"], users={"dev": "secret"})
        self.servers += [self.ng, self.mq]
        cfg = {"device_id": "demo-1", "pins": "pins.json", "hosts": {HOST: "127.0.0.1"},
               "mqtt": {"host": HOST, "port": self.mq.port, "user": "dev", "password": "secret", "tries": 2},
               "https": {"url": f"https://{HOST}:{self.ng.lean_port}/checkin", "interval": 300}}
        # software releases (step 8): the offline release signer; nothing released yet (version 0)
        cfg["cycles"] = 1  # a power-on (step 8) runs one app cycle, like main.run(cycles=1) above
        cfg["release"] = {"url": f"https://{HOST}:{self.ng.port}/files/release/",
                          "signer": sh(KEYPIN, "signer", "keygen", "--out", w / "release.key").split()[0]}
        (self.ng.root / "release").mkdir()
        (self.ng.root / "release" / "release.version").write_text("0\n")
        (w / "config.json").write_text(json.dumps(cfg))
        sh(KEYPIN, "image", "--out", w / "image", "--arch", "x64", "--config", w / "config.json",
           "--pins", w / "pins.json")
        self.dev = w / "device"
        shutil.copytree(w / "image", self.dev)

    def issue(self, key):
        csr = self.w / f"{key}.csr"
        if not csr.exists():  # one CSR per key, reused at every renewal
            sh(KEYPIN, "csr", "--key", self.keys[key], "-d", HOST, "--out", csr)
        self.cert = certbot(self.pebble, self.w, HOST, csr=csr, key=self.keys[key])
        self.served_key = key

    def serve(self):
        key = self.keys[self.served_key]
        self.ng.reload(self.cert["fullchain"], key, listeners={"lean": (self.cert["cert"], key)})
        self.mq.restart(self.cert["cert"], key)

    # ---- the device ----
    def device_cycle(self):
        before = self._flash()
        env = dict(os.environ, MICROPYPATH=f".frozen:{self.dev}/lib:{ROOT}/build/umqtt-pypi")
        p = subprocess.run([str(ROOT / ".venv/bin/micropython"), "-c",
                            "import main\nprint('GOOD', main.run(cycles=1))"],
                           cwd=self.dev, env=env, check=False, capture_output=True, text=True, timeout=120)
        out = p.stdout
        good = p.returncode == 0 and out.strip().endswith("GOOD 1")
        full = json.loads((self.dev / "pins.json").read_text().splitlines()[0])
        doc = full["sets"]["fleet"]  # pin document v2: active is a list, retired is device-wide
        active = doc["active"][0] if isinstance(doc["active"], list) and doc["active"] else doc["active"]
        retired = full.get("retired", doc.get("retired", []))
        rotated = "keypin: rotated set" in out
        if good:
            saw = self.label.get(active, active)
            saw += " (backup, now active)" if rotated else " (active pin)"
        else:
            why = "retired key" if "retired key" in out else "unknown key" if "unknown key" in out else "error"
            saw = f"{self.label.get(self.pins[self.served_key])}: {why}, refused"
        after = self._flash()  # a copy the store completes at first boot (pin document v2) is not a pin write
        return {"connected": good, "rotated": rotated, "saw": saw, "wrote": any(after.get(n) != v for n, v in before.items()),
                "active": active, "retired": retired, "log": out + p.stderr}

    def _flash(self):
        return {f.name: f.read_bytes() for f in self.dev.glob("pins.json*")}

    def step(self, title, expect_connect, expect_rotate, expect_write=False, check=None):
        self.n += 1
        r = self.device_cycle()
        ok = (r["connected"] == expect_connect and r["rotated"] == expect_rotate
              and r["wrote"] == expect_write and (check is None or check(r)))
        r.update(n=self.n, title=title, ok=ok)
        self.steps.append(r)
        mark = "as expected" if ok else "NOT AS EXPECTED"
        self.say(f"   device: {r['saw']}; connected {'yes' if r['connected'] else 'no'}, "
                 f"rotated {'yes' if r['rotated'] else 'no'}, pin store written {'yes' if r['wrote'] else 'no'}"
                 f" -> {mark}")
        if not ok:
            self.say("   device log:\n" + "\n".join("     " + ln for ln in r["log"].splitlines()))
        return r

    def run(self):
        t0 = time.time()
        try:
            self.setup()
            p = self.pins
            self.say(f"\n1. The device connects to its servers (certificate from pebble for the primary key "
                     f"{p['primary'][:20]}...)")
            self.step("first connection", True, False)
            for i in (1, 2):
                self.say(f"\n{i + 1}. certbot renews the certificate with the same key (renewal {i}); "
                         "servers reloaded")
                self.issue("primary")
                self.serve()
                self.step(f"renewal {i}", True, False)
            old_root = self.pebble.roots()
            self.say("\n4. The CA changes its root and intermediate (pebble restarted), certbot renews")
            self.pebble.restart()
            if self.pebble.roots() == old_root:
                raise RuntimeError("pebble did not change its root")
            self.issue("primary")
            self.serve()
            self.step("CA changed root + renewal", True, False)
            self.say("\n5. Key compromise! The operator issues a certificate for backup key 1 and reloads")
            self.issue("backup1")
            self.serve()
            self.step("server moved to backup 1", True, True, expect_write=True,
                      check=lambda r: r["active"] == p["backup1"] and p["primary"] in r["retired"])
            self.say("\n6. The device restarts: the rotation persisted")
            self.step("device restart", True, False, check=lambda r: r["active"] == p["backup1"])
            self.say("\n7. An attacker with the stolen primary key and a fresh, CA-valid certificate")
            self.issue("primary")
            self.serve()
            self.step("stolen old key, fresh CA cert", False, False,
                      check=lambda r: "retired" in r["saw"] and r["active"] == p["backup1"])
            self.ota_step()
        finally:
            for s in reversed(self.servers):
                s.stop()
        self.elapsed = time.time() - t0
        return self.steps

    def ota_step(self):
        # step 8 (keypin.ota): a signed software release over pinned HTTPS; the device reboots into
        # it, passes its pinned self-test, commits, and keeps its pins
        self.n += 1
        self.say(f"\n{self.n}. A software release: the operator signs it offline (keypin release), publishes it "
                 "where nginx serves files (the servers are back on backup 1); the device updates itself")
        self.issue("backup1")
        self.serve()
        sh(KEYPIN, "release", "--key", self.w / "release.key", "--version", "1", "--fleet", "demo",
           "--image", self.w / "image", "--publish", self.ng.root / "release")
        pins = self._flash()
        env = dict(os.environ, MICROPYPATH=f".frozen:{self.dev}/lib:{ROOT}/build/umqtt-pypi")
        log, codes = "", []
        for _ in range(4):  # power on again after each reset (exit 75), as a board does
            p = subprocess.run([str(ROOT / ".venv/bin/micropython"), str(ROOT / "tests/standins/power_on.py")],
                               cwd=self.dev, env=env, check=False, capture_output=True, text=True, timeout=120)
            log += p.stdout + p.stderr
            codes.append(p.returncode)
            if p.returncode != 75:
                break
        ptr = json.loads((self.dev / "slot.json").read_text()) if (self.dev / "slot.json").exists() else {}
        ok = (codes == [75, 0] and ptr.get("version") == 1 and ptr.get("state") == "ok"
              and "ota: release 1 committed" in log and self._flash() == pins)
        saw = (f"release 1 in {ptr.get('slot')}, self-test passed, committed; pins kept" if ok
               else f"release {ptr.get('version')} {ptr.get('state')}")
        self.say(f"   device: {saw}; over pinned HTTPS, pin store written {'no' if self._flash() == pins else 'YES'}"
                 f" -> {'as expected' if ok else 'NOT AS EXPECTED'}")
        if not ok:
            self.say("   device log:\n" + "\n".join("     " + ln for ln in log.splitlines()))
        self.steps.append({"n": self.n, "title": "software update (A/B, pinned)", "saw": saw, "connected": ok,
                           "rotated": False, "ok": ok, "log": log})

    def summary(self):
        rows = [("#", "step", "device saw", "connected", "rotated", "ok")]
        for r in self.steps:
            rows.append((str(r["n"]), r["title"], r["saw"], "yes" if r["connected"] else "no",
                         "yes" if r["rotated"] else "no", "yes" if r["ok"] else "NO"))
        w = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
        return "\n".join(lines)


def main():
    work = tempfile.mkdtemp(prefix="keypin-demo-")
    st = Story(work)
    try:
        steps = st.run()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        # what the story's steps raise: a CLI or server that failed (RuntimeError, ServerError,
        # CertbotError, MissingBinary), I/O, a device run that timed out; anything else is a bug: traceback
        print(f"demo: failed: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nSummary\n")
    print(st.summary())
    ok = len(steps) == 8 and all(r["ok"] for r in steps)
    print(f"\ndemo: {'all steps went as the story says' if ok else 'SOME STEPS DID NOT GO AS EXPECTED'} "
          f"({st.elapsed:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
