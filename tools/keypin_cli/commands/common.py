"""What every command family shares: the parser class (usage errors exit 1), the help formatter,
common options, nested ACTION tables (pinset, signer) and exclusive file creation."""
from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from pathlib import Path

from .. import material
from ..errors import CommandError


class UsageError(CommandError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1 too: exit 2 means "backup matched" for check
        raise UsageError(f"{did_you_mean(message)}\n{self.format_usage().rstrip()}")


def did_you_mean(message: str) -> str:
    """argparse's "invalid choice: 'chek' (choose from ...)" + the closest choice, as git and pip do."""
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not m:
        return message
    choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
    close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
    prefixed = [c for c in choices if m.group(1) and c.startswith(m.group(1))]
    best = close or prefixed[:1]
    return message + (f"; did you mean '{best[0]}'?" if best else "")


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


def _number(text: str, what: str, conv=float):
    try:
        v = conv(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return v


def seconds(text: str) -> float:
    """A timeout: a number of seconds > 0 (0 would mean non-blocking sockets, not 'no timeout')."""
    v = _number(text, "a number of seconds")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a timeout must be more than 0 seconds")
    return v


def seconds_or_0(text: str) -> float:
    """A duration where 0 means 'no limit'; negative values are refused."""
    v = _number(text, "a number of seconds")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (no limit) or a positive number of seconds")
    return v


def count(text: str) -> int:
    v = _number(text, "a whole number", int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (no limit) or a positive count")
    return v


def tcp_port(text: str) -> int:
    v = _number(text, "a port number", int)
    if not 0 < v < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 1..65535")
    return v


def address(text: str) -> int:
    """A flash address: decimal or 0x hex, >= 0."""
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a flash address (give e.g. 0x1000 or 4096)") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a flash address cannot be negative")
    return v
