"""The command table: --help lists every subcommand, each has an example; errors and exit codes."""
import pathlib
import subprocess

from keypin_cli import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALL = ["pin", "keygen", "csr", "pinset", "check", "image", "deploy", "provision", "status", "flash",
       "completion", "devs", "doctor", "certbot-hook", "signer", "reports"]
ALL += [c[0] for c in cli.COMMANDS if c[0] == "release"]  # H4's, issue 12/17 (registered last)


def test_help_lists_all_subcommands(kp):
    r = kp("--help")
    assert r.rc == 0
    for name in ALL:
        assert f"\n    {name}" in r.out, name
    assert [c[0] for c in cli.COMMANDS] == ALL


def test_every_subcommand_help_has_an_example(kp):
    for name in ALL:
        r = kp(name, "--help")
        assert r.rc == 0, name
        assert "example" in r.out and f"keypin {name}" in r.out.split("example", 1)[1] or name == "certbot-hook"
    assert "keypin certbot-hook --pinset" in kp("certbot-hook", "--help").out
    for action in ("new", "add-backup", "retire", "show", "list", "set-signer", "sign"):
        r = kp("pinset", action, "--help")
        assert r.rc == 0 and f"example:\n  keypin pinset {action} " in r.out, action


def test_usage_errors_exit_1_with_the_prefix(kp):
    r = kp("frobnicate")
    assert r.rc == 1 and r.err.startswith("keypin: argument COMMAND: invalid choice: 'frobnicate'")
    r = kp()
    assert r.rc == 1 and r.err.startswith("keypin: the following arguments are required: COMMAND")
    r = kp("keygen", "--out", "x", "--type", "dsa")
    assert r.rc == 1 and r.err.startswith("keypin: keygen: argument --type: invalid choice: 'dsa'")
    r = kp("pinset")
    assert r.rc == 1 and r.err.startswith("keypin: pinset: the following arguments are required: ACTION")


def test_console_script_is_installed(tmp_path):
    exe = ROOT / ".venv" / "bin" / "keypin"
    assert exe.is_file(), "run sh tools/deps.sh"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.startswith("keypin ")
    r = subprocess.run([str(exe), "pin", str(tmp_path / "none.pem")], capture_output=True, text=True, check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"keypin: pin: cannot read {tmp_path / 'none.pem'}: ")


def test_bash_completion_from_the_parser(tmp_path):
    """keypin completion bash, loaded into a real bash: commands, pinset actions and options complete."""
    import shutil
    if not shutil.which("bash"):
        raise AssertionError("bash not found: apt-get install bash")
    script = subprocess.run([str(ROOT / ".venv/bin/keypin"), "completion", "bash"], capture_output=True, text=True,
                            check=True).stdout
    (tmp_path / "c.sh").write_text(script)

    def complete(*words):
        w = " ".join(f"'{x}'" for x in words)
        code = f'. {tmp_path / "c.sh"}; COMP_WORDS=({w}); COMP_CWORD={len(words) - 1}; _keypin; echo "${{COMPREPLY[@]}}"'
        r = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
        return r.stdout.split()
    assert complete("keypin", "pins") == ["pinset"]
    assert complete("keypin", "d") == ["deploy", "devs", "doctor"]
    assert "retire" in complete("keypin", "pinset", "") and "sign" in complete("keypin", "pinset", "")
    assert complete("keypin", "pinset", "new", "--active") == ["--active", "--active-key"]
    assert complete("keypin", "check", "--s") == ["--set", "--sni"]
    assert complete("keypin", "reports", "--t") == ["--tls", "--topic", "--timeout"]
