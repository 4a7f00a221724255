"""The pin document (docs/pin-document.md): read, validate, edit, write.

Two lines: a one-line JSON object, then ``sha256:`` + hex SHA-256 of the exact bytes of line 1.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re

from .errors import CommandError
from .pins import parse_pin
from .util import atomic_write, is_ip

FORMAT = "keypin-pins/1"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\Z")
_TOP_KEYS = ("format", "seq", "version", "signer", "sets")
_SET_KEYS = ("hosts", "active", "backups", "retired", "policy", "allow_no_backup")
POLICIES = ("leaf", "any")


class DocError(CommandError):
    """The pin document is unreadable or breaks the format."""


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DocError(f"bad set name {name!r}: 1..32 characters of [A-Za-z0-9_.-]")
    return name


def check_host(host: object) -> str:
    if not isinstance(host, str) or not host:
        raise DocError(f"bad host {host!r}")
    if is_ip(host):
        return host
    if host != host.lower():
        raise DocError(f"bad host {host!r}: host names are lower case")
    if not _HOSTNAME.match(host):
        raise DocError(f"bad host {host!r}: not a host name or IP literal")
    return host


def normalize_host(host: str) -> str:
    h = host.strip().lower().rstrip(".")
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    return check_host(h)


def _check_signer(signer: object) -> None:
    if signer is None:
        return
    if not isinstance(signer, str) or not signer.startswith("ed25519/"):
        raise DocError(f'bad signer {signer!r}: null or "ed25519/<base64 of 32 bytes>"')
    try:
        raw = base64.b64decode(signer[8:], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or base64.b64encode(raw).decode() != signer[8:]:
        raise DocError(f"bad signer {signer!r}: not a canonical base64 32-byte Ed25519 key")


def check_set(name: str, s: object) -> None:
    check_name(name)
    if not isinstance(s, dict):
        raise DocError(f"set {name}: not a JSON object")
    for k in s:
        if k not in _SET_KEYS:
            raise DocError(f"set {name}: unknown field {k!r}")
    for k in ("hosts", "active", "backups", "retired"):
        if k not in s:
            raise DocError(f"set {name}: missing {k!r}")
    hosts = s["hosts"]
    if not isinstance(hosts, list) or not hosts:
        raise DocError(f"set {name}: hosts must be a non-empty list")
    for h in hosts:
        try:
            check_host(h)
        except DocError as e:
            raise DocError(f"set {name}: {e}") from None
    if len(set(hosts)) != len(hosts):
        raise DocError(f"set {name}: a host is listed twice")
    for k in ("backups", "retired"):
        if not isinstance(s[k], list):
            raise DocError(f"set {name}: {k} must be a list")
    pins = [s["active"]] + s["backups"] + s["retired"]
    for p in pins:
        try:
            parse_pin(p)
        except CommandError as e:
            raise DocError(f"set {name}: {e}") from None
    if len(set(pins)) != len(pins):
        raise DocError(f"set {name}: a pin appears twice across active, backups and retired")
    if "policy" not in s:
        raise DocError(f"set {name}: missing 'policy' (\"leaf\" or \"any\")")
    if s["policy"] not in POLICIES:
        raise DocError(f"set {name}: policy must be \"leaf\" or \"any\", not {s['policy']!r}")
    if "allow_no_backup" in s and not isinstance(s["allow_no_backup"], bool):
        raise DocError(f"set {name}: allow_no_backup must be true or false")
    if not s["backups"] and not s.get("allow_no_backup"):
        raise DocError(f"set {name}: no backup pin and no \"allow_no_backup\": true (the device refuses this)")


def check_doc(doc: object) -> None:
    if not isinstance(doc, dict):
        raise DocError("line 1 is not a JSON object")
    for k in doc:
        if k not in _TOP_KEYS:
            raise DocError(f"unknown field {k!r}")
    for k in _TOP_KEYS:
        if k not in doc:
            raise DocError(f"missing field {k!r}")
    if doc["format"] != FORMAT:
        raise DocError(f"format is {doc['format']!r}, want {FORMAT!r}")
    if not _int(doc["seq"]):
        raise DocError("seq must be an integer >= 0")
    if not _int(doc["version"]):
        raise DocError("version must be an integer >= 0")
    _check_signer(doc["signer"])
    sets = doc["sets"]
    if not isinstance(sets, dict):
        raise DocError("sets must be a JSON object")
    owner: dict[str, str] = {}
    for name, s in sets.items():
        check_set(name, s)
        for h in s["hosts"]:
            if h in owner:
                raise DocError(f"host {h} is in two sets: {owner[h]} and {name}")
            owner[h] = name


def new_doc() -> dict:
    return {"format": FORMAT, "seq": 0, "version": 0, "signer": None, "sets": {}}


def parse(data: bytes, where: str = "pin document") -> dict:
    """Parse and validate the two-line document (line 2 ends with a newline, as the device requires)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocError(f"{where}: not UTF-8 text (corrupt?)") from None
    lines = text.split("\n")
    if len(lines) == 3 and lines[2] == "":
        lines.pop()
    elif len(lines) == 2 and lines[1].startswith("sha256:"):
        raise DocError(f"{where}: corrupt: line 2 must end with a newline (torn write?)")
    if len(lines) != 2:
        raise DocError(f"{where}: corrupt: want 2 lines (JSON, then sha256:<hex>), found {len(lines)}")
    line1, line2 = lines
    want = "sha256:" + hashlib.sha256(line1.encode("utf-8")).hexdigest()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", line2):
        raise DocError(f"{where}: corrupt: line 2 must be sha256:<64 lowercase hex digits>")
    if line2 != want:
        raise DocError(f"{where}: corrupt: the checksum on line 2 does not match line 1 (torn or edited file?)")
    try:
        doc = json.loads(line1)
    except ValueError as e:
        raise DocError(f"{where}: corrupt: line 1 is not JSON: {e}") from None
    try:
        check_doc(doc)
    except DocError as e:
        raise DocError(f"{where}: {e}") from None
    return doc


