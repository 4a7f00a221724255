"""Issue 18 point 2-3: the staged rolling key change, end to end, with the operator's own commands
(keypin pinset new/add-active/retire/sign, keypin check) and real nginx nodes. Three devices
connect to both nodes after every step and take the signed updates over pinned HTTPS:

  0. both nodes serve the old key O; group in service {O}
  1. `pinset add-active` N + signed update 2: group {O, N}
  2. node 1 moves to N;  3. node 2 moves to N  (keypin check run against every node)
  4. `pinset retire --force` O + signed update 3: group {N}; O retired device-wide
  5. a stolen O on a rogue node is refused
No device ever refuses a node it can reach, none rotates, none trusts O after step 4."""
import json
import pathlib
import shutil
import subprocess

from helpers.pki import CA, key_pem, new_key, pin
from helpers.realservers import Nginx

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv/bin/keypin")
HOST = "device.example.test"


def kp(*args):
    return subprocess.run([KEYPIN, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)


def ok(*args):
    p = kp(*args)
    assert p.returncode == 0, f"keypin {' '.join(map(str, args))}: {p.stdout}{p.stderr}"
    return p


def device(store, *targets):
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_multikey.py"), str(store), HOST,
                        *map(str, targets)], check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_staged_rolling_key_change(tmp_path):
    ca = CA("Rolling")
    keys = {}
    for n in ("old", "new", "b1"):
        keys[n] = new_key()
        (tmp_path / f"{n}.key").write_bytes(key_pem(keys[n]))
    chain = {n: ca.write_chain(tmp_path, f"{n}-srv", keys[n], HOST) for n in ("old", "new")}
    P = {n: pin(k) for n, k in keys.items()}
    doc = tmp_path / "pins.json"
    ok("pinset", "new", "--file", doc, "--name", "api", "--host", HOST, "--active-key", tmp_path / "old.key",
       "--backup-key", tmp_path / "b1.key", "--fleet", "plant-a")
    ok("signer", "keygen", "--out", tmp_path / "signer.key")
    ok("pinset", "set-signer", "--file", doc, "--key", tmp_path / "signer.key")
    devs = []
    for i in range(3):
        d = tmp_path / f"dev{i}"
        d.mkdir()
        shutil.copy(doc, d / "pins.json")
        devs.append(d / "pins.json")
    with Nginx(tmp_path, *chain["old"]) as n1, Nginx(tmp_path, *chain["old"]) as n2:
        url = f"https://{HOST}:{n1.port}/files/update"

        def publish(version):
            out = tmp_path / f"update{version}"
            ok("pinset", "sign", "--file", doc, "--key", tmp_path / "signer.key", "--version", version,
               "--out", out)
            for web in (n1, n2):
                shutil.copy(out, web.root / "update")
                shutil.copy(f"{out}.version", web.root / "update.version")

        def check(node):
            return kp("check", "--host", f"127.0.0.1:{node.port}", "--sni", HOST, "--pinset", doc)

        def everyone(expect_pins, update=None):
            # every device connects to both nodes (after taking the update, if any)
            seen = []
            for s in devs:
                r = device(s, *([update] if update else []), n1.port, n2.port)
                for x in r["results"]:
                    assert x.get("verdict") == "active" and x["status"] == 200, r  # never refused, never rotated
                assert [x["pin"] for x in r["results"]] == expect_pins, r
                seen.append(r)
            return seen

        # 0. both nodes on the old key
        r0 = everyone([P["old"], P["old"]])
        assert all(r["active"] == [P["old"]] for r in r0)
        # moving a node before the new key is in service is what check warns about
        with Nginx(tmp_path, *chain["new"]) as early:
            c = check(early)
        assert c.returncode == 1, c.stdout + c.stderr
        # 1. the new key joins the group in service by a signed update
        ok("pinset", "add-active", "--file", doc, "--set", "api", "--key", tmp_path / "new.key")
        publish(2)
        r1 = everyone([P["old"], P["old"]], update=url)
        for r in r1:
            assert r["update"] == "applied" and r["version"] == 2, r
            assert sorted(r["active"]) == sorted([P["old"], P["new"]]) and r["retired"] == [], r
        # 2. node 1 moves to the new key; the operator checks it, then node 2 too
        n1.reload(certfile=chain["new"][0], keyfile=chain["new"][1])
        assert check(n1).returncode == 0 and check(n2).returncode == 0
        seqs = [r["seq"] for r in everyone([P["new"], P["old"]])]
        # 3. node 2 moves
        n2.reload(certfile=chain["new"][0], keyfile=chain["new"][1])
        assert check(n2).returncode == 0
        r3 = everyone([P["new"], P["new"]])
        assert [r["seq"] for r in r3] == seqs  # no write at all while the nodes moved
        # 4. the old key is retired by a second signed update
        ok("pinset", "retire", "--file", doc, "--set", "api", "--force", P["old"])
        publish(3)
        r4 = everyone([P["new"], P["new"]], update=url)
        for r in r4:
            assert r["update"] == "applied" and r["version"] == 3, r
            assert r["active"] == [P["new"]] and r["retired"] == [P["old"]], r
        # 5. the stolen old key on a rogue node is refused, the real nodes still accepted
        with Nginx(tmp_path, *chain["old"]) as rogue:
            for s in devs:
                r = device(s, rogue.port, n1.port)
                assert r["results"][0].get("error") == "PinMismatch" and r["results"][0]["reason"] == "retired key", r
                assert r["results"][1]["verdict"] == "active", r
            assert rogue.requests() == []  # nothing reached it
