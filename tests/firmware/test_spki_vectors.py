"""Vector pins: cryptography, the openssl command line and the device code all agree."""
import base64
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def openssl_pin(der_path):
    if not shutil.which("openssl"):
        pytest.fail("openssl not found: apt-get install openssl")
    pub = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der_path), "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                          check=True, capture_output=True).stdout
    dig = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=spki,
                         check=True, capture_output=True).stdout
    return "sha256/" + base64.b64encode(dig).decode()


def test_vectors_match_openssl(vectors_dir):
    rows = [line.split() for line in (vectors_dir / "index.txt").read_text().splitlines()]
    assert len(rows) >= 13
    kinds = {r[0] for r in rows}
    for k in ("leaf_rsa2048", "leaf_rsa3072", "leaf_rsa4096", "leaf_ec256", "leaf_ec384", "leaf_ec521",
              "leaf_ed25519", "leaf_ed448", "v1_no_extensions", "long_subject", "chain_root",
              "chain_intermediate", "chain_leaf"):
        assert k in kinds
    for name, pin in rows:
        assert openssl_pin(vectors_dir / f"{name}.der") == pin, name


def test_device_pin_of_cli_script(vectors_dir, tmp_path):
    # the device library run as a user would: tools/upy with a script printing pins
    script = tmp_path / "pins.py"
    script.write_text("import sys\nfrom keypin.spki import pin_of, IMPL\nprint(IMPL)\n"
                      "for p in sys.argv[1:]:\n    print(pin_of(open(p, 'rb').read()))\n")
    rows = [line.split() for line in (vectors_dir / "index.txt").read_text().splitlines()]
    out = subprocess.run([str(ROOT / "tools/upy"), str(script)] + [str(vectors_dir / f"{n}.der") for n, _ in rows],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "native"
    assert out[1:] == [p for _, p in rows]


def test_xtensawin_without_toolchain_says_what_is_missing(tmp_path):
    env = dict(os.environ, PATH="/usr/bin:/bin")
    if shutil.which("xtensa-esp32-elf-gcc", path=env["PATH"]):
        pytest.fail("this test expects no xtensa toolchain on /usr/bin:/bin")
    p = subprocess.run(["make", "-s", "natmod", "ARCH=xtensawin"], cwd=ROOT, env=env, check=False,
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "xtensa-esp32-elf-gcc not found" in p.stderr and "ESP-IDF" in p.stderr


def test_boot_and_main_run_in_unix_port(tmp_path):
    for f in ("boot.py", "main.py"):
        p = subprocess.run([str(ROOT / "tools/upy"), str(ROOT / f)], check=False, capture_output=True,
                           text=True, cwd=tmp_path, timeout=120)
        if f == "boot.py":
            assert p.returncode == 0, (f, p.stdout, p.stderr)
        else:  # no config.json here: main.py says how to configure and exits non-zero, no traceback
            assert p.returncode != 0 and "not started" in p.stdout and "Traceback" not in p.stderr, \
                (f, p.stdout, p.stderr)
