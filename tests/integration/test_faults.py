"""Fault injection: a power cut after every write step (create, torn write, flush, rename,
remove) of every flash mutation: store edits, the rotation commit, a signed-update apply,
the report ring's write and clear. After each cut the state is exactly old or new, no retired
pin is lost, and the device still connects to the real server."""
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
    with TLSServer(*map(str, files["a"])) as sa, TLSServer(*map(str, files["b0"])) as sb:
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_faults.py"), str(work),
                            str(sa.port), str(sb.port), pin(keys["a"]), pin(keys["b0"]), pin(keys["b1"])],
                           check=False, capture_output=True, text=True, timeout=600)
        assert sa.received == b"" and sb.received == b""  # the checks send no application byte
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"fault injection: {r['total']} cut points: {r['cuts']}")
    assert r["third"] == [], r["third"]
    assert r["lost"] == [], r["lost"]
    assert r["noconnect"] == [], r["noconnect"]
    assert set(r["cuts"]) == {"store put (new set)", "store add_backup", "store retire", "rotation commit",
                              "signed update apply", "report ring write", "report ring clear"}, r["cuts"]
    for name, n in r["cuts"].items():
        assert n >= 1, name
    assert r["total"] >= 30, r
