# Wi-Fi station with exponential backoff between attempts.
import time


class Backoff:
    def __init__(self, first_ms=1000, max_ms=60000):
        self.first_ms = first_ms
        self.max_ms = max_ms
        self.delay_ms = first_ms

    def next(self):
        # The delay to wait now; doubles up to max_ms.
        d = self.delay_ms
        self.delay_ms = min(self.delay_ms * 2, self.max_ms)
        return d

    def reset(self):
        self.delay_ms = self.first_ms


class Wifi:
    def __init__(self, wlan, ssid, password, timeout_s=20):
        self.wlan = wlan
        self.ssid = ssid
        self.password = password
        self.timeout_ms = timeout_s * 1000
        self.backoff = Backoff()
        self.attempts = 0
        self._next_try = None  # ticks_ms before which no new attempt starts

    def isconnected(self):
        return self.wlan.isconnected()

    async def ensure(self, sleep_ms):
        # True once connected.  One attempt per call, and none before the backoff delay has passed.
        if self.wlan.isconnected():
            self.backoff.reset()
            return True
        now = time.ticks_ms()
        if self._next_try is not None and time.ticks_diff(self._next_try, now) > 0:
            return False
        self.attempts += 1
        self.wlan.active(True)
        try:
            self.wlan.connect(self.ssid, self.password)
        except OSError:
            pass
        start = time.ticks_ms()
        while not self.wlan.isconnected() and time.ticks_diff(time.ticks_ms(), start) < self.timeout_ms:
            await sleep_ms(100)
        if self.wlan.isconnected():
            self.backoff.reset()
            self._next_try = None
            return True
        try:
            self.wlan.disconnect()
        except OSError:
            pass
        self._next_try = time.ticks_add(time.ticks_ms(), self.backoff.next())
        return False
