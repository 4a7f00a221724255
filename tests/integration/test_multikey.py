"""Issue 18: several keys in service at once, against real servers, in the Unix port.

- nginx with an RSA and an ECDSA certificate for one name (it picks one per client): the device
  connects with each key (server cipher preference flipped between runs) and never rotates;
- two nodes with different keys under one name: no rotation, no refusal;
- a compromise during the roll (a backup presented while two keys are in service) rotates and
  retires the whole old group; the old keys are refused afterwards.
The staged rolling change driven by signed updates is in test_rolling.py.
"""
import hashlib
import json
import pathlib
import subprocess

from cryptography.hazmat.primitives.asymmetric import rsa
from helpers.pki import CA, new_key, pin
from helpers.realservers import Nginx

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"

_ECDSA_FIRST = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
_RSA_FIRST = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"


class DualNginx(Nginx):
    """nginx with a second certificate + key (RSA beside ECDSA) and a server cipher order."""

    def __init__(self, workdir, certfile, keyfile, cert2, key2, ciphers):
        self._second = (pathlib.Path(cert2), pathlib.Path(key2))
        self._ciphers = ciphers
        super().__init__(workdir, certfile, keyfile, protocols=("TLSv1.2",))

    def _write_conf(self):
        super()._write_conf()
        c2, k2 = self.dir / "server2.crt", self.dir / "server2.key"
        c2.write_bytes(self._second[0].read_bytes())
        k2.write_bytes(self._second[1].read_bytes())
        conf = self.conf.read_text()
        extra = (f"        ssl_certificate {c2};\n        ssl_certificate_key {k2};\n"
                 f"        ssl_prefer_server_ciphers on;\n        ssl_ciphers {self._ciphers};\n")
        anchor = f"        ssl_certificate_key {self.dir}/server.key;\n"
        assert anchor in conf
        self.conf.write_text(conf.replace(anchor, anchor + extra, 1))


def v2_document(sets, retired=(), seq=1):
    doc = {"format": "keypin-pins/2", "seq": seq, "version": 0, "signer": None, "fleet": None,
           "retired": list(retired), "sets": sets}
    line = json.dumps(doc).encode()
    return line + b"\nsha256:" + hashlib.sha256(line).hexdigest().encode() + b"\n"


def device(store, *ports):
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_multikey.py"), str(store), HOST,
                        *map(str, ports)], check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def store_file(d, active, backups, retired=()):
    path = d / "pins.json"
    path.write_bytes(v2_document({"api": {"hosts": [HOST], "active": active, "backups": backups,
                                          "policy": "leaf"}}, retired))
    return path


def test_dual_rsa_and_ecdsa_certificates_both_accepted_never_rotated(tmp_path):
    ca = CA("Dual")
    ec, rs = new_key(), rsa.generate_private_key(65537, 2048)
    ec_crt, ec_key = ca.write_chain(tmp_path, "ec", ec, HOST)
    rs_crt, rs_key = ca.write_chain(tmp_path, "rsa", rs, HOST)
    b1 = new_key()
    store = store_file(tmp_path, [pin(ec), pin(rs)], [[pin(b1)]])
    before = store.read_bytes()
    seen = []
    for order in (_ECDSA_FIRST, _RSA_FIRST):
        with DualNginx(tmp_path, ec_crt, ec_key, rs_crt, rs_key, order) as web:
            r = device(store, web.port, web.port)
            served = [json.loads(x)["ssl_cipher"] for x in web.access_log.read_text().splitlines()]
        for x in r["results"]:
            assert x.get("verdict") == "active" and x["status"] == 200 and x["after"] == "active", r
        seen.append({x["pin"] for x in r["results"]})
        assert all(("ECDSA" in c) == (order == _ECDSA_FIRST) for c in served), served
    assert seen == [{pin(ec)}, {pin(rs)}], seen  # each key really was presented
    assert store.read_bytes() == before  # no rotation, no write


def test_two_nodes_with_their_own_keys_under_one_name(tmp_path):
    ca = CA("Cluster")
    k1, k2, b1 = new_key(), new_key(), new_key()
    c1 = ca.write_chain(tmp_path, "n1", k1, HOST)
    c2 = ca.write_chain(tmp_path, "n2", k2, HOST)
    store = store_file(tmp_path, [pin(k1), pin(k2)], [[pin(b1)]])
    before = store.read_bytes()
    with Nginx(tmp_path, *c1) as n1, Nginx(tmp_path, *c2) as n2:
        r = device(store, n1.port, n2.port, n1.port, n2.port)
    assert [x.get("pin") for x in r["results"]] == [pin(k1), pin(k2)] * 2, r
    assert all(x.get("verdict") == "active" and x["status"] == 200 for x in r["results"]), r
    assert store.read_bytes() == before


def test_compromise_during_the_roll_retires_the_whole_group(tmp_path):
    ca = CA("Roll")
    old, new, b1, b2 = new_key(), new_key(), new_key(), new_key()
    c_old = ca.write_chain(tmp_path, "old", old, HOST)
    c_new = ca.write_chain(tmp_path, "new", new, HOST)
    c_b1 = ca.write_chain(tmp_path, "b1", b1, HOST)
    store = store_file(tmp_path, [pin(old), pin(new)], [[pin(b1)], [pin(b2)]])
    with Nginx(tmp_path, *c_old) as n_old, Nginx(tmp_path, *c_new) as n_new, Nginx(tmp_path, *c_b1) as n_b1:
        r = device(store, n_old.port, n_b1.port, n_old.port, n_new.port, n_b1.port)
    res = r["results"]
    assert res[0]["verdict"] == "active" and res[0]["pin"] == pin(old), res
    assert res[1]["verdict"] == "backup" and res[1]["after"] == "rotated" and res[1]["pin"] == pin(b1), res
    # both keys of the old group are retired at once and refused from then on
    assert res[2]["error"] == "PinMismatch" and res[2]["reason"] == "retired key", res
    assert res[3]["error"] == "PinMismatch" and res[3]["reason"] == "retired key", res
    assert res[4]["verdict"] == "active" and res[4]["pin"] == pin(b1), res
    assert r["active"] == [pin(b1)] and r["backups"] == [[pin(b2)]], r
    assert set(r["retired"]) == {pin(old), pin(new)}, r
