# Freeze keypin into a custom MicroPython firmware build. In your board's manifest:
#     include("/path/to/keypin/firmware/manifest.py")
# then build as usual (make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=...).
# Frozen bytecode lives in flash: keypin then costs almost no Python heap for its code.
# The SPKI module is not frozen here: `keypin image` puts the viper module compiled for the
# board (lib/keypin_spkiv.mpy, keypin.spki.IMPL "viper"), or a C module built with ESP-IDF
# (build/natmod/<arch>/keypin_spki.mpy, IMPL "native"), in the board's /lib; without either the
# pure-Python reference is used (IMPL "python").
require("umqtt.simple")  # noqa: F821 (manifest function)
package("keypin", base_path="../lib")  # noqa: F821
