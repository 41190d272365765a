# Fake of MicroPython's `network` module: a station interface that fails the first
# `fail_connects` attempts (set by the test), then connects at once.
STA_IF = 0
AP_IF = 1


class WLAN:
    fail_connects = 0  # class-wide, so a test can set it before the gateway creates its WLAN

    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False
        self._connected = False
        self.attempts = []

    def active(self, *state):
        if state:
            self._active = bool(state[0])
        return self._active

    def connect(self, ssid=None, key=None):
        self.attempts.append((ssid, key))
        if WLAN.fail_connects > 0:
            WLAN.fail_connects -= 1
            return
        self._connected = self._active

    def disconnect(self):
        self._connected = False

    def isconnected(self):
        return self._connected

    def ifconfig(self):
        return ("10.0.0.2", "255.255.255.0", "10.0.0.1", "10.0.0.1") if self._connected else ("0.0.0.0",) * 4
