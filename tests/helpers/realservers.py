"""Real servers on loopback for integration tests: nginx, mosquitto, pebble (+ certbot).

Each server is a subprocess started with its own config in a directory under the given
work directory, on 127.0.0.1 and a free port (or the one given). Starting waits (bounded)
until the port accepts connections and raises ServerError with the server's log tail if it
does not. stop() terminates, waits, then kills the whole process group (nginx workers
included); every server is also a context manager and is stopped by an atexit hook, and is
started under `setpriv --pdeathsig TERM` so it dies with this process even after a SIGKILL.
Each server keeps its files in workdir/<name> (workdir/<name>-2 ... if taken), so several
servers can share one work directory. certbot() calls sharing a workdir must not run at once.

    with Nginx(tmp, "leaf.crt", "leaf.key") as web:      # HTTPS, TLS 1.2 + 1.3
        web.port, web.root, web.requests(), web.reload(certfile=..., keyfile=...)
    with Mosquitto(tmp, "chain.crt", "leaf.key") as mq:  # TLS on .port, plain TCP on .plain_port
        sub = mq.subscriber("t/#"); mq.publish("t/1", b"x"); sub.result() == [("t/1", b"x")]
    with Pebble(tmp) as ca:                              # Let's Encrypt's ACME test CA
        paths = certbot(ca, tmp, "device.example.test")  # cert, chain, fullchain, privkey

A missing binary raises MissingBinary ("... apt-get install <pkg>").
"""
import atexit
import datetime
import hashlib
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CERTBOT_TIMEOUT = 120.0

BINARIES = {
    "nginx": ("/usr/sbin/nginx", "nginx-light"),
    "mosquitto": ("/usr/sbin/mosquitto", "mosquitto"),
    "mosquitto_passwd": ("/usr/bin/mosquitto_passwd", "mosquitto"),
    "mosquitto_sub": ("/usr/bin/mosquitto_sub", "mosquitto-clients"),
    "mosquitto_pub": ("/usr/bin/mosquitto_pub", "mosquitto-clients"),
    "pebble": ("/usr/bin/pebble", "pebble"),
    "certbot": ("/usr/bin/certbot", "certbot"),
}


class ServerError(RuntimeError):
    """A server did not start, reload or answer as expected (message carries its log tail)."""


class MissingBinary(ServerError):
    pass


class CertbotError(ServerError):
    pass


def binary(name):
    """Absolute path of a required binary; MissingBinary names the Debian package."""
    path, pkg = BINARIES[name]
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if found:
        return found
    raise MissingBinary(f"{name} not found ({path}): apt-get install {pkg}  (or run tools/deps.sh)")


def _guarded(argv):
    """argv prefixed so the process gets SIGTERM if this Python process dies (even by SIGKILL).

    Linux sends the parent-death signal when the *thread* that started the child exits: start
    servers from a thread that outlives them (pytest's main thread does).
    """
    setpriv = shutil.which("setpriv") or ("/usr/bin/setpriv" if os.access("/usr/bin/setpriv", os.X_OK) else None)
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)


def _children(pid):
    """Pids of live (non-zombie) children of pid, from /proc."""
    out = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def free_port():
    """A loopback TCP port that was free a moment ago (bind port 0, then release)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(*paths, lines=40):
    """The last lines of each existing file, labelled, for error messages."""
    out = []
    for p in paths:
        p = pathlib.Path(p)
        if p.exists():
            text = p.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {p} (last {len(text)} lines)\n" + "\n".join(text))
        else:
            out.append(f"--- {p} (missing)")
    return "\n".join(out)


def _subdir(workdir, stem):
    """workdir/stem, or workdir/stem-2, -3 ... if taken: servers can share one work directory."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        d = workdir / (stem if n == 1 else f"{stem}-{n}")
        try:
            d.mkdir()
            return d.resolve()
        except FileExistsError:
            n += 1


def served_leaf_der(port, host=HOST, server_hostname=None, timeout=3.0):
    """DER of the leaf certificate the TLS server on port presents (no verification)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as s, \
            ctx.wrap_socket(s, server_hostname=server_hostname) as t:
        return t.getpeercert(binary_form=True)


def leaf_der(certfile):
    """DER of the first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(pathlib.Path(certfile).read_bytes()).public_bytes(
        serialization.Encoding.DER)


