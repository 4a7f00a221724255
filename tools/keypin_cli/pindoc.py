"""The pin document v2 (docs/pin-document.md): read (a v1 document is migrated), validate, edit, write.

Two lines: a one-line JSON object, then ``sha256:`` + hex SHA-256 of the exact bytes of line 1. A set
has several pins in service (``active``), ordered backup *groups*, and the retired pins are
device-wide (top-level ``retired``). The CLI writes only v2.
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

FORMAT = "keypin-pins/2"
FORMAT1 = "keypin-pins/1"
MAX_ACTIVE = 8
_FLEET = re.compile(r"[^/+#\x00-\x1f]{1,64}\Z")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\Z")
_TOP_KEYS = ("format", "seq", "version", "signer", "fleet", "retired", "sets")
_SET_KEYS = ("hosts", "active", "backups", "policy", "ca", "allow_no_backup")
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
    weak = weak_key(raw)
    if weak:
        raise DocError(f"bad signer {signer!r}: {weak}")


def weak_key(raw: bytes) -> str | None:
    """Why an Ed25519 public key must not be a signer (libsodium's point check: canonical, on the
    curve, not of small order, in the prime-order subgroup), or None."""
    from nacl.bindings import crypto_core_ed25519_is_valid_point
    if not crypto_core_ed25519_is_valid_point(raw):
        return ("a weak or invalid Ed25519 public key (small order, non-canonical or not in the prime-order "
                "group): anyone could forge updates it \"signs\"")
    return None


def check_fleet(fleet: object) -> str | None:
    if fleet is None:
        return None
    if not isinstance(fleet, str) or not _FLEET.match(fleet):
        raise DocError(f"bad fleet {fleet!r}: 1..64 characters without / + # or control characters")
    return fleet


def group_pins(s: dict) -> list[str]:
    """Every backup pin of a set, flat, group by group."""
    return [p for g in s["backups"] for p in g]


def set_pins(s: dict) -> list[str]:
    """Every pin of a set: in service, then the backup groups."""
    return list(s["active"]) + group_pins(s)


def ca_ders(s: dict) -> list[bytes]:
    out = []
    for c in s.get("ca") or []:
        try:
            out.append(base64.b64decode(c, validate=True))
        except (binascii.Error, ValueError, TypeError):
            raise DocError("ca: a certificate is not base64 DER") from None
    return out


def ca_pins(s: dict) -> list[str]:
    """The pins of the keys of a set's CA certificates."""
    from .der import DerError, cert_spki
    from .pins import pin_of_spki
    out = []
    for der in ca_ders(s):
        try:
            out.append(pin_of_spki(cert_spki(der)))
        except DerError as e:
            raise DocError(f"ca: not a DER certificate ({e})") from None
    return out


def check_set(name: str, s: object) -> None:
    check_name(name)
    if not isinstance(s, dict):
        raise DocError(f"set {name}: not a JSON object")
    for k in s:
        if k not in _SET_KEYS:
            raise DocError(f"set {name}: unknown field {k!r}")
    for k in ("hosts", "active", "backups"):
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
    if not isinstance(s["active"], list) or len(s["active"]) > MAX_ACTIVE:
        raise DocError(f"set {name}: active must be a list of at most {MAX_ACTIVE} pins (the keys in service)")
    if not isinstance(s["backups"], list) or any(not isinstance(g, list) or not g for g in s["backups"]):
        raise DocError(f"set {name}: backups must be a list of groups, each a non-empty list of pins")
    pins = set_pins(s)
    for p in pins:
        try:
            parse_pin(p)
        except CommandError as e:
            raise DocError(f"set {name}: {e}") from None
    if len(set(pins)) != len(pins):
        raise DocError(f"set {name}: a pin appears twice across active and backups")
    if "policy" not in s:
        raise DocError(f"set {name}: missing 'policy' (\"leaf\" or \"any\")")
    if s["policy"] not in POLICIES:
        raise DocError(f"set {name}: policy must be \"leaf\" or \"any\", not {s['policy']!r}")
    if "allow_no_backup" in s and s["allow_no_backup"] is not True:
        raise DocError(f"set {name}: allow_no_backup must be true (or absent)")
    if "ca" in s:
        if not isinstance(s["ca"], list) or not s["ca"] or any(not isinstance(c, str) for c in s["ca"]):
            raise DocError(f"set {name}: ca must be a non-empty list of base64 DER certificates")
        try:
            ca_pins(s)
        except DocError as e:
            raise DocError(f"set {name}: {e}") from None
    if not s["backups"] and not s.get("allow_no_backup"):
        raise DocError(f"set {name}: no backup pin and no \"allow_no_backup\": true (the device refuses this)")
    if not s["active"] and not s["backups"] and not s.get("allow_no_backup"):
        raise DocError(f"set {name}: no pin in service and no backup group")


def purge(doc: dict, pins) -> list[tuple[str, str]]:
    """Retired pins leave every set (in service and backup groups; an emptied group goes), and so
    do the CA anchors whose key is retired. A set left without a backup group gets allow_no_backup;
    a set left with no pin at all stays, empty (the device refuses its hosts). The same rule as the
    device's (lib/keypin/pindocx.py): the result is always a document the device can load.
    Returns [(set name, "with no pin" | "without a backup")] for the sets it left so."""
    gone = set(pins)
    hurt = []
    for name, s in doc["sets"].items():
        n = len(s["backups"])
        had = bool(set_pins(s))
        s["active"] = [p for p in s["active"] if p not in gone]
        s["backups"] = [g for g in ([p for p in g if p not in gone] for g in s["backups"]) if g]
        if n and not s["backups"]:
            s["allow_no_backup"] = True
        if had and not set_pins(s):
            hurt.append((name, "with no pin (devices refuse its hosts)"))
        elif n and not s["backups"]:
            hurt.append((name, "without a backup"))
        if s.get("ca"):
            try:
                cp = ca_pins(s)
            except DocError:
                continue  # check_doc names the bad certificate
            s["ca"] = [c for c, p in zip(s["ca"], cp, strict=True) if p not in gone]
            if not s["ca"]:
                del s["ca"]
    return hurt


