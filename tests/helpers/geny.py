"""Local look-alikes of Let's Encrypt's Generation Y chains (cryptography), and nginx serving them.

Same key types and sizes and the same number of certificates as the real default chains, with
the extensions Let's Encrypt puts in (SKI, AKI, AIA, CRL distribution point, DV policy, EKU, two
embedded SCTs in the leaf; shorter names and URLs), so the signature checks a client runs are the
real ones and the Certificate message has a comparable size (not checked against a real chain):

  ecdsa (certbot's default key type), 4 certificates presented:
    leaf P-256 <- "YE1" P-384 <- "Root YE" P-384 (cross-signed by "ISRG Root X2" P-384)
    <- "ISRG Root X2" (cross-signed by "ISRG Root X1" RSA-4096); trust anchor: X1 (self-signed)
  rsa (certbot --key-type rsa), 3 certificates presented:
    leaf RSA-2048 <- "YR1" RSA-2048 <- "Root YR" RSA-4096 (cross-signed by "ISRG Root X1")

    ch = GenY.build("ecdsa", d, "device.example.test")    # d/ecdsa-fullchain.pem, -leaf.pem, ...
    with LeanNginx(d, ch) as web:                         # web.port: full chain, web.lean_port: leaf
        ...

All names are stand-ins (".test" URLs, "(stand-in)" in every CA name): nothing here is real.
"""
import datetime
import os
import pathlib
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)

from helpers.realservers import (
    HOST,
    START_TIMEOUT,
    MissingBinary,
    Nginx,
    ServerError,
    _copy_pair,
    free_port,
    leaf_der,
    served_leaf_der,
)

NOW = datetime.datetime.now(datetime.timezone.utc)
_DV_POLICY = ObjectIdentifier("2.23.140.1.2.1")  # CA/B Forum domain-validated
_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _name(cn, org="ISRG"):
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sct_list(n=2):
    """A well-formed SignedCertificateTimestampList (RFC 6962) of n v1 SCTs with ECDSA-sized signatures."""
    scts = b""
    for i in range(n):
        sig = b"\x30\x45\x02\x20" + bytes([0x11 + i]) * 32 + b"\x02\x21\x00" + bytes([0x22 + i]) * 32
        body = (b"\x00" + bytes([0xA0 + i]) * 32 + struct.pack(">Q", 1_750_000_000_000 + i) + b"\x00\x00"
                + b"\x04\x03" + struct.pack(">H", len(sig)) + sig)
        scts += struct.pack(">H", len(body)) + body
    tls = struct.pack(">H", len(scts)) + scts
    n = len(tls)
    head = b"\x04" + (bytes([n]) if n < 128 else bytes([0x81, n]) if n < 256 else b"\x82" + struct.pack(">H", n))
    return x509.UnrecognizedExtension(_SCT_LIST, head + tls)


def _cert(subject, key, issuer, issuer_key, *, days, aia, crl, ca=False, pathlen=None, sign_ok=False,
          hosts=(), eku=True, sct=False):
    """ca: CA certificate (keyCertSign, cRLSign; sign_ok adds digitalSignature, as issuing
    intermediates have); else a server leaf (digitalSignature, + keyEncipherment for RSA)."""
    algo = hashes.SHA384() if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else hashes.SHA256()
    ku = x509.KeyUsage(digital_signature=sign_ok or not ca, content_commitment=False,
                       key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                       key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                       decipher_only=False)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=days))
         .add_extension(ku, critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen), critical=True)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    b = b.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia))]), critical=False)
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
    b = b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(_DV_POLICY, None)]), critical=False)
    b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier(crl)], None, None, None)]), critical=False)
    if sct:
        b = b.add_extension(_sct_list(), critical=False)
    return b.sign(issuer_key, algo)


def pem(c):
    return c.public_bytes(serialization.Encoding.PEM)


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


def key_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _p384():
    return ec.generate_private_key(ec.SECP384R1())


def _rsa(bits):
    return rsa.generate_private_key(65537, bits)


