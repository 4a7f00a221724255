# Device-test runner, run in the Unix port by tests/test_device.py:
#   tools/upy tests/device/runner.py dev_spki [test_name ...]
# Prints one line per test: "KPTEST PASS name" or "KPTEST FAIL name: error".
import io
import sys

sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])
mod = __import__(sys.argv[1])
names = sys.argv[2:] or sorted(n for n in dir(mod) if n.startswith("test_"))
for n in names:
    try:
        getattr(mod, n)()
        print("KPTEST PASS", n)
    except Exception as e:
        buf = io.StringIO()
        sys.print_exception(e, buf)
        print("KPTEST FAIL", n + ":", repr(buf.getvalue()))
