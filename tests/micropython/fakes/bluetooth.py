# Fake of MicroPython's `bluetooth` module (the WebAssembly port has none): a BLE object whose
# scan results are injected by the test and delivered to the IRQ handler as the stack does,
# as memoryviews into a buffer that is reused afterwards.
_IRQ_SCAN_RESULT = 5
_IRQ_SCAN_DONE = 6


class BLE:
    def __init__(self):
        self._active = False
        self._irq = None
        self.scans = []  # gap_scan() arguments, in order
        self._buf = bytearray(255)

    def active(self, *state):
        if state:
            self._active = bool(state[0])
        return self._active

    def irq(self, handler):
        self._irq = handler

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        self.scans.append((duration_ms, interval_us, window_us, active))

    def inject(self, addr, rssi, adv_data, addr_type=0, adv_type=0):
        # Deliver one advertisement to the IRQ handler, then scribble over the buffer the way a
        # real stack reuses it, so a handler that keeps the views is caught.
        n = len(adv_data)
        self._buf[:6] = addr
        self._buf[6 : 6 + n] = adv_data
        mv = memoryview(self._buf)
        self._irq(_IRQ_SCAN_RESULT, (addr_type, mv[:6], adv_type, rssi, mv[6 : 6 + n]))
        for i in range(6 + n):
            self._buf[i] = 0xAA

    def scan_done(self):
        self._irq(_IRQ_SCAN_DONE, None)
