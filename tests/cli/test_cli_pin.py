"""keypin pin: agrees with the openssl pipeline for every input kind; --host reads a live chain."""
import pathlib
import subprocess

from cryptography.hazmat.primitives import serialization

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENC = serialization.Encoding
PF = serialization.PrivateFormat
PUB = serialization.PublicFormat


def _pins(out):
    return [line.split()[0] for line in out.splitlines()]


def test_certificates_pem_and_der_every_key_type(kp, pki, openssl):
    for kind in ("rsa", "ec", "ec384", "ed25519"):
        key = pki.key(kind)
        cert = pki.leaf(key, f"{kind}.example.test")
        pem = pki.pem(cert)
        want = openssl.cert(pem)
        assert want == pki.pin(key)
        p = pki.write(f"{kind}.pem", pem)
        d = pki.write(f"{kind}.der", cert.public_bytes(ENC.DER))
        r = kp("pin", p)
        assert r.rc == 0, r
        assert r.out == f"{want} CN={kind}.example.test\n"
        r = kp("pin", d)
        assert r.rc == 0 and _pins(r.out) == [want], r
        assert openssl.cert(d.read_bytes(), "DER") == want


def test_chain_gives_one_line_per_certificate_in_order(kp, pki, openssl):
    key = pki.key("rsa")
    leaf = pki.leaf(key, "api.example.test")
    chain = pki.pem(leaf) + pki.pem(pki.inter) + pki.pem(pki.root)
    r = kp("pin", pki.write("fullchain.pem", chain))
    assert r.rc == 0, r
    lines = r.out.splitlines()
    assert len(lines) == 3
    assert lines[0] == f"{openssl.cert(pki.pem(leaf))} CN=api.example.test"
    assert lines[1] == f"{openssl.cert(pki.pem(pki.inter))} CN=Test Intermediate CA"
    assert lines[2] == f"{openssl.cert(pki.pem(pki.root))} CN=Test Root CA"


def test_public_and_private_keys_pem_and_der(kp, pki, openssl):
    for kind in ("rsa", "ec", "ed25519"):
        key = pki.key(kind)
        want = openssl.pub(pki.pub_pem(key))
        files = {
            "pub.pem": pki.pub_pem(key),
            "pub.der": key.public_key().public_bytes(ENC.DER, PUB.SubjectPublicKeyInfo),
            "pkcs8.pem": pki.pem(key),
            "pkcs8.der": key.private_bytes(ENC.DER, PF.PKCS8, serialization.NoEncryption()),
        }
        if kind != "ed25519":
            files["trad.pem"] = key.private_bytes(ENC.PEM, PF.TraditionalOpenSSL, serialization.NoEncryption())
        for name, data in files.items():
            r = kp("pin", pki.write(f"{kind}-{name}", data))
            assert r.rc == 0, (kind, name, r)
            assert _pins(r.out) == [want], (kind, name)
            assert ("private key" if "pub" not in name else "public key") in r.out


def test_rsa_public_key_pkcs1_pem(kp, pki, openssl):
    key = pki.key("rsa")
    data = key.public_key().public_bytes(ENC.PEM, PUB.PKCS1)
    assert b"BEGIN RSA PUBLIC KEY" in data
    r = kp("pin", pki.write("rsa-pkcs1.pub", data))
    assert r.rc == 0 and _pins(r.out) == [openssl.pub(pki.pub_pem(key))]


def test_csr_pem_and_der(kp, pki, openssl, tmp_path):
    key = pki.key("ec")
    kf = pki.write("k.pem", pki.pem(key))
    r = kp("csr", "--key", kf, "-d", "api.example.test", "--out", tmp_path / "a.csr")
    assert r.rc == 0, r
    csr_pem = (tmp_path / "a.csr").read_bytes()
    r = kp("pin", tmp_path / "a.csr")
    assert r.out == f"{openssl.pub(pki.pub_pem(key))} CSR CN=api.example.test\n"
    from cryptography import x509
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(ENC.DER)
    r = kp("pin", pki.write("a.csr.der", der))
    assert r.rc == 0 and _pins(r.out) == [pki.pin(key)]