def spki_sha256(cert):
    """SHA-256 of the SubjectPublicKeyInfo of a certificate (x509 object, DER, PEM bytes or path)."""
    if isinstance(cert, (str, pathlib.Path)):
        cert = pathlib.Path(cert).read_bytes()
    if isinstance(cert, bytes):
        cert = (x509.load_pem_x509_certificate(cert) if cert.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(cert))
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


# ---------------------------------------------------------------- process lifetime

_LIVE = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all():
    with _LIVE_LOCK:
        live = list(_LIVE)
    for srv in live:
        try:
            srv.stop()
        except (OSError, subprocess.SubprocessError) as e:  # best effort, keep stopping the others
            print(f"realservers: stopping {srv!r} at exit: {e!r}", file=sys.stderr)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _end(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Signal the leader, wait, then SIGKILL its whole process group; reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # leftovers (nginx workers if the master died, a stuck leader): kill the group
    _kill_group(proc)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL'd, cannot really happen
        pass


class _Server:
    """Common lifetime: spawn in its own session, wait until ready, stop reliably."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self):
        self.proc = None
        self._out = None

    # subclasses: _argv(), _env(), _logs() (files for error messages), _ready() -> bool

    def _env(self):
        return None

    def _logs(self):
        return [self.stdout_path]

    def _ready(self):
        return all(port_open(p) for p in self._ports())

    def _spawn(self):
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError(f"{self.name} already running (pid {self.proc.pid})")
        self._out = open(self.stdout_path, "ab")  # noqa: SIM115 - kept open while the server runs
        self.proc = subprocess.Popen(_guarded(self._argv()), cwd=self.dir, env=self._env(), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise ServerError(f"{self.name} exited with {rc} while starting:\n" + tail(*self._logs()))
            if self._ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} not ready on {self._ports()} after {START_TIMEOUT:.0f} s:\n"
                                  + tail(*self._logs()))
            time.sleep(0.05)

    def _start(self, retries=3):
        """Spawn; if a port was picked here and the start failed (port race), pick again."""
        for attempt in range(retries):
            try:
                return self._spawn()
            except ServerError:
                if attempt == retries - 1 or not self._repick_ports():
                    raise

    def _repick_ports(self):
        return False

    def _reap(self):
        _end(self.proc, self.stop_signal)
        if self._out:
            self._out.close()
            self._out = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self):
        """Terminate, wait, kill (process group); idempotent."""
        if self.proc is not None:
            self._reap()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _copy_pair(certfile, keyfile, dst_cert, dst_key):
    """Copy cert/key in place (same paths the server config names), key private."""
    if certfile is not None:
        data = pathlib.Path(certfile).read_bytes()
        tmp = dst_cert.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst_cert)
    if keyfile is not None:
        data = pathlib.Path(keyfile).read_bytes()
        tmp = dst_key.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dst_key)


# ---------------------------------------------------------------- nginx

_NGINX_CONF = """\
{user}worker_processes 1;
worker_shutdown_timeout 5s;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 128; }}
http {{
    types {{ text/html html; text/plain txt; application/json json; application/octet-stream bin; }}
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    log_format keypin escape=json '{{"time": "$time_iso8601", "remote": "$remote_addr", '
        '"request": "$request", "method": "$request_method", "uri": "$request_uri", '
        '"status": "$status", "body_length": "$content_length", "request_length": "$request_length", '
        '"bytes_sent": "$body_bytes_sent", "ssl_protocol": "$ssl_protocol", "ssl_cipher": "$ssl_cipher", '
        '"sni": "$ssl_server_name", "host": "$host", "user_agent": "$http_user_agent", '
        '"transfer_encoding": "$sent_http_transfer_encoding", "connection_requests": "$connection_requests"}}';
    access_log {dir}/access.log keypin;
    sendfile off;
    gzip off;
    keepalive_timeout 10s;
    client_max_body_size 4m;
    map $redirect_n $redirect_next {{
        default /checkin; {redirect_map}
    }}
    server {{
        listen {host}:{port} ssl;
        server_name _;
        ssl_certificate {dir}/server.crt;
        ssl_certificate_key {dir}/server.key;
        ssl_protocols {protocols};
        ssl_session_cache off;
        ssl_session_tickets off;
        root {dir}/www;
        location = /checkin {{
            default_type application/json;
            return 200 '{{"ok": true}}\\n';
        }}
        location ~ ^/redirect/(?<redirect_n>[0-9]+)$ {{
            return 302 $redirect_next;
        }}
        location = /redirect-away {{
            return 302 https://elsewhere.example.test/;
        }}
        location = /big {{
            default_type application/octet-stream;
            alias {dir}/big.bin;
        }}
        location /files/ {{
            alias {dir}/www/;
        }}
        location /chunked/ {{
            alias {dir}/www/;
            chunked_transfer_encoding on;
            sub_filter_types *;
            sub_filter '@@keypin-never-matches@@' '';
        }}
        location /nolen/ {{
            alias {dir}/www/;
            chunked_transfer_encoding off;
            sub_filter_types *;
            sub_filter '@@keypin-never-matches@@' '';
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


class Nginx(_Server):
    """nginx serving HTTPS on 127.0.0.1:port with certfile (leaf [+ chain]) and keyfile.

    Locations: /checkin (GET|POST -> 200 application/json {"ok": true}), /files/NAME (static from
    .root), /chunked/NAME (the same files with Transfer-Encoding: chunked for HTTP/1.1 clients), /nolen/NAME (the
    same files close-delimited: no Content-Length, no chunked),
    /redirect/N (302 -> /redirect/N-1 ... /redirect/1 -> /checkin, absolute URL on the request's
    Host and this port), /redirect-away (302 -> https://elsewhere.example.test/), /big (BIG_SIZE
    bytes, content = big_content()), anything else 404.
    """

    name = "nginx"
    BIG_SIZE = 200 * 1024
    MAX_REDIRECTS = 20

    def __init__(self, workdir, certfile, keyfile, port=None, protocols=("TLSv1.2", "TLSv1.3")):
        super().__init__()
        self.exe = binary("nginx")
        self.dir = _subdir(workdir, "nginx")
        self._given_port = port is not None
        self.port = port or free_port()
        self.protocols = tuple(protocols)
        self.root = self.dir / "www"
        self.root.mkdir()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "tmp" / sub).mkdir(parents=True)
        self.big = self.dir / "big.bin"
        self.big.write_bytes(self.big_content())
        self.certfile = self.dir / "server.crt"
        self.keyfile = self.dir / "server.key"
        _copy_pair(certfile, keyfile, self.certfile, self.keyfile)
        self.conf = self.dir / "nginx.conf"
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.stdout_path = self.dir / "stderr.log"
        self._write_conf()
        self._start()

    @classmethod
    def big_content(cls):
        """The deterministic bytes served at /big."""
        line = b"keypin big body 0123456789abcdefghijklmnopqrstuvwxyz\n"  # 54 bytes
        return (line * (cls.BIG_SIZE // len(line) + 1))[:cls.BIG_SIZE]

    def _write_conf(self):
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the workdir
        rmap = " ".join(f"{n} /redirect/{n - 1};" for n in range(2, self.MAX_REDIRECTS + 1))
        self.conf.write_text(_NGINX_CONF.format(user=user, dir=self.dir, host=HOST, port=self.port,
                                                protocols=" ".join(self.protocols), redirect_map=rmap))

    def _repick_ports(self):
        if self._given_port:
            return False
        self.port = free_port()
        self._write_conf()
        return True

    def _argv(self):
        return [self.exe, "-p", f"{self.dir}/", "-e", str(self.error_log), "-c", str(self.conf),
                "-g", "daemon off;"]

    def _ports(self):
        return [self.port]

    def _logs(self):
        return [self.error_log, self.stdout_path]

    def url(self, path="/"):
        return f"https://{HOST}:{self.port}{path}"

    def served_leaf(self):
        return served_leaf_der(self.port)

    def _error_log_size(self):
        return self.error_log.stat().st_size if self.error_log.exists() else 0

    def _wait_serving(self, want, what, log_from=None, old_workers=()):
        deadline = time.monotonic() + START_TIMEOUT
        got = None
        while time.monotonic() < deadline:
            if log_from is not None:  # nginx refused the new config/cert: it says so, keeps the old one
                with open(self.error_log, "rb") as f:
                    f.seek(log_from)
                    if b"[emerg]" in f.read():
                        raise ServerError(f"nginx {what} refused:\n" + tail(*self._logs()))
            # old workers still accept connections until they got the master's QUIT: wait them out
            if old_workers and set(old_workers) & set(_children(self.proc.pid)):
                time.sleep(0.02)
                continue
            try:
                got = self.served_leaf()
                if got == want:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise ServerError(f"nginx {what}: still not serving the new certificate after {START_TIMEOUT:.0f} s "
                          f"(serving a different one: {got is not None}):\n" + tail(*self._logs()))

    def reload(self, certfile=None, keyfile=None):
        """Swap cert/key in place, SIGHUP the master, wait until the new leaf is served."""
        if not self.running:
            raise ServerError("nginx is not running:\n" + tail(*self._logs()))
        _copy_pair(certfile, keyfile, self.certfile, self.keyfile)
        want = leaf_der(self.certfile)
        log_from = self._error_log_size()
        old_workers = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGHUP)
        self._wait_serving(want, "reload", log_from, old_workers)

    def restart(self, certfile=None, keyfile=None):
        """Stop, swap cert/key, start again on the same port."""
        self.stop()
        _copy_pair(certfile, keyfile, self.certfile, self.keyfile)
        self._start()
        self._wait_serving(leaf_der(self.certfile), "restart")

    def requests(self):
        """Access-log entries (dicts; status, body_length, request_length, bytes_sent as int)."""
        out = []
        if not self.access_log.exists():
            return out
        for line in self.access_log.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            for k in ("status", "body_length", "request_length", "bytes_sent", "connection_requests"):
                rec[k] = int(rec[k]) if rec.get(k, "").isdigit() else None
            out.append(rec)
        return out


# ---------------------------------------------------------------- mosquitto

class MosquittoClientError(ServerError):
    pass


class Subscriber:
    """A mosquitto_sub running in the background; result() waits and returns [(topic, payload)]."""

    def __init__(self, broker, topic, count, timeout, qos=0):
        self.broker, self.topic, self.count, self.timeout = broker, topic, count, timeout
        self.client_id = f"keypin-sub-{uuid.uuid4().hex[:10]}"
        argv = [binary("mosquitto_sub"), *broker._client_args(), "-i", self.client_id, "-t", topic,
                "-q", str(qos), "-C", str(count), "-W", str(int(max(1, timeout))), "-F", "%t %x"]
        self.proc = subprocess.Popen(_guarded(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._deadline = time.monotonic() + timeout + 5
        # Subscribed only when the broker has sent SUBACK: a publish after this returns is seen.
        try:
            broker.wait_log(f"Sending SUBACK to {self.client_id}", timeout=min(timeout, START_TIMEOUT),
                            alive=lambda: self.proc.poll() is None)
        except ServerError:
            _, err = self._finish()
            raise MosquittoClientError(f"mosquitto_sub -t {topic} did not subscribe (rc {self.proc.returncode}): "
                                       f"{err.decode(errors='replace').strip()}\n" + tail(broker.log_path))

    def _finish(self):
        try:
            out, err = self.proc.communicate(timeout=max(0.1, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _end(self.proc)
            out, err = self.proc.communicate()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return out, err

    def result(self):
        """Wait for count messages (or the timeout); return what arrived, in order."""
        out, err = self._finish()
        msgs = []
        for line in out.decode().splitlines():
            topic, _, hexpayload = line.rpartition(" ")
            msgs.append((topic, bytes.fromhex(hexpayload)))
        rc = self.proc.returncode
        # mosquitto_sub -W: exit status 27 on timeout; callers compare len(result) with count
        if rc not in (0, 27) and not msgs:
            raise MosquittoClientError(f"mosquitto_sub -t {self.topic} failed (rc {rc}): "
                                       + err.decode(errors="replace").strip())
        return msgs

    def stop(self):
        _end(self.proc)
        with _LIVE_LOCK:
            _LIVE.discard(self)


class Mosquitto(_Server):
    """mosquitto 2.0: TLS listener on 127.0.0.1:port (certfile = leaf + intermediate, keyfile),
    plain TCP listener on .plain_port for host-side clients; allow_anonymous false with users."""

    name = "mosquitto"

    def __init__(self, workdir, certfile, keyfile, port=None, users=None, plain_port=None):
        super().__init__()
        self.exe = binary("mosquitto")
        self.dir = _subdir(workdir, "mosquitto")
        self.users = dict(users) if users is not None else {"dev": "secret"}
        if not self.users:
            raise ValueError("Mosquitto needs at least one user (allow_anonymous is false)")
        self.user, self.password = next(iter(self.users.items()))  # host-side helpers log in as this one
        self._given = (port is not None, plain_port is not None)
        self.port = port or free_port()
        self.plain_port = plain_port or free_port()
        while self.plain_port == self.port:
            self.plain_port = free_port()
        self.certfile = self.dir / "server.crt"
        self.keyfile = self.dir / "server.key"
        _copy_pair(certfile, keyfile, self.certfile, self.keyfile)
        self.passwd = self.dir / "passwd"
        self._make_passwd()
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.stdout_path = self.dir / "stdout.log"
        self._write_conf()
        self._start()

    def _make_passwd(self):
        tool = binary("mosquitto_passwd")
        first = True
        for user, pw in self.users.items():
            args = [tool, "-b"] + (["-c"] if first else []) + [str(self.passwd), user, pw]
            r = subprocess.run(args, check=False, capture_output=True, timeout=30)
            if r.returncode:
                raise ServerError(f"mosquitto_passwd failed: {r.stderr.decode(errors='replace')}")
            first = False
        os.chmod(self.passwd, 0o600)

    def _write_conf(self):
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwd}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp true",
            "connection_messages true",
            "max_keepalive 3600",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # no privilege drop: it must read the workdir
        lines += [
            "",
            f"listener {self.port} {HOST}",
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            "",
            f"listener {self.plain_port} {HOST}",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _repick_ports(self):
        if any(self._given):
            return False
        self.port, self.plain_port = free_port(), free_port()
        self._write_conf()
        return True

    def _argv(self):
        return [self.exe, "-c", str(self.conf)]

    def _ports(self):
        return [self.port, self.plain_port]

    def _logs(self):
        return [self.log_path, self.stdout_path]

    def log(self):
        """The broker's log so far (text)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text, timeout=10.0, start=0, alive=None):
        """Wait until text appears in the log (after character offset start); return its offset."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.log().find(text, start)
            if i >= 0:
                return i
            if time.monotonic() > deadline or (alive is not None and not alive()):
                raise ServerError(f"mosquitto log: {text!r} not seen after {timeout:.0f} s:\n"
                                  + tail(self.log_path))
            time.sleep(0.02)

    def restart(self, certfile=None, keyfile=None):
        """Stop, swap cert/key in place, start again on the same ports."""
        self.stop()
        _copy_pair(certfile, keyfile, self.certfile, self.keyfile)
        self._start()

    def _client_args(self, user=None, password=None):
        return ["-h", HOST, "-p", str(self.plain_port), "-u", user or self.user,
                "-P", self.password if password is None else password]

    def subscriber(self, topic, count=1, timeout=10, qos=0):
        """Start mosquitto_sub in the background; returns once the broker acknowledged the SUBSCRIBE."""
        return Subscriber(self, topic, count, timeout, qos)

    def subscribe(self, topic, count=1, timeout=10, qos=0):
        """Subscribe and wait for count messages (or timeout); [(topic, payload_bytes)]."""
        return self.subscriber(topic, count, timeout, qos).result()

    def publish(self, topic, payload, retain=False, qos=0, user=None, password=None):
        """mosquitto_pub on the plain port; raises MosquittoClientError if refused."""
        if isinstance(payload, str):
            payload = payload.encode()
        argv = [binary("mosquitto_pub"), *self._client_args(user, password), "-t", topic,
                "-q", str(qos)]
        argv += ["-s"] if payload else ["-n"]  # -s with empty stdin is an error
        if retain:
            argv.append("-r")
        r = subprocess.run(argv, check=False, input=payload or None, capture_output=True, timeout=30)
        if r.returncode:
            raise MosquittoClientError(f"mosquitto_pub -t {topic} failed (rc {r.returncode}): "
                                       + (r.stderr or r.stdout).decode(errors="replace").strip())


def mqtt_connack(port, user=None, password=None, tls=False, client_id="keypin-probe", timeout=5.0,
                 host=HOST, server_hostname=None):
    """Send one MQTT 3.1.1 CONNECT and return the CONNACK return code (0 accepted, 5 not
    authorised, ...); then DISCONNECT. tls: False (plain TCP), True (TLS, no verification) or an
    ssl.SSLContext (used as given, with server_hostname)."""
    def s(b):
        return len(b).to_bytes(2, "big") + b
    flags = 0x02
    payload = s(client_id.encode())
    if user is not None:
        flags |= 0x80
        payload += s(user.encode())
        if password is not None:
            flags |= 0x40
            payload += s(password.encode())
    var = s(b"MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big")
    body = var + payload
    assert len(body) < 128
    pkt = bytes([0x10, len(body)]) + body
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            ctx = tls if isinstance(tls, ssl.SSLContext) else None
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=server_hostname)
        sock.sendall(pkt)
        resp = b""
        while len(resp) < 4:
            d = sock.recv(4 - len(resp))
            if not d:
                raise ConnectionError(f"broker closed the connection before CONNACK ({resp!r})")
            resp += d
        if resp[0] != 0x20 or resp[1] != 2:
            raise ConnectionError(f"not a CONNACK: {resp!r}")
        if resp[3] == 0:
            sock.sendall(b"\xe0\x00")
        return resp[3]
    finally:
        sock.close()


# ---------------------------------------------------------------- pebble

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_tls_pair(d):
    """A small CA (ca.pem = the bundle clients trust) and a localhost/127.0.0.1 leaf for pebble."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("keypin pebble TLS CA")).issuer_name(
        _name("keypin pebble TLS CA")).public_key(ca_key.public_key()).serial_number(
        x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=30)).add_extension(x509.BasicConstraints(ca=True, path_length=0),
                                                         critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject).public_key(
        key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(
        now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (d / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    os.chmod(d / "key.pem", 0o600)


class Pebble(_Server):
    """Let's Encrypt's ACME test CA on 127.0.0.1:port (ACME) and mgmt_port (management API).

    Every start makes a new root and intermediate. Validation always succeeds
    (PEBBLE_VA_ALWAYS_VALID=1), no nonce rejection. .ca_bundle is the CA of pebble's own TLS
    certificate (for REQUESTS_CA_BUNDLE); .generation changes at every start.
    """

    name = "pebble"

    def __init__(self, workdir, port=None, mgmt_port=None):
        super().__init__()
        self.exe = binary("pebble")
        self.dir = _subdir(workdir, "pebble")
        self._given = (port is not None, mgmt_port is not None)
        self.port = port or free_port()
        self.mgmt_port = mgmt_port or free_port()
        while self.mgmt_port == self.port:
            self.mgmt_port = free_port()
        _make_tls_pair(self.dir)
        self.ca_bundle = self.dir / "ca.pem"
        self.conf = self.dir / "pebble-config.json"
        self.stdout_path = self.dir / "pebble.log"
        self._ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        self.generation = None
        self._write_conf()
        self._start()

    @property
    def dir_url(self):
        return f"https://{HOST}:{self.port}/dir"

    def _write_conf(self):
        self.conf.write_text(json.dumps({"pebble": {
            "listenAddress": f"{HOST}:{self.port}",
            "managementListenAddress": f"{HOST}:{self.mgmt_port}",
            "certificate": str(self.dir / "cert.pem"),
            "privateKey": str(self.dir / "key.pem"),
            "httpPort": 5002,  # unused: PEBBLE_VA_ALWAYS_VALID
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}, indent=2))

    def _repick_ports(self):
        if any(self._given):
            return False
        self.port, self.mgmt_port = free_port(), free_port()
        self._write_conf()
        return True

    def _argv(self):
        return [self.exe, "-config", str(self.conf)]

    def _env(self):
        env = dict(os.environ)
        env.update(PEBBLE_VA_ALWAYS_VALID="1", PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="100")
        return env

    def _ready(self):
        if not (port_open(self.port) and port_open(self.mgmt_port)):
            return False
        try:
            self._get(self.dir_url)
            return True
        except OSError:
            return False

    def _spawn(self):
        super()._spawn()
        self.generation = uuid.uuid4().hex

    def _get(self, url, timeout=5):
        with urllib.request.urlopen(url, context=self._ctx, timeout=timeout) as r:
            return r.read()

    def _mgmt(self, path):
        return self._get(f"https://{HOST}:{self.mgmt_port}{path}").decode()

    def roots(self):
        """PEM of the current issuing root (management API /roots/0)."""
        return self._mgmt("/roots/0")

    def intermediates(self):
        """PEM of the current intermediate (management API /intermediates/0)."""
        return self._mgmt("/intermediates/0")

    def restart(self):
        """Stop and start on the same ports: a new root and intermediate (verified)."""
        old = self.roots() if self.running else None
        self.stop()
        self._start()
        if old is not None and self.roots() == old:
            raise ServerError("pebble restarted but kept its root")


# ---------------------------------------------------------------- certbot

def make_csr(key_path, domain, out_path):
    """Write a PEM CSR for domain (CN + SAN) signed by the PEM private key at key_path."""
    key = serialization.load_pem_private_key(pathlib.Path(key_path).read_bytes(), None)
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(domain))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
           .sign(key, hashes.SHA256()))
    pathlib.Path(out_path).write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return pathlib.Path(out_path)


def certbot(pebble, workdir, domain, *, key_type="ecdsa", reuse_key=True, renew=False, csr=None, key=None,
            deploy_hook=None, http_port=None, extra_args=(), timeout=CERTBOT_TIMEOUT):
    """Run certbot for real against pebble; return dict(cert, chain, fullchain, privkey) of Paths.

    First issuance: certonly -d domain --key-type K [--reuse-key]. renew=True: certonly again with
    --force-renewal on the same lineage (key kept when reuse_key; reuse_key=False renews with
    --no-reuse-key --new-key: a new key). csr=PATH (or key=PEM key path without csr: a CSR is made
    from it): certonly --csr, files written under workdir/csr/, privkey = key (None if not given).
    Config/work/logs dirs live in workdir/certbot (shared by calls with the same workdir).
    """
    exe = binary("certbot")
    base = pathlib.Path(workdir).resolve() / "certbot"
    cfg, work, logs = base / "config", base / "work", base / "logs"
    for d in (cfg, work, logs):
        d.mkdir(parents=True, exist_ok=True)
    # Pebble forgets its accounts when it restarts: drop certbot's stale account then.
    marker = base / "pebble-generation"
    if not marker.exists() or marker.read_text() != pebble.generation:
        shutil.rmtree(cfg / "accounts", ignore_errors=True)
        marker.write_text(pebble.generation)
    port = http_port or free_port()
    argv = [exe, "certonly", "--standalone", "--http-01-port", str(port), "--http-01-address", HOST,
            "--server", pebble.dir_url, "--config-dir", str(cfg), "--work-dir", str(work),
            "--logs-dir", str(logs), "--agree-tos", "-m", "x@example.test", "--non-interactive",
            "--no-random-sleep-on-renew", "--no-eff-email", "--max-log-backups", "0"]
    if csr is not None or key is not None:
        out = base.parent / "csr"
        out.mkdir(exist_ok=True)
        if csr is None:
            csr = make_csr(key, domain, out / "request.csr")
        paths = {"cert": out / "cert.pem", "chain": out / "chain.pem", "fullchain": out / "fullchain.pem"}
        for p in paths.values():  # certbot writes 0000_cert.pem next to an existing file
            p.unlink(missing_ok=True)
        argv += ["--csr", str(csr), "-d", domain, "--cert-path", str(paths["cert"]),
                 "--chain-path", str(paths["chain"]), "--fullchain-path", str(paths["fullchain"])]
        paths["privkey"] = pathlib.Path(key) if key is not None else None
    else:
        argv += ["-d", domain, "--cert-name", domain, "--key-type", key_type]
        argv += ["--reuse-key"] if reuse_key else ["--no-reuse-key"]
        if renew:
            argv.append("--force-renewal")
            if not reuse_key:
                argv.append("--new-key")
        else:
            argv.append("--keep-until-expiring")
        live = cfg / "live" / domain
        paths = {k: live / f"{k}.pem" for k in ("cert", "chain", "fullchain", "privkey")}
    if deploy_hook:
        argv += ["--deploy-hook", deploy_hook]
    argv += list(extra_args)
    env = dict(os.environ)
    env["REQUESTS_CA_BUNDLE"] = str(pebble.ca_bundle)
    env.pop("SSL_CERT_FILE", None)
    proc = subprocess.Popen(_guarded(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=base, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(proc)
        output, _ = proc.communicate()
        raise CertbotError(f"certbot timed out after {timeout:.0f} s: {' '.join(argv)}\n"
                           + output.decode(errors="replace")[-3000:] + "\n" + tail(logs / "letsencrypt.log"))
    finally:
        if proc.poll() is None:
            _end(proc)
    if proc.returncode:
        raise CertbotError(f"certbot failed (rc {proc.returncode}): {' '.join(argv)}\n"
                           + output.decode(errors="replace")[-3000:] + "\n" + tail(logs / "letsencrypt.log"))
    missing = [str(p) for p in paths.values() if p is not None and not p.exists()]
    if missing:
        raise CertbotError(f"certbot succeeded but did not write {missing}:\n"
                           + output.decode(errors="replace")[-3000:])
    return paths