def migrate(doc: object) -> object:
    """keypin-pins/1 -> v2 (docs/pin-document.md): active P -> [P], backups [P, Q] -> [[P], [Q]],
    every set's retired -> the top-level retired (union, order kept), fleet null."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT1:
        return doc
    sets = doc.get("sets")
    if not isinstance(sets, dict):
        raise DocError("sets must be a JSON object")
    retired: list = []
    out = {}
    for name, s in sets.items():
        if not isinstance(s, dict) or not isinstance(s.get("backups"), list) or not isinstance(s.get("retired"), list):
            raise DocError(f"set {name}: not a keypin-pins/1 set (active, backups, retired)")
        for k in s:
            if k not in ("hosts", "active", "backups", "retired", "policy", "allow_no_backup"):
                raise DocError(f"set {name}: unknown field {k!r}")
        n = {"hosts": s.get("hosts"), "active": [s.get("active")], "backups": [[p] for p in s["backups"]],
             "policy": s.get("policy")}
        if "allow_no_backup" in s:
            n["allow_no_backup"] = s["allow_no_backup"]
        for p in s["retired"]:
            if p not in retired:
                retired.append(p)
        out[name] = n
    new = {k: doc.get(k) for k in ("seq", "version", "signer")}
    for k in doc:
        if k not in ("format", "seq", "version", "signer", "sets"):
            raise DocError(f"unknown field {k!r}")
    doc2 = {"format": FORMAT, **new, "fleet": None, "retired": retired, "sets": out}
    try:
        purge(doc2, retired)  # a pin retired in one v1 set is retired everywhere now
    except (TypeError, AttributeError):
        raise DocError("not a keypin-pins/1 document") from None
    return doc2


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
        raise DocError(f"format is {doc['format']!r}, want {FORMAT!r} (or {FORMAT1!r}, migrated on read)")
    if not _int(doc["seq"]):
        raise DocError("seq must be an integer >= 0")
    if not _int(doc["version"]):
        raise DocError("version must be an integer >= 0")
    _check_signer(doc["signer"])
    check_fleet(doc["fleet"])
    retired = doc["retired"]
    if not isinstance(retired, list):
        raise DocError("retired must be a list of pins")
    for p in retired:
        parse_pin(p)
    if len(set(retired)) != len(retired):
        raise DocError("a pin is retired twice")
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
        for p in set_pins(s):
            if p in retired:
                raise DocError(f"set {name}: {p} is retired (device-wide) and can never be in a set again")
        for p in ca_pins(s):
            if p in retired:
                raise DocError(f"set {name}: a ca certificate's key {p} is retired")


def new_doc(fleet: str | None = None) -> dict:
    return {"format": FORMAT, "seq": 0, "version": 0, "signer": None, "fleet": check_fleet(fleet),
            "retired": [], "sets": {}}


def parse(data: bytes, where: str = "pin document") -> dict:
    """Parse and validate the two-line document (line 2 ends with a newline, as the device requires)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocError(f"{where}: not UTF-8 text (corrupt?)") from None
    if "\r\n" in text:  # H1, issue 17.4
        raise DocError(f"{where}: has Windows line ends (CRLF), devices read LF only: undo the conversion "
                       "(dos2unix, or git config core.autocrlf false) or copy the original file")
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
        doc = migrate(doc)
        check_doc(doc)
    except DocError as e:
        raise DocError(f"{where}: {e}") from None
    return doc


def _set_out(s: dict) -> dict:
    out = {"hosts": s["hosts"], "active": s["active"], "backups": s["backups"], "policy": s["policy"]}
    if s.get("ca"):
        out["ca"] = s["ca"]
    if s.get("allow_no_backup"):
        out["allow_no_backup"] = True
    return out


def serialize(doc: dict) -> bytes:
    check_doc(doc)
    top = {"format": FORMAT, "seq": doc["seq"], "version": doc["version"], "signer": doc["signer"],
           "fleet": doc["fleet"], "retired": doc["retired"],
           "sets": {name: _set_out(s) for name, s in doc["sets"].items()}}
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


def view(doc: dict, name: str) -> dict:
    """A set with the device-wide retired pins beside it (what check and certbot-hook decide on)."""
    return {**get_set(doc, name), "retired": list(doc["retired"])}


def all_pins(s: dict) -> list[str]:
    return set_pins(s) + list(s.get("retired", []))


def sets_with(doc: dict, pin: str) -> list[str]:
    """The names of the sets holding pin (a key may serve several sets)."""
    return [n for n, s in doc["sets"].items() if pin in set_pins(s)]


def warnings_for(doc: dict) -> list[str]:
    out = []
    for name, s in doc["sets"].items():
        if not s["active"] and not s["backups"]:
            out.append(f"set {name} has no pin left (its keys were retired): devices refuse its hosts "
                       f"(keypin pinset add-backup --set {name} ... or a new set)")
        elif not s["backups"]:
            out.append(f"set {name} has no backup pin: if its key is lost or compromised the devices cannot "
                       f"follow (keypin pinset add-backup --set {name} ...)")
        if s["policy"] == "any" and not s.get("ca"):
            out.append(f"set {name} has policy any but no CA certificate: devices refuse to connect unless the "
                       "app gives cadata (CA+pin mode); prefer policy leaf")
    return out
