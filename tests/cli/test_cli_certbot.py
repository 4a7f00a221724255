"""keypin certbot-hook: reload only when the renewed certificate kept a pinned key."""
import sys


def _setup(kp, pki, tmp_path, key, backup):
    f = tmp_path / "pins.json"
    r = kp("pinset", "new", "--file", f, "--name", "api", "--host", "api.example.test", "--host", "www.example.test",
           "--active", pki.pin(key), "--backup", pki.pin(backup))
    assert r.rc == 0, r
    return f


def _lineage(pki, tmp_path, key, name="live", hosts=("api.example.test", "www.example.test"), only_full=False):
    d = tmp_path / name
    d.mkdir()
    leaf = pki.leaf(key, hosts[0], hosts=list(hosts))
    if not only_full:
        (d / "cert.pem").write_bytes(pki.pem(leaf))
    (d / "fullchain.pem").write_bytes(pki.pem(leaf) + pki.pem(pki.inter))
    return d


def _reload_cmd(marker):
    return f"{sys.executable} -c \"open('{marker}', 'a').write('reloaded\\n')\""


def test_unchanged_key_reloads(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    lineage = _lineage(pki, tmp_path, key)
    marker = tmp_path / "reloaded.txt"
    r = kp("certbot-hook", "--pinset", f, "--reload", _reload_cmd(marker), "--reload", _reload_cmd(marker),
           env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 0, r
    assert r.out.startswith(f"set api: the certificate keeps the active key {pki.pin(key)}\n")
    assert marker.read_text() == "reloaded\nreloaded\n"


def test_backup_key_reloads_and_says_so(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    cert = _lineage(pki, tmp_path, backup, only_full=True)
    marker = tmp_path / "m"
    r = kp("certbot-hook", "--pinset", f, "--reload", _reload_cmd(marker), env={"RENEWED_LINEAGE": str(cert)})
    assert r.rc == 0, r
    assert f"uses backup 1 {pki.pin(backup)}" in r.out
    assert marker.exists()


def test_new_key_is_blocked_and_not_reloaded(kp, pki, tmp_path):
    key, backup, fresh = pki.key("ec"), pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    lineage = _lineage(pki, tmp_path, fresh)
    marker = tmp_path / "reloaded.txt"
    r = kp("certbot-hook", "--pinset", f, "--reload", _reload_cmd(marker), env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 1
    assert f"the certificate's key {pki.pin(fresh)} is not pinned" in r.out
    assert r.err.startswith("keypin: certbot-hook: NOT reloading: this renewal changed the server key")
    assert "forgot --reuse-key" in r.err
    assert not marker.exists()


def test_retired_key_is_blocked(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    assert kp("pinset", "retire", "--file", f, "--set", "api", pki.pin(key), "--force").rc == 0
    cert = _lineage(pki, tmp_path, key) / "cert.pem"
    marker = tmp_path / "m"
    r = kp("certbot-hook", "--pinset", f, "--cert", cert, "--reload", _reload_cmd(marker))
    assert r.rc == 1 and "is RETIRED" in r.out and not marker.exists()


def test_set_selection_and_errors(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    other = _lineage(pki, tmp_path, key, "other", hosts=("unrelated.test",))
    r = kp("certbot-hook", "--pinset", f, "--cert", other / "cert.pem")
    assert r.rc == 1 and r.err == f"keypin: certbot-hook: no pin set in {f} covers unrelated.test (give --set NAME)\n"
    assert kp("certbot-hook", "--pinset", f, "--cert", other / "cert.pem", "--set", "api").rc == 0
    wild = _lineage(pki, tmp_path, key, "wild", hosts=("*.example.test",))
    assert kp("certbot-hook", "--pinset", f, "--cert", wild / "cert.pem").rc == 0
    r = kp("certbot-hook", "--pinset", f)
    assert r.rc == 1 and r.err.startswith("keypin: certbot-hook: RENEWED_LINEAGE is not set")
    r = kp("certbot-hook", "--pinset", f, env={"RENEWED_LINEAGE": str(tmp_path / "nothing")})
    assert r.rc == 1 and "no cert.pem or fullchain.pem" in r.err
    r = kp("certbot-hook", "--pinset", f, "--cert", other / "cert.pem", "--set", "api", "--reload", "false")
    assert r.rc == 1 and r.err == "keypin: certbot-hook: reload command 'false' exited with 1\n"


# ---- the lean device listener (issue 13, H5): the hook installs leaf.pem beside fullchain.pem

def _full_lineage(pki, tmp_path, key, name="live"):
    d = _lineage(pki, tmp_path, key, name)
    (d / "privkey.pem").write_bytes(pki.pem(key))
    return d


def test_install_writes_leaf_pem_beside_fullchain(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    lineage = _full_lineage(pki, tmp_path, key)
    dest = tmp_path / "ssl"
    r = kp("certbot-hook", "--pinset", f, "--install", dest, env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 0, r
    assert sorted(p.name for p in dest.iterdir()) == ["fullchain.pem", "leaf.pem", "privkey.pem"]
    assert f"installed {dest / 'leaf.pem'}" in r.out.splitlines()
    # the leaf alone: exactly the first certificate of fullchain.pem (which keeps the chain)
    full = (lineage / "fullchain.pem").read_bytes()
    assert (dest / "leaf.pem").read_bytes() == (lineage / "cert.pem").read_bytes()
    assert (dest / "leaf.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 1
    assert (dest / "fullchain.pem").read_bytes() == full and full.count(b"BEGIN CERTIFICATE") == 2
    assert (dest / "leaf.pem").stat().st_mode & 0o777 == 0o644


def test_leaf_pem_comes_from_fullchain_and_is_not_replaced_when_refused(kp, pki, tmp_path):
    key, backup, fresh = pki.key("ec"), pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    dest = tmp_path / "ssl"
    # a lineage with fullchain.pem only (--cert names it): leaf.pem is its first certificate
    only = _lineage(pki, tmp_path, key, "only-full", only_full=True)
    (only / "privkey.pem").write_bytes(pki.pem(key))
    r = kp("certbot-hook", "--pinset", f, "--cert", only / "fullchain.pem", "--install", dest)
    assert r.rc == 0, r
    first = (only / "fullchain.pem").read_bytes().split(b"-----END CERTIFICATE-----")[0]
    assert (dest / "leaf.pem").read_bytes() == first + b"-----END CERTIFICATE-----\n"
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    # a renewal with a new key is refused: leaf.pem (like the others) stays what devices accept
    bad = _full_lineage(pki, tmp_path, fresh, "bad")
    r = kp("certbot-hook", "--pinset", f, "--install", dest, env={"RENEWED_LINEAGE": str(bad)})
    assert r.rc == 1
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


# ------------------------------------------------------------- issue 12.8: operator mistakes


def test_a_privkey_that_does_not_match_the_certificate_is_refused(kp, pki, tmp_path):
    """The lineage's privkey.pem is not the certificate's key: a server with the pair would fail every
    handshake. Neither installed nor reloaded."""
    key, backup, stray = pki.key("ec"), pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    lineage = _full_lineage(pki, tmp_path, key)
    (lineage / "privkey.pem").write_bytes(pki.pem(stray))
    dest, marker = tmp_path / "ssl", tmp_path / "reloaded.txt"
    r = kp("certbot-hook", "--pinset", f, "--install", dest, "--reload", _reload_cmd(marker),
           env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 1, r
    assert r.err.startswith("keypin: certbot-hook: NOT reloading: ") and "privkey.pem" in r.err, r.err
    assert f"does not match the certificate (key {pki.pin(stray)}, certificate {pki.pin(key)})" in r.err
    assert not dest.exists() and not marker.exists()
    # without --install the live privkey.pem beside cert.pem is checked too
    r = kp("certbot-hook", "--pinset", f, "--reload", _reload_cmd(marker), env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 1 and "does not match the certificate" in r.err and not marker.exists()
    # the matching key passes
    (lineage / "privkey.pem").write_bytes(pki.pem(key))
    r = kp("certbot-hook", "--pinset", f, "--install", dest, env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 0, r
    # an unreadable privkey.pem is an error, not a traceback
    (lineage / "privkey.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    r = kp("certbot-hook", "--pinset", f, env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 1 and r.err.startswith("keypin: certbot-hook: ") and "privkey.pem" in r.err, r.err


def test_a_retired_key_gets_the_compromise_advice(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    assert kp("pinset", "retire", "--file", f, "--set", "api", pki.pin(key), "--force").rc == 0
    r = kp("certbot-hook", "--pinset", f, "--cert", _lineage(pki, tmp_path, key) / "cert.pem")
    assert r.rc == 1
    assert "forgot --reuse-key" not in r.err, r.err
    assert f"the renewed certificate carries the RETIRED key {pki.pin(key)}" in r.err
    assert "retired keys are treated as compromised" in r.err and "keypin csr --key" in r.err


def test_bad_input_never_prints_a_traceback(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    lineage = _full_lineage(pki, tmp_path, key)
    # --install into a path below a regular file
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = kp("certbot-hook", "--pinset", f, "--install", blocker / "ssl", env={"RENEWED_LINEAGE": str(lineage)})
    assert r.rc == 1 and r.err.startswith(f"keypin: certbot-hook: --install {blocker / 'ssl'}: "), r
    # a certificate file that is not a certificate
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"hello\n")
    r = kp("certbot-hook", "--pinset", f, "--cert", junk)
    assert r.rc == 1 and r.err.startswith("keypin: certbot-hook: "), r



def test_a_certificate_cryptography_cannot_parse_is_named(kp, pki, tmp_path):
    key, backup = pki.key("ec"), pki.key("ec")
    f = _setup(kp, pki, tmp_path, key, backup)
    d = _lineage(pki, tmp_path, key)
    import base64
    pem = (d / "cert.pem").read_bytes()
    der = bytearray(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    i = der.index(b"\xa0\x03\x02\x01\x02")
    der[i + 4] = 3  # X.509 version 4: the device still pins it, cryptography refuses it
    b64 = base64.encodebytes(bytes(der))
    (d / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b64 + b"-----END CERTIFICATE-----\n")
    r = kp("certbot-hook", "--pinset", f, "--cert", d / "cert.pem")
    assert r.rc == 1 and "a certificate Python's cryptography cannot parse (its key pin is " + pki.pin(key) in r.err, r
