"""Issue 12 point 6: one deadline for connect + handshake (+ the response), which a peer that
drips bytes cannot stretch. A relay forwards a real TLS server's bytes to the device one byte
every 0.2 s, well inside any per-read timeout: without an overall deadline the handshake would
go on for minutes. No wall-clock assertion: the relay counts what it forwarded before the device
hung up, and the device's own error says which budget ran out."""
import json
import pathlib
import socket
import subprocess
import threading
import time

from helpers.pki import CA, new_key, pin, pin_document
from helpers.servers import TLSServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = "device.example.test"


class DripRelay:
    """client -> server bytes pass at once; server -> client bytes one at a time, `gap` s apart.
    Bounded: stops after `limit` seconds or when either side closes."""

    def __init__(self, target_port, gap=0.2, limit=60):
        self.target, self.gap, self.limit = target_port, gap, limit
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.forwarded = 0  # server bytes delivered to the client
        self.server_bytes = 0  # server bytes the relay received
        self.client_closed = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.ls.settimeout(20)
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        s = socket.create_connection(("127.0.0.1", self.target))
        pending = bytearray()
        end = time.monotonic() + self.limit
        c.setblocking(False)
        s.setblocking(False)
        try:
            while time.monotonic() < end:
                for src, dst in ((c, s),):
                    try:
                        d = src.recv(4096)
                        if d == b"":
                            self.client_closed.set()
                            return
                        dst.sendall(d)
                    except BlockingIOError:
                        pass
                try:
                    d = s.recv(4096)
                    if d == b"" and not pending:
                        return
                    pending += d
                    self.server_bytes += len(d)
                except BlockingIOError:
                    pass
                if pending:
                    try:
                        c.send(pending[:1])
                        del pending[:1]
                        self.forwarded += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.client_closed.set()
                        return
                time.sleep(self.gap)
        finally:
            c.close()
            s.close()

    def stop(self):
        self.t.join(self.limit + 5)
        self.ls.close()


DEV = r'''
import json, sys, time, keypin
t0 = time.ticks_ms()
from keypin.store import PinStore
keypin.use_store(PinStore(sys.argv[1]))
out = {}
try:
    s = keypin.connect(sys.argv[2], int(sys.argv[3]), timeout=float(sys.argv[4]), addr="127.0.0.1")
    out["connected"] = True
    s.close()
except OSError as e:
    out["connected"] = False
    out["error"] = repr(e)
except keypin.KeypinError as e:
    out["connected"] = False
    out["error"] = type(e).__name__ + ": " + str(e)
out["ms"] = time.ticks_diff(time.ticks_ms(), t0)
print(json.dumps(out))
'''


def test_slow_drip_handshake_is_cut_by_the_deadline(tmp_path):
    ca = CA("Drip")
    key = new_key()
    crt, k = ca.write_chain(tmp_path, "srv", key, HOST)
    store = tmp_path / "pins.json"
    store.write_bytes(pin_document({"api": {"hosts": [HOST], "active": pin(key), "backups": [pin(new_key())],
                                            "retired": [], "policy": "leaf"}}))
    script = tmp_path / "drip_dev.py"
    script.write_text(DEV)
    with TLSServer(crt, k) as srv:
        relay = DripRelay(srv.port, gap=0.2, limit=60)
        p = subprocess.run([str(ROOT / "tools/upy"), str(script), str(store), HOST, str(relay.port), "2"],
                           capture_output=True, text=True, timeout=90, check=False)
        relay.stop()
    assert p.stdout.strip(), p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["connected"] is False, out
    assert "110" in out["error"] or "deadline" in out["error"], out
    # the device hung up long before the server's handshake bytes were all delivered
    assert relay.server_bytes > 0
    assert relay.forwarded < relay.server_bytes, (relay.forwarded, relay.server_bytes)
    assert relay.forwarded < 60, relay.forwarded  # 2 s budget at 5 bytes/s: about 10 bytes
