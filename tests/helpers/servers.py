"""Real TLS servers on loopback for tests (CPython ssl in a thread).

TLSServer(certfile, keyfile) accepts connections, completes the TLS handshake, records
every decrypted byte it receives, and answers each line with b"OK " + line. It is bounded:
each connection times out after a few seconds and stop() joins the thread.
"""
import socket
import ssl
import threading


class TLSServer:
    def __init__(self, certfile, keyfile, host="127.0.0.1", port=0, max_version=None):
        self.ctx = None  # certfile None: a plain TCP server for subclasses (tests/helpers/scripted.py)
        if certfile is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(str(certfile), str(keyfile))
        if max_version:
            self.ctx.maximum_version = max_version
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"{host}:{self.port}"
        self.received = b""
        self.accepted = 0
        self.handshakes = 0
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
            self.accepted += 1
            c.settimeout(5)
            try:
                self._one(c)
            except OSError as e:  # handshake refused by the client (ssl.SSLError), timeouts, resets
                self.errors.append(repr(e))
            finally:
                c.close()

    def _one(self, c):
        # one accepted connection (subclasses answer differently)
        with self.ctx.wrap_socket(c, server_side=True) as s:
            self.handshakes += 1
            buf = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                self.received += d
                buf += d
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    s.sendall(b"OK " + line + b"\n")

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.lsock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
