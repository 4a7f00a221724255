"""The handshake stage of `make bench` (tools/lab/bench/handshakes.py) at a few rounds: every
figure is produced from real handshakes (pinned verdict "active", CA-verified accepted) against
one nginx, and the Certificate message sizes are what the listeners put on the wire. Timing values
are not asserted (no wall-clock assertions): only that each figure exists and is a ratio of two
positive medians."""
import pathlib
import sys

from helpers.geny import wire_certificate_message

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools" / "lab" / "bench"))
import handshakes


def test_stage_figures(tmp_path, monkeypatch):
    seen = {}
    real = handshakes.message_bytes

    def spy(ng):  # also read each listener's Certificate message off the wire with openssl
        out, kinds = real(ng)
        seen.update({k: wire_certificate_message(p, handshakes.RSA_HOST if "rsa" in k else handshakes.HOST) for k, p in
                     (("geny_ecdsa_full", ng.port), ("geny_ecdsa_lean", ng.ports["lean"]),
                      ("geny_rsa_full", ng.ports["rsa"]), ("geny_rsa_lean", ng.ports["rsa-lean"]))})
        return out, kinds
    monkeypatch.setattr(handshakes, "message_bytes", spy)
    servers, rows = [], []
    res = handshakes.run(tmp_path, servers, rows, n=3)
    assert all(not s.running for s in servers)
    for k in handshakes.KEYS:
        assert k in res
    sizes = res["certificate_message_bytes"]
    assert sizes == seen and set(sizes) == {"geny_ecdsa_full", "geny_ecdsa_lean", "geny_rsa_full", "geny_rsa_lean"}
    # the shapes: 4 certificates (ECDSA default chain) and 3 (RSA) against the leaf alone
    assert sizes["geny_ecdsa_full"] > 3 * sizes["geny_ecdsa_lean"] and sizes["geny_rsa_full"] > 3 * sizes["geny_rsa_lean"]
    for k, v in res.items():
        if "_over_" in k:
            assert isinstance(v, float) and v > 0, (k, v)
    assert set(res["handshake_ms"]) == {"geny_plain", "geny_pinned", "geny_ca", "lean_plain", "lean_pinned",
                                        "rsa_plain", "rsa_pinned", "rsa_ca", "rsa_lean_plain", "rsa_lean_pinned"}
    assert any("3 link signatures (3 P-384)" in b for _, b in rows)
