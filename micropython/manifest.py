# Freeze the gateway into a MicroPython ESP32 firmware image (saves the heap the .mpy files
# would take when imported).  From a micropython checkout:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/edge-gw/micropython/manifest.py
# main.py stays a file on the board's filesystem (copy it with mpremote, with config.json).
include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules (ntptime, ...)
module("config.py")
module("gateway.py")
module("mqtt.py")
module("net.py")
module("ring.py")
module("ruuvi.py")
module("scanner.py")
module("timebase.py")
module("wire.py")
