# Fake of MicroPython's `machine` module: only what the gateway and its tests touch.
resets = 0


def unique_id():
    return b"\x24\x0a\xc4\x12\x34\x56"


def reset():
    global resets  # noqa: PLW0603 - module state, as the real module keeps it
    resets += 1
    raise SystemExit("machine.reset()")


def freq(*hz):
    return 240000000


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1
