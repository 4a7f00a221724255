# The device cycle of keypin's main.py done without keypin, for make bench's side-by-side heap
# figure (device_cycle_heap_over_unpinned): the same three exchanges with the same servers, over
# a plain CERT_NONE tls context: HTTPS GET of the update's .version, MQTTS connect + retained
# status publish with umqtt.simple, HTTPS POST check-in (bare HTTP/1.1). Reads config.json as the
# app does. Prints "GOOD 1" when all three worked. Run in the Unix port with -X heapsize=...
import json
import socket
import sys

import tls

with open("config.json") as f:
    CFG = json.load(f)
HOSTS = CFG.get("hosts") or {}
CTX = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
CTX.verify_mode = tls.CERT_NONE


def _conn(host, port):
    ai = socket.getaddrinfo(HOSTS.get(host, host), port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.connect(ai[-1])
    return CTX.wrap_socket(s, server_hostname=host)


def _https(method, url, body=b""):
    # -> (status, body); the URL is https://host:port/path
    rest = url[8:]
    hp, _, path = rest.partition("/")
    host, _, port = hp.partition(":")
    s = _conn(host, int(port or 443))
    try:
        s.write(b"%s /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (method, path.encode(), host.encode(), len(body)))
        if body:
            s.write(body)
        status = int(s.readline().split(None, 2)[1])
        n = -1
        while True:
            line = s.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        return status, (s.read(n) if n >= 0 else s.read())
    finally:
        s.close()


class _Ussl:
    # umqtt.simple 1.3.4 does `import ussl; ussl.wrap_socket(sock, **ssl_params)`
    @staticmethod
    def wrap_socket(sock, server_hostname=None, **kw):
        return CTX.wrap_socket(sock, server_hostname=server_hostname)


sys.modules["ussl"] = _Ussl()


def cycle():
    u = CFG["update"]["url"]
    st, _ = _https(b"GET", u + ".version")
    assert st == 200, st
    from umqtt.simple import MQTTClient
    m = CFG["mqtt"]
    host = m["host"]
    c = MQTTClient(CFG["device_id"], HOSTS.get(host, host), m["port"], user=m["user"], password=m["password"],
                   ssl=True, ssl_params={"server_hostname": host})
    c.connect()
    c.set_callback(lambda t, msg: None)
    c.subscribe(b"keypin/%s/cmd" % CFG["device_id"].encode())
    c.publish(b"keypin/%s/status" % CFG["device_id"].encode(), json.dumps({"device": CFG["device_id"]}),
              retain=True)
    c.check_msg()
    st, _ = _https(b"POST", CFG["https"]["url"], json.dumps({"device": CFG["device_id"], "seq": 1}).encode())
    assert 100 <= st < 600, st  # the app logs the status, whatever it is
    c.disconnect()
    return 1


print("GOOD", cycle())