@dataclass
class GenY:
    """One issued chain. presented: what the server sends (leaf first); anchor: the self-signed
    root a CA-verifying client trusts (ISRG Root X1 look-alike for both shapes)."""
    kind: str
    host: str
    key: object
    presented: list = field(default_factory=list)
    anchor: object = None
    files: dict = field(default_factory=dict)

    @property
    def leaf(self):
        return self.presented[0]

    @classmethod
    def build(cls, kind, d, host, key=None, x1=None, names=()):
        """kind "ecdsa" or "rsa"; key: the leaf's private key (a new one by default, P-256 or
        RSA-2048); x1: (key, cert) of the X1 look-alike to share between chains; names: more
        DNS names in the leaf (SAN) besides host. Writes
        d/<kind>-fullchain.pem, -leaf.pem, -privkey.pem, -anchor.pem (X1) and returns the chain."""
        d = pathlib.Path(d)
        d.mkdir(parents=True, exist_ok=True)
        x1k, x1c = x1 or make_x1()
        x1n = x1c.subject
        if kind == "ecdsa":
            key = key or ec.generate_private_key(ec.SECP256R1())
            x2k, yek, ik = _p384(), _p384(), _p384()
            x2n, yen, i_n = _name("ISRG Root X2 (stand-in)"), _name("Root YE (stand-in)"), \
                _name("YE1 (stand-in)", "Let's Encrypt")
            x2 = _cert(x2n, x2k, x1n, x1k, ca=True, days=1800, aia="http://x1.i.example.test/",
                       crl="http://x1.c.example.test/", eku=False)
            ye = _cert(yen, yek, x2n, x2k, ca=True, days=1800, aia="http://x2.i.example.test/",
                       crl="http://x2.c.example.test/", eku=False)
            inter = _cert(i_n, ik, yen, yek, ca=True, days=1095, aia="http://ye.i.example.test/",
                          crl="http://ye.c.example.test/", pathlen=0, sign_ok=True)
            chain = [inter, ye, x2]
            leaf_aia, leaf_crl = "http://ye1.i.example.test/", "http://ye1.c.example.test/42.crl"
        elif kind == "rsa":
            key = key or _rsa(2048)
            yrk, ik = _rsa(4096), _rsa(2048)
            yrn, i_n = _name("Root YR (stand-in)"), _name("YR1 (stand-in)", "Let's Encrypt")
            yr = _cert(yrn, yrk, x1n, x1k, ca=True, days=1800, aia="http://x1.i.example.test/",
                       crl="http://x1.c.example.test/", eku=False)
            inter = _cert(i_n, ik, yrn, yrk, ca=True, days=1095, aia="http://yr.i.example.test/",
                          crl="http://yr.c.example.test/", pathlen=0, sign_ok=True)
            chain = [inter, yr]
            leaf_aia, leaf_crl = "http://yr1.i.example.test/", "http://yr1.c.example.test/42.crl"
        else:
            raise ValueError(kind)
        leaf = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]), key, inter.subject, ik, days=45, aia=leaf_aia, crl=leaf_crl, hosts=(host, *names), sct=True)
        g = cls(kind, host, key, [leaf, *chain], x1c)
        g.files = {"fullchain": d / f"{kind}-fullchain.pem", "leaf": d / f"{kind}-leaf.pem",
                   "privkey": d / f"{kind}-privkey.pem", "anchor": d / f"{kind}-anchor.pem"}
        g.files["fullchain"].write_bytes(b"".join(pem(c) for c in g.presented))
        g.files["leaf"].write_bytes(pem(leaf))
        g.files["privkey"].write_bytes(key_pem(key))
        os.chmod(g.files["privkey"], 0o600)
        g.files["anchor"].write_bytes(pem(x1c))
        return g

    def ders(self):
        return [der(c) for c in self.presented]


def make_x1():
    """The ISRG Root X1 look-alike: self-signed RSA-4096, the trust anchor of both shapes."""
    k = _rsa(4096)
    n = _name("ISRG Root X1 (stand-in)", "Internet Security Research Group")
    c = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
         .not_valid_after(NOW + datetime.timedelta(days=3650))
         .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
         .sign(k, hashes.SHA256()))
    return k, c


def certificate_message_bytes(ders):
    """Size of the TLS 1.2 Certificate handshake message carrying these DER certificates
    (4-byte handshake header, 3-byte list length, 3-byte length per certificate)."""
    return 4 + 3 + sum(3 + len(c) for c in ders)


