"""Server operations: ``keypin check``, ``certbot-hook``, ``reports``."""
from __future__ import annotations

import argparse
import shlex
import ssl
import subprocess

from .. import decide, hook, material, mqttsub, pindoc, reports
from ..errors import CommandError
from ..tlsprobe import fetch_chain
from ..util import add_json_arg, emit_json, note, parse_hostport, progress, read_input, tls_error_text
from .common import count, seconds, seconds_or_0, tcp_port


def cmd_reports(a) -> int:
    ctx = None
    tls = bool(a.tls or a.cafile or a.insecure)
    port = a.port or (8883 if tls else 1883)
    if tls:
        try:
            ctx = ssl.create_default_context(cafile=a.cafile)
        except (OSError, ssl.SSLError) as e:
            raise CommandError(f"--cafile {a.cafile}: {getattr(e, 'strerror', None) or tls_error_text(e)}") from None
        if a.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    topic = a.topic or f"{a.prefix}/+/reports"
    sub = mqttsub.Subscriber(a.host, port, user=a.user, password=a.password, tls=ctx,
                             timeout=a.connect_timeout, on_event=note)
    n = 0
    try:
        sub.subscribe(topic, a.connect_timeout)
        progress(f"subscribed to {topic} on {a.host}:{port}" + (" (TLS)" if tls else ""))
        for t, payload, retained in sub.messages(a.count, a.timeout):
            if a.json:
                emit_json("reports", reports.message_json(t, payload, retained))
            else:
                print(reports.format_message(t, payload, retained), flush=True)
            n += 1
    finally:
        sub.close()
    if a.count and n < a.count:
        note(f"{n} of {a.count} report message(s) within {a.timeout:g} s")
    return 0


# --------------------------------------------------------------------------------------- check


def cmd_check(a) -> int:
    doc = pindoc.load(a.pinset)
    host, port = parse_hostport(a.host)
    if a.set:
        name, s = a.set, pindoc.get_set(doc, a.set)
    else:
        found = pindoc.set_for_host(doc, host) or (a.sni and pindoc.set_for_host(doc, a.sni))
        if not found:
            raise CommandError(f"no pin set covers {host} in {a.pinset} (give --set NAME)")
        name, s = found
    s = pindoc.view(doc, name)  # with the device-wide retired pins (pin document v2)
    for w in pindoc.warnings_for({**doc, "sets": {name: s}}):  # what keypin image warns about, for this set
        note(w)
    if s["policy"] == "any":
        note(f"set {name} has policy any: devices connect only in CA+pin mode (config \"cadata\"), "
             "where mbedTLS verifies the chain up to the pinned key; without a CA they refuse to connect; "
             "this check does not verify signatures")
    ch = fetch_chain(host, port, a.sni, a.timeout)
    chain = decide.describe_chain(ch.certs)
    for n in ch.notes:
        note(n)
    d = decide.decide(chain, s)
    code = {decide.ACTIVE: 0, decide.BACKUP: 2}.get(d.outcome, 1)
    if a.json:
        emit_json("check", {"host": host, "port": port, "sni": a.sni, "set": name, "policy": s["policy"],
                            "outcome": d.outcome, "exit": code, "depth": d.depth if d.pin else None,
                            "pin": d.pin or None, "backup_index": d.backup_index or None,
                            "complete": ch.complete, "chain": decide.chain_json(chain),
                            "listener": decide.listener(ch.certs).as_json() if ch.complete else None})
    if d.outcome in (decide.ACTIVE, decide.BACKUP) and ch.complete and not a.json:  # which kind of listener (H5)
        print(decide.listener(ch.certs).text(s))
    if d.outcome == decide.ACTIVE:
        if not a.json:
            print("\n".join(decide.chain_lines(chain)))
            print(f"OK: depth {d.depth} matches the active pin of set {name}")
        return 0
    if d.outcome == decide.BACKUP:
        if not a.json:
            print("\n".join(decide.chain_lines(chain)))
            more = "" if d.backup_index == 1 else f" and backups 1..{d.backup_index - 1}"
            print(f"ROTATION: depth {d.depth} matches backup {d.backup_index} {d.pin} of set {name}: a device "
                  f"accepts it and, after the first good response, makes it the active pin and retires "
                  f"{', '.join(s['active'])}{more}")
        # several nodes under one name (issue 18): this node serves a key outside the group in service
        note(f"this node serves a key outside the group in service of set {name}: if other nodes of "
             f"{a.sni or host} still serve {', '.join(s['active']) or 'the keys in service'}, devices that meet this "
             "node retire those keys and then refuse the other nodes. For a rolling key change, put the key in "
             f"service first (keypin pinset add-active --set {name} ..., sent by signed update), then move the nodes")
        return 2
    report = decide.failure_report(chain, host, port, name, s, d.outcome, a.sni)
    if d.outcome == decide.RETIRED:
        report += f"\n  (depth {d.depth} presents the RETIRED key {d.pin}: never trusted again)"
    raise CommandError(report)


