"""keypin: the host CLI. One table of subcommands (the families live in ``commands/``); one
CommandError; errors print as ``keypin: <command>: <message>``."""
from __future__ import annotations

import argparse
import os
import subprocess  # noqa: F401  (tests patch cli.subprocess.run)
import sys

from . import __version__
from .commands import boards, doctor, keys, pinsets, release, server, shell
from .commands.common import Parser, fmt
from .errors import CommandError

PROG = "keypin"

# (name, function or None for a family of ACTIONs, help, example epilog, argparse setup)
COMMANDS = [
    ("pin", keys.cmd_pin, "print the SPKI pins of certificates, keys, CSRs, or a server's chain",
     ("examples:\n  keypin pin fullchain.pem\n  keypin pin keys/*.pub\n  openssl s_client ... | keypin pin -\n"
     "  keypin pin --host api.example.com:443"), keys.args_pin),
    ("keygen", keys.cmd_keygen, "generate the primary key and N backup keys (PKCS8 PEM, mode 0600)",
     "example:\n  keypin keygen --out keys --backups 2 --type ec-p256", keys.args_keygen),
    ("csr", keys.cmd_csr, "make a CSR for a fixed key (for certbot certonly --csr)",
     "example:\n  keypin csr --key keys/primary.key -d api.example.com -d www.example.com --out api.csr",
     keys.args_csr),
    ("pinset", None, "edit the pin document: new, add-backup, retire, show, list, set-signer, sign",
     "example:\n  keypin pinset list --file pins.json", pinsets.args_pinset),
    ("check", server.cmd_check, "decide like a device: exit 0 active, 2 backup (rotation), 1 mismatch/retired",
     "example:\n  keypin check --host api.example.com:443 --pinset pins.json", server.args_check),
    ("image", boards.cmd_image, "assemble the device filesystem (boot.py, main.py, lib/*.mpy, data, MANIFEST)",
     "example:\n  keypin image --out build/image-xtensawin --arch xtensawin --config config.json --pins pins.json",
     boards.args_image),
    ("deploy", boards.cmd_deploy, "copy an image to a board with mpremote and verify every file (needs a board)",
     "example:\n  keypin deploy --port /dev/ttyUSB0 --image build/image-xtensawin", boards.args_deploy),
    ("provision", boards.cmd_provision, "copy config.json and pins.json to a board and verify (needs a board)",
     "example:\n  keypin provision --port /dev/ttyUSB0 --config config.json --pins pins.json", boards.args_provision),
    ("status", boards.cmd_status, "show the board's keypin state: keypin.setup.show() (needs a board)",
     "example:\n  keypin status --port /dev/ttyUSB0", boards.args_status),
    ("flash", boards.cmd_flash, "erase and flash MicroPython firmware with esptool (needs a board)",
     "example:\n  keypin flash --port /dev/ttyUSB0 --firmware ESP32_GENERIC-20250415-v1.25.0.bin", boards.args_flash),
    ("completion", shell.cmd_completion, "print a bash completion script (commands, actions, options)",
     "example:\n  keypin completion bash > ~/.local/share/bash-completion/completions/keypin", shell.args_completion),
    ("devs", doctor.cmd_devs, "list serial ports (esptool's discovery) and the one --port auto picks",
     "example:\n  keypin devs", doctor.args_devs),
    ("doctor", doctor.cmd_doctor, "check the host setup, serial ports and (with --port) a board; each finding with its fix",
     "example:\n  keypin doctor --port auto", doctor.args_doctor),
    ("certbot-hook", server.cmd_certbot_hook, "certbot --deploy-hook: reload only if the renewed cert kept a pinned key",
     ("example:\n  certbot renew --reuse-key --deploy-hook \\\n"
     "      'keypin certbot-hook --pinset /etc/keypin/pins.json --reload \"systemctl reload nginx\"'"),
     server.args_certbot_hook),
    ("signer", None, "the offline Ed25519 key for signed pin-set updates: keygen, show",
     "example:\n  keypin signer keygen --out /media/offline/signer.key", pinsets.args_signer),
    ("reports", server.cmd_reports, "subscribe to the devices' pin-failure reports (MQTT) and print them",
     "example:\n  keypin reports --host mqtt.example.com --port 8883 --tls --user ops --password ...",
     server.args_reports),
    ("release", release.cmd_release, "sign a release of the device software (A/B update over pinned HTTPS) and publish it",
     ("example:\n  keypin release --key /media/offline/release.key --version 2 --fleet plant-a \\\n"
      "      --image build/image-xtensawin --publish /var/www/keypin/release"), release.args_release),
]



def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, formatter_class=fmt(),
                description="keypin: TLS server key pins (sha256/<base64> of the SPKI) for MicroPython devices.",
                epilog="examples:\n  keypin pin cert.pem\n  keypin keygen --out keys --backups 2\n"
                       "  keypin check --host api.example.com:443 --pinset pins.json\n\n"
                       "keypin COMMAND --help shows each command's options and an example.")
    p.add_argument("--version", action="version", version="keypin " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name, fn, helptext, epilog, adder in COMMANDS:
        sp = sub.add_parser(name, help=helptext, description=helptext, epilog=epilog, formatter_class=fmt())
        adder(sp)
        if fn is not None:
            sp.set_defaults(func=fn)
    return p


def _command_of(argv: list[str]) -> str:
    names = {c[0] for c in COMMANDS}
    for a in argv:
        if a in names:
            return a
    return ""


def run(argv) -> int:
    argv = list(argv)
    cmd = _command_of(argv)
    prefix = f"{PROG}: {cmd}: " if cmd else f"{PROG}: "
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except CommandError as e:
        print(prefix + str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(prefix + "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:  # a file or device problem no command caught closer: named, never a traceback
        where = f": {e.filename}" if e.filename else ""
        print(prefix + f"{e.strerror or e}{where}", file=sys.stderr)
        return 1
    except Exception as e:  # the last net: bad input must never end in a traceback
        if os.environ.get("KEYPIN_DEBUG"):
            raise
        print(prefix + f"unexpected {type(e).__name__}: {e} (a keypin bug, please report it; KEYPIN_DEBUG=1 shows "
              "the traceback)", file=sys.stderr)
        return 1