def test_stdin_and_several_files_and_quiet(kp, pki, openssl):
    k1, k2 = pki.key("ec"), pki.key("ec")
    c1 = pki.pem(pki.leaf(k1, "one.test"))
    r = kp("pin", "-", stdin=c1)
    assert r.rc == 0 and r.out == f"{pki.pin(k1)} CN=one.test\n"
    f1 = pki.write("one.pem", c1)
    f2 = pki.write("two.pub", pki.pub_pem(k2))
    r = kp("pin", f1, f2)
    assert r.rc == 0
    assert r.out.splitlines() == [f"{pki.pin(k1)} CN=one.test  ({f1})", f"{pki.pin(k2)} EC P-256 public key  ({f2})"]
    r = kp("pin", "-q", f1, f2)
    assert r.out.split() == [pki.pin(k1), pki.pin(k2)]


def test_encrypted_private_keys(kp, pki, openssl):
    key = pki.key("ec")
    want = openssl.pub(pki.pub_pem(key))
    enc = serialization.BestAvailableEncryption(b"s3cret")
    pem = pki.write("enc.pem", key.private_bytes(ENC.PEM, PF.PKCS8, enc))
    der = pki.write("enc.der", key.private_bytes(ENC.DER, PF.PKCS8, enc))
    trad = pki.write("trad.pem", key.private_bytes(ENC.PEM, PF.TraditionalOpenSSL, enc))
    for f in (pem, der, trad):
        r = kp("pin", f)
        assert r.rc == 1 and r.out == ""
        assert r.err == f"keypin: pin: {f}: the private key is encrypted: give --passphrase or set KEYPIN_PASSPHRASE\n"
        r = kp("pin", "--passphrase", "s3cret", f)
        assert r.rc == 0 and _pins(r.out) == [want], r
        r = kp("pin", f, env={"KEYPIN_PASSPHRASE": "s3cret"})
        assert r.rc == 0 and _pins(r.out) == [want], r
        r = kp("pin", "--passphrase", "wrong", f)
        assert r.rc == 1 and "wrong passphrase" in r.err and r.err.startswith("keypin: pin: ")


