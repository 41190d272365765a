"""Per-tag status: last seen, rssi, battery, last values, and completeness from measurement sequence gaps."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# The measurement sequence number wraps at these moduli. DF5/C5 count 0..65534 (65535 means "not available"), E1
# counts 0..16777214 likewise, and DF6 carries only the low 8 bits of the Air's counter, all values valid.
SEQ_MODULUS: dict[int, int] = {5: 65535, 0xC5: 65535, 6: 256, 0xE1: 16777215}

# A step backwards by fewer than this many counts is a late (reordered) reading that fills a gap already counted;
# a larger one means the tag restarted its counter.
LATE_WINDOW = 16
# Smoothing of the tag's time per sequence step, used to count whole turns of the counter after a long silence.
_STEP_WEIGHT = 0.1


@dataclass(slots=True)
class TagState:
    mac: str
    data_format: int
    first_seen_ns: int
    last_seen_ns: int
    rssi: int | None
    battery_voltage: int | None
    fields_json: str
    last_seq: int | None = None
    step_ns: float | None = None  # smoothed ns per sequence step
    received: int = 0  # distinct measurements heard
    expected: int = 0  # measurements the tag made over the same span, from the sequence numbers
    # Monotonic time of the last reading, in memory only: the wall clock can step (at NTP sync) and the monotonic
    # clock restarts with each boot, so after a restart the first reading has no trustworthy elapsed time.
    last_mono_ns: int | None = None

    def observe(self, time_ns: int, mono_ns: int, rssi: int | None, data_format: int, values: dict[str, Any],
                fields_json: str) -> None:
        # Readings arrive in receive order, so the latest one is the tag's current state whatever its time_ns.
        elapsed = -1 if self.last_mono_ns is None else mono_ns - self.last_mono_ns
        self.last_mono_ns = mono_ns
        self.last_seen_ns = time_ns
        self.rssi = rssi
        self.fields_json = fields_json
        battery = values.get("battery_voltage")
        if battery is not None:
            self.battery_voltage = battery
        if data_format != self.data_format:
            # A tag switching formats (a firmware update) restarts its sequence accounting.
            self.data_format = data_format
            self.last_seq = None
        seq = values.get("measurement_sequence_number")
        modulus = SEQ_MODULUS.get(data_format)
        if seq is None or modulus is None:
            return
        self._count(seq, modulus, elapsed)

    def _count(self, seq: int, modulus: int, elapsed_ns: int) -> None:
        last = self.last_seq
        if last is None:
            self.last_seq = seq
            self.received += 1
            self.expected += 1
            return
        delta = (seq - last) % modulus
        if delta == 0:
            return  # the same measurement again (dedup lets one through after its window)
        step = self.step_ns
        backwards = delta > modulus // 2
        if step and elapsed_ns > 0:
            # The tag's time per step says roughly how many measurements it made since the last one heard.
            steps = elapsed_ns / step
            turns = round((steps - delta) / modulus)
            if turns > 0:
                # Silent for longer than the counter takes to wrap: count the whole turns the time says it made.
                delta += turns * modulus
                backwards = False
            else:
                backwards = delta > 2 * steps + LATE_WINDOW
        if backwards:
            if modulus - delta < LATE_WINDOW:
                self.received = min(self.received + 1, self.expected)
                return
            self.received += 1  # the tag restarted its counter: a new run of sequence numbers, no gap counted
            self.expected += 1
            self.last_seq = seq
            return
        if delta <= 4 and elapsed_ns > 0:
            sample = elapsed_ns / delta
            self.step_ns = sample if step is None else step + _STEP_WEIGHT * (sample - step)
        self.received += 1
        self.expected += delta
        self.last_seq = seq

    def completeness_pct(self) -> float | None:
        if self.expected == 0:
            return None
        return round(100.0 * self.received / self.expected, 2)

    def row(self) -> tuple[Any, ...]:
        # Spelled out: dataclasses.astuple deep-copies every field and cost 30 µs per call here.
        return (self.mac, self.data_format, self.first_seen_ns, self.last_seen_ns, self.rssi, self.battery_voltage,
                self.fields_json, self.last_seq, self.step_ns, self.received, self.expected)


TAG_COLUMNS = tuple(f.name for f in fields(TagState) if f.name != "last_mono_ns")


def new_tag(mac: str, time_ns: int, mono_ns: int, rssi: int | None, data_format: int, values: dict[str, Any],
            fields_json: str) -> TagState:
    tag = TagState(mac, data_format, time_ns, time_ns, rssi, values.get("battery_voltage"), fields_json)
    tag.observe(time_ns, mono_ns, rssi, data_format, values, fields_json)
    return tag
