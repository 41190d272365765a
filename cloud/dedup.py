"""Cross-gateway dedup: one RuuviTag measurement heard by several gateways is written once.

A measurement is identified by the tag's mac plus its `measurement_sequence_number`. Sequence numbers wrap (8 bits
for data format 6, 16 bits for 5 and C5), so two readings are the same measurement only when their gateway receive
times are also within `window_s` of each other. Points without a sequence number (formats 3 and 8, flat sensors)
cannot be matched across gateways and always pass.

Which copy is written: within one batch, the copy with the earliest gateway receive time ("first receive time
wins"). Across batches the copy already written stays; a later copy is dropped even if its clock says it came first,
since replacing a written point would need a DELETE. Every dropped copy is counted against the gateway that sent it.

The memory is bounded: the oldest `max_entries` measurements are forgotten first. A copy that arrives after its
measurement was forgotten (a gateway replaying an hours-old backlog under heavy traffic) is written again, under its
own `gateway` tag. Pure: no I/O, no clock. `remember()` loads what an earlier run wrote (cloud/dedup_journal.py keeps
that on disk), so a restart does not start with an empty memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cloud.model import Point

SEQ_FIELD = "measurement_sequence_number"

_Key = tuple[str, str, int]

# One written point as the journal keeps it: (measurement, mac, sequence number, gateway receive time, gateway).
Entry = tuple[str, str, int, int, str]


# What is remembered per measurement: (gateway receive time, gateway, which filter() call kept it, its index in
# that call's `kept` list). A plain tuple: this runs once per point.
_Seen = tuple[int, str, int, int]


@dataclass(slots=True)
class DedupResult:
    kept: list[Point]
    duplicates: dict[str, int] = field(default_factory=dict)  # gateway -> copies dropped
    redeliveries: int = 0  # the very same point again (same gateway, same receive time): MQTT redelivery

    @property
    def dropped(self) -> int:
        return sum(self.duplicates.values()) + self.redeliveries


class Dedup:
    def __init__(self, *, window_s: float = 30.0, max_entries: int = 500_000) -> None:
        if window_s <= 0 or max_entries < 1:
            raise ValueError("window_s must be > 0 and max_entries >= 1")
        self.window_ns = int(window_s * 1e9)
        self.max_entries = max_entries
        self._seen: OrderedDict[_Key, _Seen] = OrderedDict()
        self._calls = 0

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, entries: Iterable[Entry]) -> None:
        """Seed the memory with points written before, oldest first, as if filter() had kept them."""
        seen = self._seen
        max_entries = self.max_entries
        for measurement, mac, seq, t, gateway in entries:
            key = (measurement, mac, seq)
            if key in seen:
                del seen[key]  # a later write of the key (the sequence number wrapped) is the newer entry
            # Call 0 is no filter() call: a remembered copy is never replaced by an earlier one of a later batch.
            seen[key] = (t, gateway, 0, -1)
            if len(seen) > max_entries:
                seen.popitem(last=False)

    def filter(self, points: Sequence[Point]) -> DedupResult:
        """Return the points to write, in their original order, and what was dropped."""
        self._calls += 1
        call = self._calls
        result = DedupResult(kept=[])
        kept = result.kept
        dropped_here: set[int] = set()  # indexes in `kept` replaced by an earlier copy
        seen = self._seen
        window = self.window_ns
        max_entries = self.max_entries
        duplicates = result.duplicates
        for p in points:
            seq = p.fields.get(SEQ_FIELD)
            if type(seq) is not int:
                kept.append(p)
                continue
            tags = p.tags
            mac = tags.get("mac")
            if mac is None:
                kept.append(p)
                continue
            key = (p.measurement, mac, seq)
            gateway = tags.get("gateway", "")
            t = p.time_ns
            prev = seen.get(key)
            if prev is None or abs(t - prev[0]) > window:
                # A new measurement (or the sequence number wrapped since): remember it as the newest entry.
                if prev is not None:
                    del seen[key]
                seen[key] = (t, gateway, call, len(kept))
                kept.append(p)
                if len(seen) > max_entries:
                    seen.popitem(last=False)
                continue
            prev_time, prev_gateway, prev_call, prev_index = prev
            if prev_gateway == gateway and prev_time == t:
                result.redeliveries += 1
                continue
            if prev_call == call and t < prev_time:
                # Same batch and this copy was received first: it replaces the one kept so far.
                duplicates[prev_gateway] = duplicates.get(prev_gateway, 0) + 1
                dropped_here.add(prev_index)
                seen[key] = (t, gateway, call, len(kept))
                kept.append(p)
                continue
            duplicates[gateway] = duplicates.get(gateway, 0) + 1
        if dropped_here:
            result.kept = [p for i, p in enumerate(kept) if i not in dropped_here]
        return result
