"""Fault injection: a power cut after every write step (create, torn write, flush, rename,
remove) of every flash mutation: store edits, the rotation commit, a signed-update apply,
the report ring's write and clear; and after each pin-store mutation the corruption of each
current copy (P, P.2) at each part (header, JSON body, hash line, a changed pin with the old
hash, a raised seq with an attacker's pin). After each fault the state is exactly old or new, no
retired pin is lost, the device still connects to the real server, and the server holding the
retired key is refused (one bad copy never bricks the device nor revives a retired key)."""
import json
import pathlib
import subprocess

from helpers.pki import CA, new_key, pin
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"


def test_power_cuts_everywhere(tmp_path):
    ca = CA("Faults")
    keys = {n: new_key() for n in ("a", "b0", "b1")}
    files = {n: ca.write_chain(tmp_path, n, k, HOST) for n, k in keys.items()}
    work = tmp_path / "dev"
    work.mkdir()
    with TLSServer(*map(str, files["a"])) as sa, TLSServer(*map(str, files["b0"])) as sb, \
            TLSServer(*map(str, files["b1"])) as sr:
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_faults.py"), str(work),
                            str(sa.port), str(sb.port), str(sr.port), pin(keys["a"]), pin(keys["b0"]),
                            pin(keys["b1"])],
                           check=False, capture_output=True, text=True, timeout=900)
        # the checks send no application byte, least of all to the retired key's server
        assert sa.received == b"" and sb.received == b"" and sr.received == b""
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"fault injection: {r['total']} cut points: {r['cuts']}")
    print(f"corruption of one copy: {r['corrupt_total']} cases: {r['corrupt']}")
    assert r["third"] == [], r["third"]
    assert r["lost"] == [], r["lost"]
    assert r["noconnect"] == [], r["noconnect"]
    assert r["retired_accepted"] == [], r["retired_accepted"]
    assert r["corrupt_bad"] == [], r["corrupt_bad"]
    muts = {"store put (new set)", "store add_backup", "store add_active", "store join group", "store retire",
            "rotation commit", "signed update apply"}
    assert set(r["cuts"]) == muts | {"report ring write", "report ring clear"}, r["cuts"]
    for name, n in r["cuts"].items():
        assert n >= 1, name
    assert set(r["corrupt"]) == muts and all(n == 14 for n in r["corrupt"].values()), r["corrupt"]
    assert r["total"] >= 60, r
