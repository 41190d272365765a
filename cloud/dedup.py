"""Cross-gateway dedup: one RuuviTag measurement heard by several gateways is written once.

A measurement is identified by what the tag says, never by a gateway's clock (a gateway an hour behind must not
make its copies look like other measurements): the tag's `mac`, its data format, its
`measurement_sequence_number`, and the measured values. The values tell two measurements with the same sequence
number apart: after the tag's counter wrapped, and after the tag rebooted (its counter restarts), the number
comes again with other values. Copies of one measurement carry the very same values (they are one advert); only
`rssi` and the gateway differ, and neither is compared. The values compared are those every format with a
sequence number carries (VALUE_FIELDS); the fingerprint is a hash of them, so equal values are certain and a
collision of different ones is negligible (64 bits).

The span: a copy matches a remembered measurement only while the tag has had fewer than `span` other measurements
written since, a quarter of its counter's range (SEQ_BITS: 16 bits for formats 5, C5 and 8, 8 for 6, 24 for E1),
e.g. 16,384 measurements, about 6 h of a RuuviTag. So a number that came round again after a wrap is a new
measurement even if its values happen to equal the old ones (a tag at rest), while a gateway replaying a backlog of
up to that many measurements is still matched. Counting the tag's written measurements, rather than subtracting
sequence numbers, needs no guess about which way the counter moved: a reboot or a gateway far behind cannot make
the others' copies look out of span.

Which copy is written: the first to reach this process (the order of the batches and, within one, of the points).
Every dropped copy is counted against the gateway that sent it; the very same point again (same gateway, same
receive time) is a redelivery, counted apart.

Points without a sequence number (data format 3, flat sensors) cannot be matched and always pass: each gateway
that hears a DF3 tag writes its own copy, under its own `gateway` tag.

The memory is bounded: the oldest `max_entries` measurements are forgotten first. A copy that arrives after its
measurement was forgotten is written again, under its own `gateway` tag. Pure: no I/O, no clock. `remember()`
loads what an earlier run wrote (cloud/dedup_journal.py keeps that on disk), so a restart does not start with an
empty memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cloud.model import FieldValue, Point

SEQ_FIELD = "measurement_sequence_number"
# Bits of the tag's measurement counter per data format (the `data_format` tag; C5 = 197, E1 = 225).
SEQ_BITS = {"5": 16, "197": 16, "8": 16, "6": 8, "225": 24}
DEFAULT_SEQ_BITS = 16
# Measured values that tell two measurements with the same sequence number apart; a key a format lacks counts as -1.
VALUE_FIELDS = ("temperature", "humidity", "pressure", "acceleration_x", "acceleration_y", "acceleration_z",
                "battery_voltage", "movement_counter", "pm2_5", "co2")

# One written point as the journal keeps it: (measurement, mac, data format, sequence number, fingerprint,
# gateway receive time, gateway).
Entry = tuple[str, str, str, int, int, int, str]

# What is remembered per measurement: (fingerprint, the tag's written-measurement count when it was written,
# gateway, gateway receive time). A plain tuple: this runs once per point.
_Seen = tuple[int, int, str, int]


def fingerprint(fields: dict[str, FieldValue]) -> int:
    """A hash of the measured values (VALUE_FIELDS); numbers hash the same in every process (unlike None). The C
    code of speedups/ gives the same hash, when installed."""
    get = fields.get
    # VALUE_FIELDS spelled out: 0.27 us per point instead of 0.56 for a loop over the names (timeit).
    return hash((get("temperature", -1), get("humidity", -1), get("pressure", -1), get("acceleration_x", -1),
                 get("acceleration_y", -1), get("acceleration_z", -1), get("battery_voltage", -1),
                 get("movement_counter", -1), get("pm2_5", -1), get("co2", -1)))


# The same hash in C (speedups/, optional): 2,700 instead of 5,100 instructions per point (callgrind).
_c_fingerprint: Callable[[dict[str, FieldValue], tuple[str, ...]], int] | None
try:
    from edge_gw_speedups import fingerprint as _c_fingerprint
except ImportError:
    _c_fingerprint = None

_SPANS = {df: (1 << bits) // 4 for df, bits in SEQ_BITS.items()}
_DEFAULT_SPAN = (1 << DEFAULT_SEQ_BITS) // 4


def span_of(data_format: str) -> int:
    return _SPANS.get(data_format, _DEFAULT_SPAN)


@dataclass(slots=True)
class DedupResult:
    kept: list[Point]
    # Per kept point, its journal entry (None: dedup cannot match it), so the journal does not work them out again.
    entries: list[Entry | None] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)  # gateway -> copies dropped
    redeliveries: int = 0  # the very same point again (same gateway, same receive time): MQTT redelivery

    @property
    def dropped(self) -> int:
        return sum(self.duplicates.values()) + self.redeliveries


class Dedup:
    def __init__(self, *, max_entries: int = 500_000, window_s: float | None = None) -> None:
        """`window_s` is accepted for the old `dedup.window` setting and has no effect: copies are matched by
        what the tag says, not by receive times."""
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        del window_s
        self.max_entries = max_entries
        # Keyed by hashes, not by tuples of names: a full memory is 500,000 entries that each point looks up, adds
        # and evicts, and small keys cut the cache misses (a quarter of the Kafka consumer's CPU went here with
        # tuple keys in an OrderedDict). A 64-bit hash collision between two remembered measurements is as
        # negligible as one of their fingerprints (above).
        self._seen: dict[int, _Seen] = {}  # hash((tag key, seq)) -> what was written
        self._order: deque[int] = deque()  # the keys of _seen, oldest first
        self._stale: dict[int, int] = {}  # key -> its older places in _order (its number came again: wrap, reboot)
        self._written: dict[int, int] = {}  # hash((measurement, mac, data format)) -> measurements written so far
        self._order_slack = 1024  # stale places allowed in _order beyond twice the live ones (tests set it low)

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, entries: Iterable[Entry]) -> None:
        """Seed the memory with points written before, oldest first, as if filter() had kept them."""
        for measurement, mac, df, seq, fp, t, gateway in entries:
            tag = hash((measurement, mac, df))
            self._add(tag, hash((tag, seq)), fp, gateway, t)

    def _add(self, tag: int, key: int, fp: int, gateway: str, t: int) -> None:
        """A new measurement (filter() does the same, inline)."""
        written = self._written
        n = written.get(tag, 0) + 1
        if n == 1 and len(written) >= self.max_entries:
            # More tags than measurements remembered: forget the count of the tag seen first. Should it come back,
            # its count restarts below those of its remembered entries, which then count as in span: only the
            # values and the number decide for them, as they did before the span.
            del written[next(iter(written))]
        written[tag] = n
        seen = self._seen
        if key in seen:  # a new measurement with the number of an old one (wrap, reboot): the newer entry
            self._written_again(key)
        seen[key] = (fp, n, gateway, t)
        self._order.append(key)
        if len(seen) > self.max_entries:
            self._forget_oldest()

    def _written_again(self, key: int) -> None:
        """`key` is about to be added again: its old place in _order goes stale (skipped when its turn comes)."""
        del self._seen[key]  # re-added at the end: the dict stays in the order of _order's live places
        if len(self._order) > 2 * len(self._seen) + self._order_slack:
            # A memory that never fills never reaches its stale places: start afresh from the live ones instead.
            self._order = deque(self._seen)
            self._stale.clear()
        else:
            self._stale[key] = self._stale.get(key, 0) + 1

    def _forget_oldest(self) -> None:
        seen, order, stale = self._seen, self._order, self._stale
        while len(seen) > self.max_entries:
            key = order.popleft()
            older = stale.get(key)
            if older is None:
                del seen[key]
            elif older == 1:
                del stale[key]  # that was the old place of a key written again: it stays
            else:
                stale[key] = older - 1

    def filter(self, points: Sequence[Point]) -> DedupResult:
        """Return the points to write, in their original order, and what was dropped."""
        result = DedupResult(kept=[])
        kept = result.kept
        kept_entries = result.entries
        seen = self._seen
        written = self._written
        order = self._order
        stale = self._stale
        duplicates = result.duplicates
        spans = _SPANS
        max_entries = self.max_entries
        c_fingerprint = _c_fingerprint
        for p in points:
            fields = p.fields
            seq = fields.get(SEQ_FIELD)
            tags = p.tags
            mac = tags.get("mac")
            if type(seq) is not int or mac is None:
                kept.append(p)
                kept_entries.append(None)
                continue
            df = tags.get("data_format", "")
            measurement = p.measurement
            tag = hash((measurement, mac, df))
            key = hash((tag, seq))
            fp = c_fingerprint(fields, VALUE_FIELDS) if c_fingerprint is not None else fingerprint(fields)
            gateway = tags.get("gateway", "")
            n = written.get(tag, 0)
            prev = seen.get(key)
            if prev is not None and prev[0] == fp and n - prev[1] < spans.get(df, _DEFAULT_SPAN):
                if prev[2] == gateway and prev[3] == p.time_ns:
                    result.redeliveries += 1
                else:
                    duplicates[gateway] = duplicates.get(gateway, 0) + 1
                continue
            # A new measurement: _add(), inline (this runs once per point).
            if n == 0 and len(written) >= max_entries:
                del written[next(iter(written))]
            written[tag] = n + 1
            if prev is not None:
                self._written_again(key)
                order = self._order
            time_ns = p.time_ns
            seen[key] = (fp, n + 1, gateway, time_ns)
            order.append(key)
            if len(seen) > max_entries:
                # The oldest: inline while no number came again (the common case).
                if stale:
                    self._forget_oldest()
                else:
                    del seen[order.popleft()]
            kept.append(p)
            kept_entries.append((measurement, mac, df, seq, fp, time_ns, gateway))
        return result