def test_bad_inputs(kp, pki, tmp_path):
    garbage = pki.write("garbage.bin", b"\x30\x03\x02\x01" + b"junk" * 10)
    r = kp("pin", garbage)
    assert r.rc == 1 and r.out == ""
    assert r.err == (f"keypin: pin: {garbage}: not a certificate, chain, public key, private key or CSR "
                     "(PEM or DER)\n")
    text = pki.write("text.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    r = kp("pin", text)
    assert r.rc == 1 and r.err.startswith(f"keypin: pin: {text}: bad CERTIFICATE")
    empty = pki.write("empty", b"")
    r = kp("pin", empty)
    assert r.rc == 1 and r.err == f"keypin: pin: {empty}: empty input\n"
    r = kp("pin", tmp_path / "nope.pem")
    assert r.rc == 1 and r.err.startswith("keypin: pin: cannot read ") and "No such file" in r.err
    r = kp("pin")
    assert r.rc == 1 and r.err.startswith("keypin: pin: give one or more FILEs")
    other = pki.write("dh.pem", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    r = kp("pin", other)
    assert r.rc == 1 and "unsupported PEM block 'X509 CRL'" in r.err


def test_host_prints_the_presented_chain_per_depth(kp, pki, tls_server, openssl):
    key = pki.key("ec")
    crt, kf = pki.server_files("srv", key, "server.test")
    srv = tls_server(crt, kf)
    r = kp("pin", "--host", srv.addr, "--sni", "server.test", "--timeout", "5")
    assert r.rc == 0, r
    assert r.out.splitlines() == [  # top of the chain first and "depth N: ", as the device reports it
        f"depth 1: {openssl.cert(pki.pem(pki.inter))} CN=Test Intermediate CA",
        f"depth 0: {pki.pin(key)} CN=server.test",
    ]
    assert "leaf only" not in r.err
    assert srv.handshakes >= 1


def test_host_unreachable(kp):
    r = kp("pin", "--host", "127.0.0.1:1", "--timeout", "3")
    assert r.rc == 1 and r.out == ""
    assert r.err.startswith("keypin: pin: cannot connect to 127.0.0.1:1: ")
    r = kp("pin", "--host", "127.0.0.1:99999")
    assert r.rc == 1 and r.err == "keypin: pin: bad port in '127.0.0.1:99999'\n"


def test_chain_reader_fallbacks():
    from keypin_cli import tlsprobe

    class Cert:
        def __init__(self, der):
            self.der = der

        def public_bytes(self, enc):
            assert enc == 2  # _ssl.ENCODING_DER
            return self.der

    class Obj:
        def get_unverified_chain(self):
            return [Cert(b"leaf"), Cert(b"inter")]

    class Py310to312:  # the C object has the method, the Python wrapper does not
        _sslobj = Obj()

    class Py313:
        def get_unverified_chain(self):
            return [b"leaf", b"inter"]

    class Neither:
        _sslobj = object()

        def getpeercert(self, binary_form=False):
            assert binary_form
            return b"leaf"

    assert tlsprobe._chain_from(Py310to312()) == ([b"leaf", b"inter"], True)
    assert tlsprobe._chain_from(Py313()) == ([b"leaf", b"inter"], True)
    assert tlsprobe._chain_from(Neither()) == ([b"leaf"], False)


# ------------------------------------------- issue 12.8: every certificate the device pins


def _odd_certificates():
    """Certificates the device pins (its DER walk reaches the SPKI) that cryptography refuses or
    cannot format: a UTF8String subject with invalid UTF-8, X.509 version 4, a 3-letter country."""
    import datetime

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def build(subject):
        k = ec.generate_private_key(ec.SECP256R1())
        t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        c = (cx509.CertificateBuilder().subject_name(subject)
             .issuer_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "Odd CA")]))
             .public_key(k.public_key()).serial_number(4242).not_valid_before(t)
             .not_valid_after(t + datetime.timedelta(days=30)).sign(k, hashes.SHA256()))
        return c.public_bytes(serialization.Encoding.DER)

    base = build(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "QQQQ")]))
    v4 = bytearray(base)
    i = v4.index(b"\xa0\x03\x02\x01\x02")
    v4[i + 4] = 3
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        country = build(cx509.Name([cx509.NameAttribute(NameOID.COUNTRY_NAME, "ZZZ", _validate=False)]))
    return {"bad-utf8": base.replace(b"QQQQ", b"\xff\xfeQQ"), "version-4": bytes(v4), "country-ZZZ": country}


def test_pin_pins_every_certificate_the_device_pins(tmp_path, upy):
    import base64
    KEYPIN = str(ROOT / ".venv/bin/keypin")
    for name, der in _odd_certificates().items():
        f = tmp_path / f"{name}.der"
        f.write_bytes(der)
        pem = tmp_path / f"{name}.pem"
        b64 = base64.encodebytes(der).decode().replace("\n", "")
        pem.write_text("-----BEGIN CERTIFICATE-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
                       + "\n-----END CERTIFICATE-----\n")
        dev = upy(["-c", f"import keypin.spki as s\nprint(s.pin_of(open({str(f)!r}, 'rb').read()))"], cwd=tmp_path,
                  path=str(ROOT / "lib"))
        assert dev.returncode == 0, dev.stderr
        want = dev.stdout.strip()
        assert want.startswith("sha256/"), dev.stdout
        for src in (f, pem):
            r = subprocess.run([KEYPIN, "pin", str(src)], capture_output=True, text=True, check=False, timeout=60)
            assert r.returncode == 0, (name, r.stderr)
            assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
            pin, desc = r.stdout.strip().split(" ", 1)
            assert pin == want, name
            if name != "country-ZZZ":  # cryptography formats that one (C=ZZZ), only with a warning
                assert desc == "(unparsable subject)", (name, r.stdout)
