# Wall-clock time for readings.  Until NTP has set the clock a reading only gets a ticks_ms()
# stamp; once the clock is synced, such readings get the time they were taken, computed back
# from the ticks (docs/wire-format.md: clock_synced is true for both).
import time

# Some ports count from 2000-01-01; the wire format wants Unix time.
_EPOCH_NS = 946684800 * 1000000000 if time.gmtime(0)[0] == 2000 else 0


class Clock:
    def __init__(self, ntp=None):
        self.ntp = ntp  # the `ntptime` module, or None where the clock is set another way
        self.synced = False
        self.corrections = 0

    def now_ns(self):
        return time.time_ns() + _EPOCH_NS

    def sync(self, host=None):
        # Set the RTC from NTP.  Raises OSError when the server cannot be reached.
        if self.ntp is not None:
            if host:
                self.ntp.host = host
            self.ntp.settime()
        self.synced = True

    def stamp(self):
        # (time_ns or None, ticks_ms) for a reading taken now
        return (self.now_ns() if self.synced else None), time.ticks_ms()

    def corrected(self, ticks):
        # The wall-clock time of a reading stamped `ticks` before the clock synced.  Valid while
        # the ticks have not wrapped past half their period (days on an ESP32).
        self.corrections += 1
        return self.now_ns() - time.ticks_diff(time.ticks_ms(), ticks) * 1000000
