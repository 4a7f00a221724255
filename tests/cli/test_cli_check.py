"""keypin check against live loopback TLS servers: exit 0 active, 2 backup, 1 mismatch/retired."""


def _doc(kp, f, active, backups, name="srv", host="127.0.0.1", policy="leaf"):
    argv = ["pinset", "new", "--file", f, "--name", name, "--host", host, "--active", active, "--policy", policy]
    for b in backups:
        argv += ["--backup", b]
    r = kp(*argv)
    assert r.rc == 0, r


def test_exit_codes_active_backup_mismatch_retired(kp, pki, tls_server, tmp_path):
    k_active, k_b1, k_b2, k_other = (pki.key("ec") for _ in range(4))
    f = tmp_path / "pins.json"
    _doc(kp, f, pki.pin(k_active), [pki.pin(k_b1), pki.pin(k_b2)])
    inter_pin = kp("pin", "-q", pki.write("inter.pem", pki.pem(pki.inter))).out.strip()

    srv = tls_server(*pki.server_files("active", k_active))
    r = kp("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 0, r
    assert r.out.startswith("listener: full chain: 2 certificates, ")  # the listener kind (H5, issue 13)
    assert r.out.splitlines()[1:] == [f"depth 1: {inter_pin} CN=Test Intermediate CA",  # top first, as the device
                                      f"depth 0: {pki.pin(k_active)} CN=localhost",
                                      "OK: depth 0 matches the active pin of set srv"]

    srv = tls_server(*pki.server_files("b2", k_b2))
    r = kp("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 2, r
    assert f"ROTATION: depth 0 matches backup 2 {pki.pin(k_b2)} of set srv" in r.out
    assert f"retires {pki.pin(k_active)} and backups 1..1" in r.out
    assert "serves a key outside the group in service" in r.err and "pinset add-active" in r.err  # clusters

    srv = tls_server(*pki.server_files("other", k_other))
    r = kp("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 1 and r.out == ""
    assert r.err == (
        "keypin: check: Certificate pinning failure! (unknown key)\n"
        f"  Peer certificate chain for 127.0.0.1:{srv.port}:\n"
        f"    depth 1: {inter_pin} CN=Test Intermediate CA\n"
        f"    depth 0: {pki.pin(k_other)} CN=localhost\n"
        "  Pinned keys for 127.0.0.1 (set 'srv', policy leaf):\n"
        f"    active: {pki.pin(k_active)}\n"
        f"    backup 1: {pki.pin(k_b1)}\n"
        f"    backup 2: {pki.pin(k_b2)}\n")

    # retire the active key: the server still presenting it now fails, backup 1 (promoted) passes
    assert kp("pinset", "retire", "--file", f, "--set", "srv", "--force", pki.pin(k_active)).rc == 0  # in service
    srv = tls_server(*pki.server_files("active2", k_active))
    r = kp("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 1
    assert r.err.startswith("keypin: check: Certificate pinning failure! (retired key)\n")
    assert f"    retired: {pki.pin(k_active)}\n" in r.err
    assert r.err.endswith(f"(depth 0 presents the RETIRED key {pki.pin(k_active)}: never trusted again)\n")
    srv = tls_server(*pki.server_files("b1", k_b1))
    assert kp("check", "--host", srv.addr, "--pinset", f).rc == 0


def test_policy_any_pins_the_intermediate(kp, pki, tls_server, tmp_path):
    inter_pin = kp("pin", "-q", pki.write("inter.pem", pki.pem(pki.inter))).out.strip()
    spare = pki.key("ec")
    f = tmp_path / "pins.json"
    _doc(kp, f, inter_pin, [pki.pin(spare)], policy="any")
    srv = tls_server(*pki.server_files("any", pki.key("ec")))
    r = kp("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 0, r
    assert r.out.endswith("OK: depth 1 matches the active pin of set srv\n")
    # the same chain under policy leaf fails: only depth 0 counts
    f2 = tmp_path / "leaf.json"
    _doc(kp, f2, inter_pin, [pki.pin(spare)], policy="leaf")
    r = kp("check", "--host", srv.addr, "--pinset", f2)
    assert r.rc == 1 and "policy leaf" in r.err
    # a server without the intermediate in its chain fails under policy any too
    srv2 = tls_server(*pki.server_files("leafonly", pki.key("ec"), chain=False))
    r = kp("check", "--host", srv2.addr, "--pinset", f)
    assert r.rc == 1 and "depth 1" not in r.err


def test_set_lookup_by_host_sni_or_name(kp, pki, tls_server, tmp_path):
    k = pki.key("ec")
    f = tmp_path / "pins.json"
    _doc(kp, f, pki.pin(k), [pki.pin(pki.key("ec"))], name="api", host="api.example.test")
    srv = tls_server(*pki.server_files("s", k, "api.example.test"))
    r = kp("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 1 and r.err == f"keypin: check: no pin set covers 127.0.0.1 in {f} (give --set NAME)\n"
    assert kp("check", "--host", srv.addr, "--pinset", f, "--sni", "api.example.test").rc == 0
    assert kp("check", "--host", srv.addr, "--pinset", f, "--set", "api").rc == 0
    r = kp("check", "--host", srv.addr, "--pinset", f, "--set", "nope")
    assert r.rc == 1 and "no set 'nope'" in r.err


def test_check_errors(kp, pki, tmp_path):
    f = tmp_path / "pins.json"
    _doc(kp, f, pki.pin(pki.key("ec")), [pki.pin(pki.key("ec"))])
    r = kp("check", "--host", "127.0.0.1:1", "--pinset", f, "--timeout", "3")
    assert r.rc == 1 and r.err.startswith("keypin: check: cannot connect to 127.0.0.1:1: ")
    bad = pki.write("bad.json", b"not a pin document\n")
    r = kp("check", "--host", "127.0.0.1:1", "--pinset", bad)
    assert r.rc == 1 and r.err.startswith(f"keypin: check: {bad}: corrupt: ")
    r = kp("check", "--pinset", f)  # usage errors exit 1, never 2 (2 means "backup matched")
    assert r.rc == 1 and r.err.startswith("keypin: check: the following arguments are required: --host")


def test_mismatch_names_the_sni_host_and_json(kpc, pki, tls_server, tmp_path):
    """Through the console script. The report names the host the set was found by (the SNI name), like the device; --json has the verdict."""
    import json
    k, other = pki.key("ec"), pki.key("ec")
    f = tmp_path / "pins.json"
    _doc(kpc, f, pki.pin(k), [pki.pin(pki.key("ec"))], name="api", host="api.example.test")
    srv = tls_server(*pki.server_files("o", other, "api.example.test"))
    r = kpc("check", "--host", srv.addr, "--pinset", f, "--sni", "api.example.test")
    assert r.rc == 1
    assert f"  Peer certificate chain for 127.0.0.1:{srv.port} (SNI api.example.test):\n" in r.err, r.err
    assert "  Pinned keys for api.example.test (set 'api', policy leaf):\n" in r.err
    assert "127.0.0.1 (set" not in r.err
    r = kpc("check", "--host", srv.addr, "--pinset", f, "--sni", "api.example.test", "--json")
    assert r.rc == 1 and r.err.startswith("keypin: check: Certificate pinning failure! (unknown key)")
    j = json.loads(r.out)
    assert (j["command"], j["schema"], j["outcome"], j["exit"], j["set"], j["sni"]) == (
        "check", 1, "unknown", 1, "api", "api.example.test")
    assert [e["depth"] for e in j["chain"]] == [1, 0] and j["chain"][1]["pin"] == pki.pin(other)
    srv = tls_server(*pki.server_files("k", k, "api.example.test"))
    j = json.loads(kpc("check", "--host", srv.addr, "--pinset", f, "--set", "api", "--json").out)
    assert (j["outcome"], j["exit"], j["depth"], j["pin"]) == ("active", 0, 0, pki.pin(k))


def test_check_warns_like_image(kpc, pki, tls_server, tmp_path):
    k = pki.key("ec")
    f = tmp_path / "pins.json"
    assert kpc("pinset", "new", "--file", f, "--name", "solo", "--host", "127.0.0.1", "--active", pki.pin(k),
              "--allow-no-backup").rc == 0
    srv = tls_server(*pki.server_files("solo", k))
    r = kpc("check", "--host", srv.addr, "--pinset", f)
    assert r.rc == 0 and "keypin: note: set solo has no backup pin" in r.err, r
    inter_pin = kpc("pin", "-q", pki.write("inter.pem", pki.pem(pki.inter))).out.strip()
    f2 = tmp_path / "any.json"
    _doc(kpc, f2, inter_pin, [pki.pin(pki.key("ec"))], policy="any")
    r = kpc("check", "--host", srv.addr, "--pinset", f2)
    assert r.rc == 0 and "policy any" in r.err and "without a CA they refuse to connect" in r.err, r


def test_bad_addresses_and_timeouts(kpc, pki, tls_server, tmp_path):
    k = pki.key("ec")
    f = tmp_path / "pins.json"
    _doc(kpc, f, pki.pin(k), [pki.pin(pki.key("ec"))], host="localhost")
    srv = tls_server(*pki.server_files("u", k))
    # a URL is accepted: the host and port are taken from it, the path ignored
    r = kpc("check", "--host", f"https://localhost:{srv.port}/some/path", "--pinset", f)
    assert r.rc == 0, r
    r = kpc("check", "--host", "http://localhost/", "--pinset", f)
    assert r.rc == 1 and "a http:// URL (no TLS there" in r.err, r
    r = kpc("check", "--host", "api.example.com:https", "--pinset", f)
    assert r.rc == 1 and "'https' is not a number" in r.err
    for bad in ("0", "-1", "nan"):
        r = kpc("check", "--host", srv.addr, "--pinset", f, "--timeout", bad)
        assert r.rc == 1 and r.err.startswith("keypin: check: argument --timeout: "), r
        assert "Operation now in progress" not in r.err and "Traceback" not in r.err
    r = kpc("check", "--host", srv.addr, "--pinset", f, "--timeout", "banana")
    assert r.rc == 1 and "argument --timeout: 'banana' is not a number of seconds" in r.err, r


def test_tls_failure_is_a_sentence(kpc, tmp_path):
    """A server that does not speak TLS: no [SSL: ...] tag, no _ssl.c internals."""
    import socket
    import threading
    ls = socket.create_server(("127.0.0.1", 0))
    port = ls.getsockname()[1]

    def serve():
        c, _ = ls.accept()
        c.recv(1024)
        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        c.close()
    t = threading.Thread(target=serve)
    t.start()
    r = kpc("pin", "--host", f"127.0.0.1:{port}", "--timeout", "5")
    t.join(10)
    ls.close()
    assert r.rc == 1 and r.err.startswith(f"keypin: pin: TLS handshake with 127.0.0.1:{port} failed: "), r
    assert "_ssl.c" not in r.err and "[SSL" not in r.err, r.err
