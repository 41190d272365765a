"""Drop re-advertised measurements: a tag sends each measurement several times.

A reading is identified by (mac, format byte, measurement sequence number). The sequence counter wraps (8, 16 or
24 bits depending on the format), so a key is only remembered for `window_s`; and a flood of distinct keys cannot
grow memory past `max_entries` (the oldest are forgotten first). Formats without a sequence number (DF3, DF8, or a
"not available" sequence) are identified by the whole payload instead: the same bytes from the same mac within the
window are the duplicate.

The format byte is part of the key because a Ruuvi Air sends the same measurement as DF6 (8-bit sequence) and E1
(24-bit sequence); both are kept, and their counters never collide.

Pure and O(1) amortised per call: an OrderedDict in first-seen order, expired from the front. `now_ns` must not go
backwards (use a monotonic clock); if it does, the entry bound still holds.
"""

from __future__ import annotations

from collections import OrderedDict

from edge.config import DedupSection

Key = tuple[str, int, int] | tuple[str, bytes]


class Dedup:
    def __init__(self, window_s: float = float(DedupSection.window),
                 max_entries: int = DedupSection.max_entries) -> None:
        if window_s <= 0:
            raise ValueError("dedup window must be positive")
        if max_entries < 1:
            raise ValueError("dedup max_entries must be at least 1")
        self.window_ns = int(window_s * 1e9)
        self.max_entries = max_entries
        self.duplicates = 0
        self.evicted = 0  # keys forgotten because of max_entries before their window ended
        self._seen: OrderedDict[Key, int] = OrderedDict()
        self._next_expiry_ns = -(1 << 62)

    def __len__(self) -> int:
        return len(self._seen)

    def is_duplicate(self, mac: str, seq: int | None, payload: bytes, now_ns: int) -> bool:
        seen = self._seen
        horizon = now_ns - self.window_ns
        if now_ns >= self._next_expiry_ns:
            self._expire(horizon)
            # Expiring on every call cost a third of the gateway's hot path; once per tenth of a window keeps the
            # table within ~1.1 windows (and max_entries bounds it regardless), while lookups stay exact below.
            self._next_expiry_ns = now_ns + self.window_ns // 10
        key: Key = (mac, payload[0] if payload else -1, seq) if seq is not None else (mac, payload)
        first_ns = seen.get(key)
        if first_ns is not None:
            if first_ns > horizon:
                self.duplicates += 1
                return True
            del seen[key]  # seen again after its window: a wrapped counter, a new reading
        seen[key] = now_ns
        if len(seen) > self.max_entries:
            seen.popitem(last=False)
            self.evicted += 1
        return False

    def _expire(self, horizon: int) -> None:
        seen = self._seen
        # In first-seen order, so expire from the oldest end; each key is removed at most once.
        while seen:
            key, oldest_ns = next(iter(seen.items()))
            if oldest_ns > horizon:
                break
            del seen[key]
