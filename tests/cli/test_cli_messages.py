"""Issue 17.4/17.5 messages, through the real console script: a pin written in another notation gets
the right form, a CRLF copy of a pin document is named as such, a mistyped subcommand gets "did
you mean", and no bad input produces a traceback."""
import base64
import hashlib
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYPIN = str(ROOT / ".venv/bin/keypin")
DIGEST = hashlib.sha256(b"some spki").digest()
PIN = "sha256/" + base64.b64encode(DIGEST).decode()
B64 = PIN[len("sha256/"):]


def keypin(*argv, cwd=None):
    r = subprocess.run([KEYPIN, *map(str, argv)], check=False, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def new_set(f, active, backup=None):
    return keypin("pinset", "new", "--file", f, "--name", "api", "--host", "api.example.test", "--active", active,
                  "--backup", backup or "sha256/" + base64.b64encode(hashlib.sha256(b"b").digest()).decode())


def test_other_pin_notations_get_the_right_form(tmp_path):
    f = tmp_path / "pins.json"
    for given, what in ((f'pin-sha256="{B64}"', "an HPKP pin-sha256 value"),
                        (f"pin-sha256={B64};", "an HPKP pin-sha256 value"),
                        (f"sha256//{B64}", "curl's sha256// form"),
                        (B64, "a bare base64 digest")):
        r = new_set(f, given)
        assert r.returncode == 1, r
        assert f"{what}; keypin writes it {PIN}" in r.stderr, (given, r.stderr)
    r = new_set(f, DIGEST.hex())
    assert r.returncode == 1 and f"a hex digest; if it is the SHA-256 of the key's SPKI the pin is {PIN}" in r.stderr
    assert "a certificate fingerprint is not a pin: run keypin pin CERT" in r.stderr
    r = new_set(f, ":".join(f"{b:02X}" for b in DIGEST))  # openssl's fingerprint notation
    assert r.returncode == 1 and f"the pin is {PIN}" in r.stderr, r.stderr
    assert not f.exists()  # nothing written on any of them


def test_a_valid_pin_starting_with_a_slash_is_not_taken_for_curls_form(tmp_path):
    i = 0
    while base64.b64encode(hashlib.sha256(b"%d" % i).digest())[:1] != b"/":
        i += 1
    slash = "sha256/" + base64.b64encode(hashlib.sha256(b"%d" % i).digest()).decode()
    assert slash.startswith("sha256//")
    r = new_set(tmp_path / "pins.json", slash)
    assert r.returncode == 0, r.stderr


def test_crlf_pin_document_is_named(tmp_path):
    f = tmp_path / "pins.json"
    assert new_set(f, PIN).returncode == 0
    crlf = tmp_path / "pins-crlf.json"
    crlf.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    for argv in (["pinset", "show", "--file", crlf], ["check", "--host", "127.0.0.1:1", "--pinset", crlf]):
        r = keypin(*argv)
        assert r.returncode == 1, r
        assert "has Windows line ends (CRLF), devices read LF only" in r.stderr, r.stderr


def test_did_you_mean():
    r = keypin("chek", "--host", "x")
    assert r.returncode == 1 and "invalid choice: 'chek'" in r.stderr and "did you mean 'check'?" in r.stderr
    r = keypin("pinset", "shwo")
    assert r.returncode == 1 and r.stderr.startswith("keypin: pinset: argument ACTION: invalid choice: 'shwo'")
    assert "did you mean 'show'?" in r.stderr
    r = keypin("cert")  # a prefix of one command
    assert "did you mean 'certbot-hook'?" in r.stderr, r.stderr
    r = keypin("zzzzzz")
    assert r.returncode == 1 and "did you mean" not in r.stderr


def test_bad_paths_and_values_never_print_a_traceback(tmp_path):
    """issue 12.8: always keypin: <command>: <message>, exit 1 (keypin() asserts no traceback)."""
    key = tmp_path / "k"
    assert keypin("keygen", "--out", key, "--backups", "1").returncode == 0
    missing = tmp_path / "no" / "such" / "dir"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (["csr", "--key", key / "primary.key", "-d", "api.example.test", "--out", missing / "api.csr"], "csr"),
        (["signer", "keygen", "--out", missing / "signer.key"], "signer"),
        (["keygen", "--out", blocker / "keys"], "keygen"),
        (["pin", "--host", "127.0.0.1:1", "--timeout", "-1"], "pin"),
        (["check", "--host", "127.0.0.1:1", "--pinset", tmp_path / "p.json", "--timeout", "-1"], "check"),
        (["reports", "--host", "127.0.0.1", "--timeout", "-1"], "reports"),
        (["pin", missing], "pin"),
        (["certbot-hook", "--pinset", missing, "--cert", missing], "certbot-hook"),
    ]
    for argv, cmd in cases:
        r = keypin(*argv)
        assert r.returncode == 1, (argv, r.stdout, r.stderr)
        assert r.stderr.startswith(f"keypin: {cmd}: "), (argv, r.stderr)
        assert "Error:" not in r.stderr and "File \"" not in r.stderr, r.stderr  # a message, not a dump
    assert not missing.exists()
