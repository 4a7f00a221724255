"""Pin-failure reports as devices publish them (keypin.report): one readable block per message."""
from __future__ import annotations

import datetime
import json


def _when(t) -> str:
    if not isinstance(t, (int, float)):
        return "time unknown"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _batch(payload: bytes) -> dict | None:
    try:
        msg = json.loads(payload)
        if not isinstance(msg["reports"], list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return None
    return msg


def message_json(topic: str, payload: bytes, retained: bool) -> dict:
    """The --json form of one message (docs/cli.md): the device's batch as sent, plus where it came from."""
    msg = _batch(payload)
    out: dict = {"topic": topic, "retained": retained}
    if msg is None:
        out.update(error="not a keypin report batch", size=len(payload),
                   payload=payload[:200].decode("utf-8", "replace"))
        return out
    out.update(device=msg.get("device"), dropped=msg.get("dropped", 0),
               reports=[r for r in msg["reports"] if isinstance(r, dict)])
    return out


def format_message(topic: str, payload: bytes, retained: bool) -> str:
    tag = "  [retained: sent before you subscribed]" if retained else ""
    msg = _batch(payload)
    if msg is None:
        return f"{topic}: not a keypin report batch ({len(payload)} bytes): {payload[:200]!r}{tag}"
    reports = msg["reports"]
    dev = msg.get("device", "?")
    dropped = msg.get("dropped", 0)
    lines = [f"{topic}: {len(reports)} pin failure report{'' if len(reports) == 1 else 's'} from {dev}"
             + (f", {dropped} more dropped (ring full)" if dropped else "") + tag]
    for i, r in enumerate(reports, 1):
        if not isinstance(r, dict):
            lines.append(f"  report {i}: malformed: {r!r}")
            continue
        lines.append(f"  report {i}: {_when(r.get('t'))}  {r.get('host')}:{r.get('port')}  set {r.get('set')}: "
                     f"{r.get('reason')}")
        chain = r.get("chain") or []
        for j, (d, p) in enumerate(x for x in chain if isinstance(x, list) and len(x) == 2):
            lines.append(f"    {'presented:' if j == 0 else '':10} depth {d}: {p}")  # as the device prints it
        if not chain:
            lines.append("    presented: (no certificate)")
        pins = r.get("pins") or {}
        if pins:
            act = pins.get("active")
            act = act if isinstance(act, list) else [act]  # pin document v2: a list of pins in service
            lines.append(f"    {'pinned:':10} active {', '.join(map(str, act))}")
            for k, p in enumerate(pins.get("backups") or [], 1):
                lines.append(f"    {'':10} backup {k} {', '.join(map(str, p)) if isinstance(p, list) else p}")
        lines.append(f"    {'firmware:':10} {r.get('fw', '?')}")
    return "\n".join(lines)
