# Device configuration (config.json): load, validate, save power-safely.
# SCHEMA is the one description of config.json: the device checks it at start, and the host CLI
# (`keypin image --config`) runs this same check() in CPython before it builds an image.
import json
import os

from keypin import KeypinError

PATH = "config.json"

# a key's type: "s" text, "i" integer >= 0 (not a bool), "n" number >= 0, "b" true/false, "p" TCP
# port, "h" object of text to text, or a nested schema (dict); a tuple lists the types allowed
SCHEMA = {
    "device_id": "s", "pins": "s", "cadata": "s", "period": "n", "cycles": "i", "wdt_ms": "i",
    "hosts": "h", "asyncio": "b",
    "wifi": {"ssid": "s", "password": "s", "timeout_ms": "i"},
    "mqtt": {"host": "s", "port": "p", "user": "s", "password": "s", "keepalive": "i",
             "topic_prefix": "s", "tries": "i", "timeout": "n"},
    "https": {"url": "s", "interval": "n", "timeout": "n"},
    "update": {"url": "s", "fleet": "s", "state": "s", "interval": "n", "timeout": "n"},
    "reports": ("b", {"path": "s", "size": "i", "min_interval": "n", "max_writes": "i"}),
    "release": {"url": "s", "signer": "s", "interval": "n", "boots": "i", "timeout": "n"},
}
_NEED = {"mqtt": "host", "https": "url"}  # a section present needs this key
_WHAT = {"s": "a string", "i": "an integer >= 0", "n": "a number >= 0", "b": "true or false",
         "p": "an integer port 1-65535", "h": "an object of strings"}


class ConfigError(KeypinError):
    pass


def _ok(t, v):
    if t == "s":
        return isinstance(v, str)
    if t == "b":
        return isinstance(v, bool)
    if isinstance(v, bool):  # JSON true is not 1
        return False
    if t == "i":
        return isinstance(v, int) and v >= 0
    if t == "n":
        return isinstance(v, (int, float)) and v >= 0
    if t == "p":
        return isinstance(v, int) and 0 < v < 65536
    if t == "h":
        return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())
    return False


def _walk(cfg, sch, where, errors, unknown):
    for k in cfg:
        v = cfg[k]
        t = sch.get(k)
        name = where + k
        if t is None:
            unknown.append(name)
            continue
        for u in t if isinstance(t, tuple) else (t,):
            if isinstance(u, dict):
                if isinstance(v, dict):
                    _walk(v, u, name + ".", errors, unknown)
                    need = _NEED.get(k) if not where else None
                    if need and need not in v:
                        errors.append("%s needs %s.%s" % (name, name, need))
                    break
            elif _ok(u, v):
                break
        else:
            what = [_WHAT[u] if isinstance(u, str) else "an object" for u in (t if isinstance(t, tuple) else (t,))]
            errors.append("%s must be %s, not %s" % (name, " or ".join(what), json.dumps(v)[:40]))


def check(cfg):
    # -> (errors, unknown keys): every problem at once, as "mqtt.port must be ..." lines
    if not isinstance(cfg, dict):
        return ["config.json must hold a JSON object"], []
    errors: list = []
    unknown: list = []
    _walk(cfg, SCHEMA, "", errors, unknown)
    u = cfg.get("update")
    if isinstance(u, dict) and not u.get("url") and not u.get("fleet"):
        errors.append("update needs update.url or update.fleet")
    return errors, unknown


def load(path=PATH):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("no %s: configure the device with 'import keypin.setup as ks' "
                          "(ks.server(...), ks.pins(...))" % path)
    except ValueError as e:
        raise ConfigError("%s is not valid JSON (%s); rewrite it with keypin.setup" % (path, e))
    errors, unknown = check(cfg)
    if errors:
        raise ConfigError("%s: %s; fix it with keypin.setup or keypin image --config" % (path, "; ".join(errors)))
    if unknown:  # a typo must not stop a device that was running: said at every start
        print("keypin: %s: unknown key(s) ignored: %s" % (path, ", ".join(unknown)))
    return cfg


def load_or_empty(path=PATH):
    try:
        return load(path)
    except ConfigError:
        try:
            os.stat(path)
        except OSError:
            return {}
        raise


def save(cfg, path=PATH):
    # write path.new, then rename over path (atomic on LittleFS)
    data = json.dumps(cfg)
    with open(path + ".new", "w") as f:
        f.write(data)
    os.rename(path + ".new", path)