def wire_certificate_message(port, host, timeout=30):
    """Length of the TLS 1.2 Certificate handshake message the listener on loopback port sends,
    as openssl s_client -msg sees it on the wire."""
    exe = shutil.which("openssl")
    if not exe:
        raise MissingBinary("openssl not found: apt-get install openssl")
    p = subprocess.run([exe, "s_client", "-connect", f"{HOST}:{port}", "-servername", host, "-tls1_2", "-msg"],
                       input=b"", capture_output=True, timeout=timeout, check=False)
    m = re.search(rb"<<< TLS 1\.2, Handshake \[length ([0-9a-f]+)\], Certificate", p.stdout)
    if m is None:
        raise ServerError(f"openssl s_client -msg saw no Certificate message on port {port}:\n"
                          + p.stdout.decode(errors="replace")[-1500:])
    return int(m.group(1), 16)


_EXTRA_SERVER = """
    server {{
        listen {host}:{port} ssl;
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        ssl_session_cache off;
        ssl_session_tickets off;
        location = /checkin {{
            default_type application/json;
            return 200 '{{"ok": true}}\\n';
        }}
        location / {{
            return 404;
        }}
    }}
"""


class LeanNginx(Nginx):
    """One real nginx with more listeners: .port serves `certfile` as Nginx does (all its
    locations); listeners={"lean": (certfile, keyfile), ...} adds a server block per name on its
    own port (.ports[name]), with /checkin. LeanNginx(d, chain) serves chain's fullchain on .port
    and its leaf alone (same key) on .lean_port: the device listener of docs/operations.md.
    A listener given as (certfile, keyfile, server_name) shares .port instead and is chosen by
    the SNI name (the other way docs/operations.md shows). Every file is copied into the server's
    directory; reload(..., listeners={name: (cert, key)}) swaps them in place and waits until each
    listener serves its new leaf."""

    def __init__(self, workdir, chain=None, *, certfile=None, keyfile=None, listeners=None, **kw):
        if chain is not None:
            certfile, keyfile = chain.files["fullchain"], chain.files["privkey"]
            listeners = {"lean": (chain.files["leaf"], chain.files["privkey"]), **(listeners or {})}
        self._given_listeners = dict(listeners or {})
        self._listeners: dict = {}
        self.ports = {}
        super().__init__(workdir, str(certfile), str(keyfile), **kw)

    def _copy_listeners(self, listeners):
        for n, (c, k, *sni) in listeners.items():
            old = self._listeners.get(n, (None, None, None))[2]
            self._listeners[n] = (self.dir / f"{n}.crt", self.dir / f"{n}.key", sni[0] if sni else old)
            _copy_pair(c, k, *self._listeners[n][:2])

    def reload(self, certfile=None, keyfile=None, listeners=None):
        self._copy_listeners(listeners or {})
        super().reload(certfile, keyfile)
        for n in listeners or {}:
            want, deadline = leaf_der(self._listeners[n][0]), time.monotonic() + START_TIMEOUT
            while served_leaf_der(self.ports[n], server_hostname=self._listeners[n][2]) != want:
                if time.monotonic() > deadline:
                    raise ServerError(f"nginx reload: listener {n} still serves its old certificate")
                time.sleep(0.05)

    @property
    def lean_port(self):
        return self.ports["lean"]

    def _pick(self):
        taken = {self.port}
        for n, (_, _, sni) in self._listeners.items():
            p = self.port if sni else free_port()
            while not sni and p in taken:
                p = free_port()
            taken.add(p)
            self.ports[n] = p

    def _write_conf(self):
        if not self._listeners:
            self._copy_listeners(self._given_listeners)
        if set(self.ports) != set(self._listeners):
            self._pick()
        super()._write_conf()
        blocks = "".join(_EXTRA_SERVER.format(host=HOST, port=self.ports[n], cert=c, key=k, name=sni or "_",
                                              protocols=" ".join(self.protocols))
                         for n, (c, k, sni) in self._listeners.items())
        text = self.conf.read_text().rstrip()
        assert text.endswith("}")
        self.conf.write_text(text[:-1] + blocks + "}\n")

    def _repick_ports(self):
        if self._given_port:
            return False
        self.port, self.ports = free_port(), {}
        self._write_conf()
        return True

    def _ports(self):
        return [self.port, *self.ports.values()]
