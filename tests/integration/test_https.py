"""keypin.https in the Unix port against a real CPython HTTPS server on loopback."""
import hashlib
import json
import pathlib
import subprocess

import pytest
from helpers.httpserver import HTTPSServer, body
from helpers.pki import CA, new_key, pin, pin_document

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("https")
    ca = CA("HTTPS")
    k, b0 = new_key(), new_key()
    crt, key = ca.write_chain(d, "srv", k, "device.example.test")
    crt_b, key_b = ca.write_chain(d, "b0", b0, "device.example.test")
    with HTTPSServer(str(crt), str(key)) as srv:
        yield {"dir": d, "srv": srv, "pins": (pin(k), pin(b0)), "b0": (crt_b, key_b)}


def store(tmp_path, env, extra=None):
    a, b = env["pins"]
    sets = {"dev": {"hosts": ["device.example.test"], "active": a, "backups": [b], "retired": [],
                    "policy": "leaf"}}
    if extra:
        sets.update(extra)
    p = tmp_path / "pins.json"
    p.write_bytes(pin_document(sets))
    return p


def dev(st, port, sc, arg=None):
    p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / "tests/integration/dev_https.py"), str(st),
                        str(port), sc] + ([arg] if arg else []),
                       check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_post_json_with_host_and_length(tmp_path, env):
    srv = env["srv"]
    n = len(srv.log)
    r = dev(store(tmp_path, env), srv.port, "post")
    assert r["ok"] and r["status"] == 200 and r["verdict"] == "active"
    assert json.loads(r["json"]["got"]) == {"a": 1}
    method, path, headers, b = srv.log[n]
    assert (method, path) == ("POST", "/checkin")
    assert headers["Host"] == f"device.example.test:{srv.port}"
    assert headers["Content-Length"] == str(len(b)) and headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("path,n", [("/chunked/37", 37000), ("/big/150000", 150000), ("/nolen/5000", 5000)])
def test_bodies(tmp_path, env, path, n):
    r = dev(store(tmp_path, env), env["srv"].port, "get", path)
    assert r["ok"] and r["status"] == 200 and r["len"] == n, r
    assert r["sha"] == hashlib.sha256(body(n)).hexdigest()


def test_streaming_save(tmp_path, env):
    r = dev(store(tmp_path, env), env["srv"].port, "save", "/chunked/50")
    assert r["ok"] and r["n"] == 50000 and r["sha"] == hashlib.sha256(body(50000)).hexdigest()


def test_max_body_is_a_clear_error(tmp_path, env):
    for path in ("/big/5000", "/chunked/3"):
        r = dev(store(tmp_path, env), env["srv"].port, "maxbody", path)
        assert not r["ok"] and r["error"] == "HTTPError" and "max_body=1000" in r["msg"], r


def test_redirects_followed_within_limit(tmp_path, env):
    r = dev(store(tmp_path, env), env["srv"].port, "get", "/redirect/3")
    assert r["ok"] and r["status"] == 200
    r = dev(store(tmp_path, env), env["srv"].port, "get", "/redirect/4")
    assert not r["ok"] and "more than 3 redirects" in r["msg"]


def test_redirect_only_to_pinned_hosts(tmp_path, env):
    r = dev(store(tmp_path, env), env["srv"].port, "get", "/redirect-away")
    assert not r["ok"] and "elsewhere.example.test" in r["msg"] and "no pin set" in r["msg"]
    a, b = env["pins"]
    extra = {"other": {"hosts": ["pinned.example.test"], "active": a, "backups": [b], "retired": [],
                       "policy": "leaf"}}
    port = env["srv"].port
    r = dev(store(tmp_path, env, extra), port, "get", f"/redirect-pinned/{port}")
    assert r["ok"] and r["status"] == 200


def test_not_http_and_long_header(tmp_path, env):
    r = dev(store(tmp_path, env), env["srv"].port, "get", "/bad")
    assert not r["ok"] and "not an HTTP response" in r["msg"]
    r = dev(store(tmp_path, env), env["srv"].port, "get", "/longheader")
    assert not r["ok"] and "line longer than 1024" in r["msg"]


def test_rotation_confirmed_after_status_line(tmp_path, env):
    crt_b, key_b = env["b0"]
    st = store(tmp_path, env)
    with HTTPSServer(str(crt_b), str(key_b)) as srv:
        r = dev(st, srv.port, "post")
    assert r["ok"] and r["verdict"] == "rotated"
    from helpers.pki import read_document
    doc = read_document(st)
    assert doc["sets"]["dev"]["active"] == env["pins"][1] and env["pins"][0] in doc["sets"]["dev"]["retired"]
