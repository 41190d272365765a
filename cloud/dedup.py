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
own `gateway` tag. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud.model import Point

SEQ_FIELD = "measurement_sequence_number"

_Key = tuple[str, str, int]


@dataclass(slots=True)
class _Seen:
    time_ns: int
    gateway: str
    call: int  # which filter() call kept it
    index: int  # its index in that call's `kept` list


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

    def filter(self, points: Sequence[Point]) -> DedupResult:
        """Return the points to write, in their original order, and what was dropped."""
        self._calls += 1
        call = self._calls
        result = DedupResult(kept=[])
        kept = result.kept
        dropped_here: set[int] = set()  # indexes in `kept` replaced by an earlier copy
        seen = self._seen
        window = self.window_ns
        for p in points:
            seq = p.fields.get(SEQ_FIELD)
            mac = p.tags.get("mac")
            if mac is None or type(seq) is not int:
                kept.append(p)
                continue
            key = (p.measurement, mac, seq)
            gateway = p.tags.get("gateway", "")
            prev = seen.get(key)
            if prev is None or abs(p.time_ns - prev.time_ns) > window:
                # A new measurement (or the sequence number wrapped since): remember it as the newest entry.
                if prev is not None:
                    del seen[key]
                seen[key] = _Seen(p.time_ns, gateway, call, len(kept))
                kept.append(p)
                if len(seen) > self.max_entries:
                    seen.popitem(last=False)
                continue
            if prev.gateway == gateway and prev.time_ns == p.time_ns:
                result.redeliveries += 1
                continue
            if prev.call == call and p.time_ns < prev.time_ns:
                # Same batch and this copy was received first: it replaces the one kept so far.
                result.duplicates[prev.gateway] = result.duplicates.get(prev.gateway, 0) + 1
                dropped_here.add(prev.index)
                seen[key] = _Seen(p.time_ns, gateway, call, len(kept))
                kept.append(p)
                continue
            result.duplicates[gateway] = result.duplicates.get(gateway, 0) + 1
        if dropped_here:
            result.kept = [p for i, p in enumerate(kept) if i not in dropped_here]
        return result
