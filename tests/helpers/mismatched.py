"""A TLS server that presents one certificate and signs with another key.

This is the replayed-backup-certificate attack: an attacker has the (public) backup
certificate but not its private key. CPython's ssl refuses such a pair, so this uses
tlslite-ng, a real TLS implementation in Python, which does not check the pairing.
"""
import socket
import threading

from tlslite import X509, HandshakeSettings, TLSConnection, X509CertChain
from tlslite.errors import BaseTLSException
from tlslite.utils.keyfactory import parsePEMKey


class MismatchedServer:
    def __init__(self, certfile, keyfile):
        with open(certfile) as f:
            pems = f.read().split("-----END CERTIFICATE-----")
        certs = []
        for p in pems:
            if "BEGIN CERTIFICATE" in p:
                x = X509()
                x.parse(p + "-----END CERTIFICATE-----\n")
                certs.append(x)
        self.chain = X509CertChain(certs)
        with open(keyfile) as f:
            self.key = parsePEMKey(f.read(), private=True)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.app_bytes = 0
        self.handshakes_ok = 0
        self.errors = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except (TimeoutError, OSError):
                continue
            c.settimeout(5)
            try:
                conn = TLSConnection(c)
                s = HandshakeSettings()
                s.maxVersion = (3, 3)
                conn.handshakeServer(certChain=self.chain, privateKey=self.key, settings=s)
                self.handshakes_ok += 1
                while True:
                    d = conn.read()
                    if not d:
                        break
                    self.app_bytes += len(d)
            except (BaseTLSException, OSError) as e:  # handshake aborted by the client, timeouts, resets
                self.errors.append(repr(e))
            finally:
                c.close()

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.lsock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
