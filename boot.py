# keypin boot: join Wi-Fi on ESP32 (from config.json); in the Unix port there is no radio.
import sys

if sys.platform == "linux":
    print("boot: Unix port, no Wi-Fi to join")
