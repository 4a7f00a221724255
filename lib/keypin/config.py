# Device configuration (config.json): load, validate, save power-safely.
import json
import os

from keypin import KeypinError

PATH = "config.json"


class ConfigError(KeypinError):
    pass


def load(path=PATH):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("no %s: configure the device with 'import keypin.setup as ks' "
                          "(ks.server(...), ks.pins(...))" % path)
    except ValueError as e:
        raise ConfigError("%s is not valid JSON (%s); rewrite it with keypin.setup" % (path, e))
    if not isinstance(cfg, dict):
        raise ConfigError("%s must hold a JSON object" % path)
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
