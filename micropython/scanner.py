# BLE scanning with `bluetooth` IRQs.  The IRQ handler only finds the Ruuvi manufacturer data
# (company id 0x0499) and queues a copy; decoding, dedup and storing happen in the task.
from collections import deque

from micropython import const

import ruuvi

_IRQ_SCAN_RESULT = const(5)
_IRQ_SCAN_DONE = const(6)
_AD_MANUFACTURER = const(0xFF)
_RUUVI_LO = const(0x99)  # company id 0x0499, little-endian on air
_RUUVI_HI = const(0x04)


def ruuvi_data(adv):
    # (start, end) of the payload after 0x0499 in the advertising data, or None.  Walks the AD
    # structures without allocating, so it is safe in the IRQ.
    i = 0
    n = len(adv)
    while i + 1 < n:
        length = adv[i]
        if length == 0:
            return None
        end = i + 1 + length
        if end > n:
            return None
        if adv[i + 1] == _AD_MANUFACTURER and length >= 4 and adv[i + 2] == _RUUVI_LO and adv[i + 3] == _RUUVI_HI:
            return i + 4, end
        i = end
    return None


class Scanner:
    def __init__(self, ble, queue_len=64, max_tags=256):
        self.ble = ble
        # (addr, rssi, payload); the oldest is dropped when full
        self.queue = deque((), queue_len)  # type: deque[tuple[bytes, int, bytes]]
        self.seen = {}  # mac (6 bytes) -> last measurement sequence, or the payload when it has none
        self.max_tags = max_tags
        self.adverts = 0
        self.decode_errors = 0
        self.duplicates = 0
        self.scan_done = False

    def start(self, interval_us=30000, window_us=30000, active=False):
        self.ble.active(True)
        self.ble.irq(self.irq)
        self.scan_done = False
        # duration 0 = scan until stopped
        self.ble.gap_scan(0, interval_us, window_us, active)

    def stop(self):
        self.ble.gap_scan(None)

    def irq(self, event, data):
        if event == _IRQ_SCAN_RESULT:
            _addr_type, addr, _adv_type, rssi, adv = data
            span = ruuvi_data(adv)
            if span is not None:
                # addr and adv are views into a buffer the stack reuses: copy what we keep
                self.queue.append((bytes(addr), rssi, bytes(adv[span[0] : span[1]])))
        elif event == _IRQ_SCAN_DONE:
            self.scan_done = True

    def drain(self, handle):
        # Decode-check and dedup queued adverts; handle(mac, rssi, payload) for each new one.
        # Returns how many were handed over.
        n = 0
        q = self.queue
        while q:
            mac, rssi, payload = q.popleft()
            self.adverts += 1
            try:
                ruuvi.check(payload)
            except ruuvi.DecodeError:
                self.decode_errors += 1
                continue
            key = ruuvi.sequence(payload)
            if key is None:
                key = payload
            if self.seen.get(mac) == key:
                self.duplicates += 1
                continue
            if mac not in self.seen and len(self.seen) >= self.max_tags:
                self.seen.clear()  # bounded memory; costs at most one duplicate per tag
            self.seen[mac] = key
            handle(mac, rssi, payload)
            n += 1
        return n

    def tags_seen(self):
        return len(self.seen)
