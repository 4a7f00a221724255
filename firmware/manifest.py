# Freeze keypin into a custom MicroPython firmware build. In your board's manifest:
#     include("/path/to/keypin/firmware/manifest.py")
# then build as usual (make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=...).
# Frozen bytecode lives in flash: keypin then costs almost no Python heap for its code.
# The native SPKI module is a dynamic .mpy and cannot be frozen: copy
# build/natmod/xtensawin/keypin_spki.mpy to the board's /lib to use it (keypin.spki.IMPL
# says "native"); without it the pure-Python reference is used.
require("umqtt.simple")  # noqa: F821 (manifest function)
package("keypin", base_path="../lib")  # noqa: F821
