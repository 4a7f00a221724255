"""Fixtures for the keypin CLI tests: running the CLI in-process, test PKI, loopback TLS servers."""
import base64
import datetime
import hashlib
import io
import ipaddress
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from helpers.servers import TLSServer
from keypin_cli import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def kp(capsys, monkeypatch):
    """kp(*argv, stdin=b"", env={}) -> Result: run the CLI in this process."""

    def run(*argv, stdin=None, env=None):
        with monkeypatch.context() as m:  # env and stdin apply to this call only
            for k, v in (env or {}).items():
                if v is None:
                    m.delenv(k, raising=False)
                else:
                    m.setenv(k, v)
            if stdin is not None:
                m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
            capsys.readouterr()
            rc = cli.run([str(a) for a in argv])
            out, err = capsys.readouterr()
        return Result(rc, out, err)

    monkeypatch.delenv("KEYPIN_PASSPHRASE", raising=False)
    monkeypatch.delenv("RENEWED_LINEAGE", raising=False)
    return run


@pytest.fixture
def kpc(monkeypatch):
    """kpc(*argv, stdin=b"", env={}) -> Result: the same, through the real console script .venv/bin/keypin."""
    exe = ROOT / ".venv" / "bin" / "keypin"
    if not exe.exists():
        pytest.fail(f"{exe} missing: run make deps")

    def run(*argv, stdin=None, env=None):
        e = {k: v for k, v in os.environ.items() if k not in ("KEYPIN_PASSPHRASE", "RENEWED_LINEAGE")}
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        r = subprocess.run([str(exe), *map(str, argv)], input=stdin, capture_output=True, env=e, timeout=120,
                           check=False)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        assert "Traceback" not in err, err
        return Result(r.returncode, out, err)

    return run


def openssl_pin_of_cert(pem: bytes, inform="PEM") -> str:
    """The reference pipeline: openssl x509 -pubkey | openssl pkey -pubin -outform DER | dgst | base64."""
    if not shutil.which("openssl"):
        pytest.fail("openssl not found: apt-get install openssl")
    pub = subprocess.run(["openssl", "x509", "-inform", inform, "-pubkey", "-noout"], input=pem,
                         check=True, capture_output=True).stdout
    return openssl_pin_of_pub(pub)


def openssl_pin_of_pub(pub_pem: bytes) -> str:
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub_pem,
                         check=True, capture_output=True).stdout
    dig = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der,
                         check=True, capture_output=True).stdout
    return "sha256/" + subprocess.run(["base64"], input=dig, check=True, capture_output=True).stdout.decode().strip()


class PKI:
    """Keys, a root + intermediate CA, leaves; PEM/DER writers."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self.root_key = self.key("ec")
        self.root = self.cert(self.root_key, "Test Root CA", ca=True)
        self.int_key = self.key("ec")
        self.inter = self.cert(self.int_key, "Test Intermediate CA", issuer=self.root, issuer_key=self.root_key,
                               ca=True)

    @staticmethod
    def key(kind="ec"):
        if kind == "ec":
            return ec.generate_private_key(ec.SECP256R1())
        if kind == "ec384":
            return ec.generate_private_key(ec.SECP384R1())
        if kind == "rsa":
            return rsa.generate_private_key(65537, 2048)
        if kind == "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        raise ValueError(kind)

    @staticmethod
    def cert(key, cn, issuer=None, issuer_key=None, ca=False, hosts=(), pub=None):
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(issuer.subject if issuer else subject)
             .public_key(pub or key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if hosts:
            names = []
            for h in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    names.append(x509.DNSName(h))
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        signer = issuer_key or key
        algo = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return b.sign(signer, algo)

    def leaf(self, key, host="localhost", hosts=None):
        return self.cert(key, host, issuer=self.inter, issuer_key=self.int_key,
                         hosts=hosts or [host, "127.0.0.1"])

    def sign_csr(self, csr: x509.CertificateSigningRequest):
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.inter.subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(san, critical=False).sign(self.int_key, hashes.SHA256()))

    @staticmethod
    def pem(obj) -> bytes:
        if isinstance(obj, x509.Certificate):
            return obj.public_bytes(serialization.Encoding.PEM)
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    @staticmethod
    def pub_pem(key) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    @staticmethod
    def pin(key) -> str:
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256/" + base64.b64encode(hashlib.sha256(der).digest()).decode()

    def write(self, name: str, data: bytes) -> pathlib.Path:
        p = self.tmp / name
        p.write_bytes(data)
        return p

    def server_files(self, stem, key, host="localhost", chain=True):
        leaf = self.leaf(key, host)
        crt = self.write(stem + ".crt", self.pem(leaf) + (self.pem(self.inter) if chain else b""))
        kf = self.write(stem + ".key", self.pem(key))
        return crt, kf


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


@pytest.fixture
def tls_server():
    """tls_server(certfile, keyfile) -> a running TLSServer; all are stopped at the end of the test."""
    servers = []

    def start(certfile, keyfile):
        s = TLSServer(certfile, keyfile)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def run_micropython(script, cwd, path, timeout=60, extra_env=None):
    if not MICROPYTHON.is_file():
        pytest.fail(f"{MICROPYTHON} missing: run sh tools/deps.sh")
    env = {"MICROPYPATH": path, "PATH": os.environ.get("PATH", "")}
    env.update(extra_env or {})
    return subprocess.run([str(MICROPYTHON), *script], cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)


@pytest.fixture
def upy():
    """upy(argv, cwd, micropypath) -> CompletedProcess of the MicroPython Unix port."""
    return run_micropython


class _OpenSSL:
    cert = staticmethod(openssl_pin_of_cert)
    pub = staticmethod(openssl_pin_of_pub)


@pytest.fixture
def openssl():
    """openssl.cert(pem_or_der, inform) / openssl.pub(pub_pem): pins by the openssl pipeline."""
    return _OpenSSL
