"""keypin keygen and keypin csr: keys on disk, refusals, and the pin surviving CSR -> CA -> certificate."""
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def test_keygen_writes_keys_modes_and_pins(kp, tmp_path, openssl):
    out = tmp_path / "keys"
    r = kp("keygen", "--out", out, "--backups", "2")
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert [ln.split()[1] for ln in lines] == ["primary", "backup1", "backup2"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    pins = set()
    for ln in lines:
        pin, name, path = ln.split()
        assert path == str(out / (name + ".key"))
        key_bytes = (out / (name + ".key")).read_bytes()
        assert key_bytes.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
        assert stat.S_IMODE((out / (name + ".key")).stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(key_bytes, None)
        assert key.curve.name == "secp256r1"
        pub = (out / (name + ".pub")).read_bytes()
        assert openssl.pub(pub) == pin
        assert kp("pin", "-q", out / (name + ".key")).out.strip() == pin
        pins.add(pin)
    assert len(pins) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{e}" for n in ("primary", "backup1", "backup2") for e in ("key", "pub"))


def test_keygen_types(kp, tmp_path):
    for t, check in (("ec-p384", lambda k: k.curve.name == "secp384r1"),
                     ("rsa-2048", lambda k: k.key_size == 2048)):
        out = tmp_path / t
        r = kp("keygen", "--out", out, "--backups", "1", "--type", t)
        assert r.rc == 0, r
        assert check(serialization.load_pem_private_key((out / "backup1.key").read_bytes(), None))


def test_keygen_refuses_to_overwrite_and_writes_nothing(kp, tmp_path):
    out = tmp_path / "keys"
    out.mkdir()
    (out / "backup2.pub").write_text("precious")
    r = kp("keygen", "--out", out, "--backups", "3")
    assert r.rc == 1 and r.out == ""
    assert r.err.startswith("keypin: keygen: refusing to overwrite existing key files (nothing written): ")
    assert str(out / "backup2.pub") in r.err
    assert [p.name for p in out.iterdir()] == ["backup2.pub"]
    assert (out / "backup2.pub").read_text() == "precious"


def test_csr_has_sans_and_signs_with_the_key(kp, pki, tmp_path):
    key = pki.key("ec")
    kf = pki.write("k.pem", pki.pem(key))
    r = kp("csr", "--key", kf, "-d", "API.example.test", "-d", "www.example.test", "-d", "192.0.2.7",
           "--out", tmp_path / "x.csr")
    assert r.rc == 0, r
    csr = x509.load_pem_x509_csr((tmp_path / "x.csr").read_bytes())
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.example.test", "www.example.test"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert csr.subject.rfc4514_string() == "CN=api.example.test"
    assert r.out == f"{pki.pin(key)} CSR for api.example.test, www.example.test, 192.0.2.7 -> {tmp_path / 'x.csr'}\n"
    # refuses to overwrite, --force replaces
    r = kp("csr", "--key", kf, "-d", "api.example.test", "--out", tmp_path / "x.csr")
    assert r.rc == 1 and r.err == f"keypin: csr: {tmp_path / 'x.csr'} exists (use --force to replace it)\n"
    assert kp("csr", "--key", kf, "-d", "api.example.test", "--out", tmp_path / "x.csr", "--force").rc == 0


def test_csr_to_stdout_and_openssl_accepts_it(kp, pki, tmp_path):
    import subprocess
    kf = pki.write("k.pem", pki.pem(pki.key("rsa")))
    r = kp("csr", "--key", kf, "-d", "a.example.test")
    assert r.rc == 0 and r.out.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    v = subprocess.run(["openssl", "req", "-verify", "-noout"], input=r.out.encode(), capture_output=True,
                       check=False)
    assert v.returncode == 0, v.stderr


def test_keygen_csr_ca_cert_same_pin(kp, pki, tmp_path, openssl):
    out = tmp_path / "keys"
    r = kp("keygen", "--out", out, "--backups", "1")
    assert r.rc == 0
    primary_pin = r.out.splitlines()[0].split()[0]
    r = kp("csr", "--key", out / "primary.key", "-d", "device.example.test", "--out", tmp_path / "p.csr")
    assert r.rc == 0, r
    cert = pki.sign_csr(x509.load_pem_x509_csr((tmp_path / "p.csr").read_bytes()))
    cert_pem = pki.pem(cert)
    assert openssl.cert(cert_pem) == primary_pin
    r = kp("pin", pki.write("issued.pem", cert_pem))
    assert r.out == f"{primary_pin} CN=device.example.test\n"


def test_csr_bad_inputs(kp, pki, tmp_path):
    r = kp("csr", "--key", pki.write("c.pem", pki.pem(pki.root)), "-d", "a.test")
    assert r.rc == 1 and r.err == f"keypin: csr: {tmp_path / 'c.pem'}: no private key in this file\n"
    kf = pki.write("k.pem", pki.pem(pki.key("ec")))
    r = kp("csr", "--key", kf, "-d", "bad host!")
    assert r.rc == 1 and r.err.startswith("keypin: csr: bad host 'bad host!'")
    r = kp("csr", "--key", kf)
    assert r.rc == 1 and r.err.startswith("keypin: csr: the following arguments are required: -d/--domain")


def test_gitignore_covers_what_the_readme_makes_in_the_checkout():
    """issue 17.6: keypin keygen --out keys, pins.json, key files are never committed by accident."""
    import pathlib
    import shutil
    import subprocess
    root = pathlib.Path(__file__).resolve().parents[2]
    if not shutil.which("git"):
        raise AssertionError("git not found: apt-get install git")
    made = ["keys/primary.key", "keys/backup1.pub", "pins.json", "pins.json.old", "signer.key", "update.txt"]
    r = subprocess.run(["git", "check-ignore", *made], cwd=root, capture_output=True, text=True, check=False)
    assert sorted(r.stdout.split()) == sorted(made), r.stdout + r.stderr
    kept = ["lib/keypin/store.py", "docs/cli.md", "tests/cli/test_cli_pin.py"]
    r = subprocess.run(["git", "check-ignore", *kept], cwd=root, capture_output=True, text=True, check=False)
    assert r.stdout == "" and r.returncode == 1, r.stdout
