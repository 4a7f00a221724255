"""Signed pin-set updates (docs/pin-document.md, "Signed updates") and the Ed25519 signer key.

An update (v2) is two lines: the JSON body ``{"format", "version", "signer", "audience", "retired",
"sets"}`` (no seq: the device assigns it), then ``ed25519:`` + base64 of the signature over the
exact bytes of line 1. ``audience`` is ``{"fleet": F}`` or ``{"fleet": F, "devices": [...]}``.
The device checks what make_update refuses here, so an operator learns it before the fleet does.
"""
from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import material, pindoc
from .errors import CommandError
from .util import read_input

PREFIX = "ed25519/"
MAX_SIZE = 8192  # the device refuses larger updates (keypin.update.MAX_SIZE)
UPDATE_KEYS = ("format", "version", "signer", "audience", "retired", "sets")


def signer_text(pub: ed25519.Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode()


def public_of(signer: str) -> ed25519.Ed25519PublicKey:
    try:
        pindoc._check_signer(signer)
    except pindoc.DocError as e:
        raise CommandError(str(e)) from None
    return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(signer[len(PREFIX):]))


def load_private(path: str, password: bytes | None) -> ed25519.Ed25519PrivateKey:
    key = material.load_private_key(read_input(path), path, password)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CommandError(f"{path}: not an Ed25519 private key (make one with keypin signer keygen)")
    return key


def resolve_signer(value: str, password: bytes | None) -> str:
    """``ed25519/<base64>``, or a file holding an Ed25519 public or private key -> signer text."""
    if value.startswith(PREFIX):
        public_of(value)
        return value
    data = read_input(value)
    try:
        pem = b"-----BEGIN PUBLIC KEY-----" in data
        key = serialization.load_pem_public_key(data) if pem else serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        key = material.load_private_key(data, value, password).public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        text = signer_text(key)
        public_of(text)  # canonical and not a weak (small-order) key
        return text
    raise CommandError(f"{value}: no Ed25519 key in this file (or give ed25519/<base64>)")


def update_sets(doc: dict) -> dict:
    """The document's sets as an update carries them; every set must keep a backup group."""
    out = {}
    for name, s in doc["sets"].items():
        if not s["backups"]:
            raise CommandError(f"set {name} has no backup pin: devices refuse an update that leaves a set without "
                               f"one (keypin pinset add-backup --set {name} ...)")
        out[name] = pindoc._set_out(s)
        out[name].pop("allow_no_backup", None)
    if not out:
        raise CommandError("the pin document has no sets")
    return out


def audience(fleet: str | None, devices: list[str] | None) -> dict:
    if not fleet:
        raise CommandError("give --fleet F: the audience of the update (devices of another fleet refuse it; "
                           "a device's fleet is the one in the pin document it was provisioned with)")
    out: dict = {"fleet": pindoc.check_fleet(fleet)}
    if devices:
        for d in devices:
            if not d or len(d) > 64 or "/" in d:
                raise CommandError(f"bad --device {d!r}: 1..64 characters without '/'")
        out["devices"] = list(dict.fromkeys(devices))
    return out


def make_update(doc: dict, version: int, key: ed25519.Ed25519PrivateKey, new_signer: str | None = None,
                fleet: str | None = None, devices: list[str] | None = None) -> bytes:
    """The two-line signed update of doc's sets for the audience (fleet, optionally device ids);
    refuses what devices would refuse."""
    aud = audience(fleet or doc.get("fleet"), devices)
    mine = signer_text(key.public_key())
    if not doc["signer"]:
        raise CommandError(f"the pin document has no signer: set it before provisioning with "
                           f"keypin pinset set-signer --signer {mine}")
    if doc["signer"] != mine:
        raise CommandError(f"this key is {mine}, but the devices' signer (the document's) is {doc['signer']}: "
                           "they would refuse the update")
    if version <= doc["version"]:
        raise CommandError(f"--version {version} is not newer than the document's version {doc['version']}: "
                           f"devices refuse it as a replay (use {doc['version'] + 1} or more)")
    if new_signer is not None:
        public_of(new_signer)
    body = {"format": pindoc.FORMAT, "version": version, "signer": new_signer or doc["signer"],
            "audience": aud, "retired": list(doc["retired"]), "sets": update_sets(doc)}
    line1 = json.dumps(body, ensure_ascii=True, separators=(", ", ": ")).encode("ascii")
    sig = key.sign(line1)
    data = line1 + b"\ned25519:" + base64.b64encode(sig) + b"\n"
    if len(data) > MAX_SIZE:
        raise CommandError(f"the signed update is {len(data)} bytes; devices accept at most {MAX_SIZE}")
    return data


def parse_update(data: bytes, where: str = "update") -> tuple[dict, bytes, bytes]:
    """-> (body, line 1, signature); checks the shape only."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if len(lines) != 2 or not lines[1].startswith(b"ed25519:"):
        raise CommandError(f"{where}: not a signed update (two lines: JSON, then ed25519:<signature>)")
    try:
        sig = base64.b64decode(lines[1][8:], validate=True)
        body = json.loads(lines[0])
    except (binascii.Error, ValueError) as e:
        raise CommandError(f"{where}: corrupt signed update: {e}") from None
    if len(sig) != 64 or not isinstance(body, dict) or sorted(body) != sorted(UPDATE_KEYS):
        raise CommandError(f"{where}: corrupt signed update (signature or fields)")
    return body, lines[0], sig


def verify_update(data: bytes, signer: str, where: str = "update") -> dict:
    body, line1, sig = parse_update(data, where)
    try:
        public_of(signer).verify(sig, line1)
    except InvalidSignature:
        raise CommandError(f"{where}: the signature does not verify with {signer}") from None
    return body
