"""A CPython HTTPS/1.1 server on loopback for the HTTP-feature tests of keypin.https.

Paths: /checkin (GET/POST, JSON), /chunked/N (N chunks), /big/N (N bytes, Content-Length),
/nolen/N (N bytes, close-delimited), /redirect/N (N redirects then /checkin),
/redirect-away (to an unpinned host), /redirect-pinned/PORT (to pinned.example.test:PORT),
/bad (not HTTP), /longheader.
"""
import http.server
import json
import ssl
import threading


def _body(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


class _H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, code, body, ctype="application/octet-stream", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        srv.log.append((self.command, self.path, dict(self.headers), body))
        p = self.path
        if p == "/checkin":
            self._send(200, json.dumps({"ok": True, "got": body.decode()}).encode(), "application/json")
        elif p.startswith("/chunked/"):
            k = int(p.split("/")[2])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = _body(k * 1000)
            for i in range(k):
                c = data[i * 1000:(i + 1) * 1000]
                self.wfile.write(b"%x;ext=1\r\n" % len(c) + c + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif p.startswith("/big/"):
            self._send(200, _body(int(p.split("/")[2])))
        elif p.startswith("/nolen/"):
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(_body(int(p.split("/")[2])))
            self.close_connection = True
        elif p.startswith("/redirect/"):
            k = int(p.split("/")[2])
            self._send(302, b"", headers=[("Location", "/checkin" if k <= 1 else f"/redirect/{k - 1}")])
        elif p == "/redirect-away":
            self._send(302, b"", headers=[("Location", "https://elsewhere.example.test/x")])
        elif p.startswith("/redirect-pinned/"):
            port = p.split("/")[2]
            self._send(301, b"", headers=[("Location", f"https://pinned.example.test:{port}/checkin")])
        elif p == "/bad":
            self.wfile.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            self.close_connection = True
        elif p == "/longheader":
            self._send(200, b"x", headers=[("X-Long", "a" * 5000)])
        else:
            self._send(404, b"not found")

    do_GET = do_POST = _handle


class HTTPSServer:
    def __init__(self, certfile, keyfile):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.log = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.log = self.httpd.log
        self.t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.t.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


body = _body
