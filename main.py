# keypin device application: pinned MQTTS status and commands, HTTPS check-in.
# On a board this file runs after boot.py; tests import it and call run(cycles=1).
import sys

sys.path.append("lib")


def _asyncio(path):
    # config "asyncio": true runs the app as asyncio tasks (keypin.aio_app, docs/asyncio.md)
    from keypin import KeypinError
    from keypin.app import _config  # keypin.config, dropped after the load
    try:
        return bool(_config(path).get("asyncio"))
    except KeypinError:  # no usable config: keypin.app.run says why
        return False


def run(cycles=None, config_path="config.json"):
    from keypin.app import run as _run
    if _asyncio(config_path):
        from keypin.aio_app import run as _run
    return _run(cycles, config_path)


if __name__ == "__main__":
    try:
        from boot import start  # the software slot boot.py chose (keypin.ota); a crash on trial resets
    except ImportError:  # a boot.py without slots
        start = None
    if (start(run) if start else run()) is None:  # not started (config.json or pin store unusable)
        sys.exit(1)
