# One power-on of the device in the Unix port, run with the device's filesystem root as the
# current directory: the bootloader (the esp32 stand-in's app-rollback rule, when it is on
# MICROPYPATH), then boot.py and main.py in one __main__ namespace, as the ESP32 port runs
# them. Exit status 75: the software reset the board (keypin's boot.reset).
import sys

sys.path[0] = ""  # the board's path starts with the filesystem root, not this script's directory
try:
    import esp32

    esp32.bootloader()
except ImportError:
    pass
g = {"__name__": "__main__"}
for name in ("boot.py", "main.py"):
    with open(name) as f:
        exec(f.read(), g)  # noqa: S102  (the firmware runs these two files the same way)