# -------------------------------------------------------------------------------- certbot-hook


def cmd_certbot_hook(a) -> int:
    path = hook.lineage_cert(a.cert)
    items = material.load_items(read_input(str(path)), str(path))
    leaf = items[0]
    if leaf.cert is None:
        what = ("a certificate Python's cryptography cannot parse (its key pin is " + leaf.pin + "; the hook "
                "needs its names)") if leaf.kind == "cert" else "not a certificate"
        raise CommandError(f"{path}: the first PEM block is {what}")
    doc = pindoc.load(a.pinset)
    names = hook.cert_names(leaf.cert)
    if a.set:
        sets = [(a.set, pindoc.get_set(doc, a.set))]
    else:
        sets = hook.sets_for_names(doc, names)
        if not sets:
            raise CommandError(f"no pin set in {a.pinset} covers {', '.join(names)} (give --set NAME)")
    v = hook.judge(leaf.pin, [(n, pindoc.view(doc, n)) for n, _ in sets])
    for line in v.lines:
        print(line)
    if not v.ok:
        raise CommandError(hook.refusal(leaf.pin, v))
    hook.check_private_key(path, leaf.pin, required=bool(a.install))
    if a.install:
        for line in hook.install(path, a.install):
            print(line)
    for cmd in a.reload or []:
        argv = shlex.split(cmd)
        if not argv:
            continue
        print(f"reload: {cmd}")
        try:
            r = subprocess.run(argv, check=False)
        except OSError as e:
            raise CommandError(f"reload command {cmd!r} failed: {e.strerror or e}") from None
        if r.returncode != 0:
            raise CommandError(f"reload command {cmd!r} exited with {r.returncode}")
    return 0



def args_check(p):
    p.add_argument("--host", required=True, metavar="HOST:PORT", help="server to check")
    p.add_argument("--pinset", required=True, metavar="FILE", help="pin document")
    p.add_argument("--set", metavar="NAME", help="pin set to use (default: the set covering HOST)")
    p.add_argument("--sni", metavar="NAME", help="server name to send (default: HOST unless an IP)")
    p.add_argument("--timeout", type=seconds, default=10.0, metavar="S", help="connect/handshake timeout (s, > 0)")
    add_json_arg(p)



def args_certbot_hook(p):
    p.add_argument("--pinset", required=True, metavar="FILE", help="pin document of the fleet")
    p.add_argument("--set", metavar="NAME", help="pin set (default: the sets covering the cert's names)")
    p.add_argument("--reload", action="append", metavar="CMD",
                   help="command to run when the key is pinned (repeat), e.g. 'systemctl reload nginx'")
    p.add_argument("--cert", metavar="FILE", help="certificate to check instead of $RENEWED_LINEAGE/cert.pem")
    p.add_argument("--install", metavar="DIR",
                   help="when the key is pinned, copy fullchain.pem and privkey.pem from the lineage into DIR "
                        "(atomically) before reloading; point the servers at DIR so a refused renewal is "
                        "never served, not even after a restart")



def args_reports(p):
    p.add_argument("--host", required=True, help="MQTT broker")
    p.add_argument("--port", type=tcp_port, default=None, help="broker port (default 1883; 8883 with --tls)")
    p.add_argument("--user", help="broker user name")
    p.add_argument("--password", help="broker password")
    p.add_argument("--tls", action="store_true", help="TLS, verified against the system CAs (or --cafile)")
    p.add_argument("--cafile", metavar="FILE", help="CA certificates for TLS (implies --tls)")
    p.add_argument("--insecure", action="store_true", help="TLS without verification (implies --tls)")
    p.add_argument("--prefix", default="keypin", help="the devices' topic_prefix (default keypin)")
    p.add_argument("--topic", help="subscribe to this topic instead of PREFIX/+/reports")
    p.add_argument("--count", type=count, default=0, metavar="N", help="stop after N messages (default: no limit)")
    p.add_argument("--timeout", type=seconds_or_0, default=0, metavar="S",
                   help="stop after S seconds (default 0: never)")
    p.add_argument("--connect-timeout", type=seconds, default=10.0, metavar="S", help=argparse.SUPPRESS)
    add_json_arg(p)