def serialize(doc: dict) -> bytes:
    check_doc(doc)
    sets = {}
    for name, s in doc["sets"].items():
        out = {"hosts": s["hosts"], "active": s["active"], "backups": s["backups"],
               "retired": s["retired"], "policy": s["policy"]}
        if s.get("allow_no_backup"):
            out["allow_no_backup"] = True
        sets[name] = out
    top = {"format": doc["format"], "seq": doc["seq"], "version": doc["version"],
           "signer": doc["signer"], "sets": sets}
    line1 = json.dumps(top, ensure_ascii=True, separators=(", ", ": "))
    assert "\n" not in line1
    return (line1 + "\nsha256:" + hashlib.sha256(line1.encode("ascii")).hexdigest() + "\n").encode("ascii")


def load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DocError(f"{path}: no such pin document (create one with: keypin pinset new --file {path} ...)") from None
    except OSError as e:
        raise DocError(f"cannot read {path}: {e.strerror or e}") from None
    return parse(data, path)


def save(path: str, doc: dict) -> None:
    """seq grows by one at every write; the write is atomic (temp file + os.replace)."""
    doc["seq"] += 1
    atomic_write(path, serialize(doc), 0o644)


def set_for_host(doc: dict, host: str) -> tuple[str, dict] | None:
    h = host.lower().rstrip(".")
    for name, s in doc["sets"].items():
        if h in s["hosts"]:
            return name, s
    return None


def get_set(doc: dict, name: str) -> dict:
    try:
        return doc["sets"][name]
    except KeyError:
        have = ", ".join(sorted(doc["sets"])) or "none"
        raise CommandError(f"no set {name!r} in the pin document (sets: {have})") from None


def all_pins(s: dict) -> list[str]:
    return [s["active"]] + list(s["backups"]) + list(s["retired"])


def warnings_for(doc: dict) -> list[str]:
    out = []
    for name, s in doc["sets"].items():
        if not s["backups"]:
            out.append(f"set {name} has no backup pin: if its key is lost or compromised the devices cannot "
                       f"follow (keypin pinset add-backup --set {name} ...)")
    return out
