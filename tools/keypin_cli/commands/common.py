"""What every command family shares: the parser class (usage errors exit 1), the help formatter,
common options, nested ACTION tables (pinset, signer) and exclusive file creation."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import material
from ..errors import CommandError


class UsageError(CommandError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1 too: exit 2 means "backup matched" for check
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def fmt():
    return argparse.RawDescriptionHelpFormatter


def passphrase_arg(p):
    p.add_argument("--passphrase", help=f"passphrase of an encrypted private key (or env {material.PASSPHRASE_ENV})")


def add_actions(p, actions, common=None):
    """Nested subcommands: ``actions`` = [(name, fn, help, epilog, adder)]; ``common(sp)`` adds shared options."""
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    sub.required = True
    for name, fn, helptext, epilog, adder in actions:
        sp = sub.add_parser(name, help=helptext, description=helptext, epilog=epilog, formatter_class=fmt())
        if common is not None:
            common(sp)
        adder(sp)
        sp.set_defaults(func=fn)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively (O_EXCL) with ``mode``, write and fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
