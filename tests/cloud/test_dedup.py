"""Cross-gateway dedup: one measurement (mac, data format, sequence number and values) is written once, whatever
the gateways' clocks say."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.dedup import VALUE_FIELDS, Dedup, fingerprint, span_of
from cloud.model import Point

S = 1_000_000_000
T0 = 1_763_900_000 * S
HOUR = 3600 * S


def p(gw: str, mac: str, seq: int | None, t: int, temp: float = 20.0, df: str = "5") -> Point:
    fields: dict[str, float | int | bool | str] = {"temperature": temp, "humidity": 40.5, "pressure": 100100.0}
    if seq is not None:
        fields["measurement_sequence_number"] = seq
    return Point("ruuvi", {"mac": mac, "gateway": gw, "data_format": df}, fields, t)


def test_same_measurement_from_two_gateways_is_written_once_and_counted() -> None:
    d = Dedup()
    a = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)
    b = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0 + S // 10)
    r = d.filter([a, b])
    assert r.kept == [a]
    assert r.duplicates == {"gw-b": 1} and r.redeliveries == 0 and r.dropped == 1


def test_a_gateway_an_hour_behind_or_ahead_is_still_matched() -> None:
    d = Dedup()
    a = [p("gw-a", "aa:aa:aa:aa:aa:01", s, T0 + s * S, temp=20 + s / 100) for s in range(100)]
    behind = [p("gw-b", "aa:aa:aa:aa:aa:01", s, T0 + s * S - HOUR, temp=20 + s / 100) for s in range(100)]
    ahead = [p("gw-c", "aa:aa:aa:aa:aa:01", s, T0 + s * S + 5 * HOUR, temp=20 + s / 100) for s in range(100)]
    assert d.filter(a[:50]).kept == a[:50]
    # The skewed copies arrive interleaved with the rest of the live stream, in other batches.
    r = d.filter([*behind, *a[50:], *ahead])
    assert r.kept == behind[50:]  # the first copy to arrive, however old its time
    assert r.duplicates == {"gw-b": 50, "gw-a": 50, "gw-c": 100}


def test_the_first_copy_to_arrive_is_written_whatever_its_time() -> None:
    d = Dedup()
    late = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0 + 2 * S)
    other = p("gw-b", "aa:aa:aa:aa:aa:02", 1, T0)
    early = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0 - HOUR)
    r = d.filter([late, other, early])
    assert r.kept == [late, other]
    assert r.duplicates == {"gw-a": 1}


def test_redelivery_of_the_same_point_is_dropped_and_counted_apart() -> None:
    d = Dedup()
    d.filter([p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)])
    r = d.filter([p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)])
    assert r.kept == [] and r.redeliveries == 1 and r.duplicates == {}


def test_a_tag_that_reboots_restarts_its_counter_with_other_values() -> None:
    d = Dedup()
    before = [p("gw-a", "aa:aa:aa:aa:aa:01", s, T0 + s * S, temp=20.0 + s / 10) for s in range(10)]
    d.filter(before)
    # Rebooted: the counter starts at 0 again, the values are those of new measurements.
    after = [p("gw-a", "aa:aa:aa:aa:aa:01", s, T0 + HOUR + s * S, temp=25.0 + s / 10) for s in range(10)]
    assert d.filter(after).kept == after
    # Copies of the new measurements from another gateway are matched; old copies of the first ones too (in span).
    copies = [p("gw-b", "aa:aa:aa:aa:aa:01", s, T0 + HOUR + s * S, temp=25.0 + s / 10) for s in range(10)]
    r = d.filter(copies)
    assert r.kept == [] and r.duplicates == {"gw-b": 10}


def test_after_a_wrap_the_same_number_with_the_same_values_is_a_new_measurement_once_out_of_span() -> None:
    d = Dedup(max_entries=100_000)
    mac = "aa:aa:aa:aa:aa:01"
    span = span_of("5")
    assert span == 16384
    first = p("gw-a", mac, 7, T0)
    assert d.filter([first]).kept == [first]
    # span - 1 more measurements of the tag: the copy of seq 7 is still a copy ...
    d.filter([p("gw-a", mac, 8 + i, T0 + i, temp=30.0) for i in range(span - 1)])
    assert d.filter([p("gw-b", mac, 7, T0 + 5)]).duplicates == {"gw-b": 1}
    # ... one more, and a tag at rest whose counter came round to 7 again is a new measurement.
    d.filter([p("gw-a", mac, 9000, T0 + HOUR, temp=31.0)])
    again = p("gw-b", mac, 7, T0 + 20 * HOUR)
    assert d.filter([again]).kept == [again]


def test_an_8_bit_counter_has_a_span_of_64() -> None:
    d = Dedup()
    mac = "aa:aa:aa:aa:aa:06"
    d.filter([p("gw-a", mac, s % 256, T0 + s * S, df="6", temp=20.0) for s in range(64)])
    assert d.filter([p("gw-b", mac, 0, T0, df="6")]).duplicates == {"gw-b": 1}
    d.filter([p("gw-a", mac, 64, T0 + 64 * S, df="6", temp=21.0)])
    assert len(d.filter([p("gw-b", mac, 0, T0, df="6")]).kept) == 1


def test_data_formats_are_apart_and_points_without_sequence_number_or_mac_always_pass() -> None:
    d = Dedup()
    e1 = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0, df="225")
    df6 = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0, df="6")
    assert d.filter([e1, df6]).kept == [e1, df6]
    pts = [p("gw-a", "aa:aa:aa:aa:aa:01", None, T0, df="3"), p("gw-b", "aa:aa:aa:aa:aa:01", None, T0, df="3"),
           Point("sensors", {"sensor": "x"}, {"measurement_sequence_number": 1}, T0),
           Point("sensors", {"sensor": "y"}, {"measurement_sequence_number": 1}, T0)]
    assert d.filter(pts).kept == pts  # DF3 has no counter: each gateway's copy is written
    assert len(d) == 2


def test_different_tags_and_measurements_are_not_confused() -> None:
    d = Dedup()
    pts = [p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0), p("gw-a", "aa:aa:aa:aa:aa:02", 7, T0),
           Point("other", {"mac": "aa:aa:aa:aa:aa:01", "gateway": "gw-b"}, {"measurement_sequence_number": 7}, T0)]
    assert d.filter(pts).kept == pts


def test_every_value_field_and_only_those_make_the_fingerprint() -> None:
    base: dict[str, float | int | bool | str] = dict.fromkeys(VALUE_FIELDS, 1)
    for k in VALUE_FIELDS:
        assert fingerprint({**base, k: 2}) != fingerprint(base), k
    assert fingerprint({**base, "rssi": -50, "tx_power": 4, "luminosity": 3.0}) == fingerprint(base)


def test_rssi_and_derived_values_are_not_compared() -> None:
    a = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)
    b = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0)
    b.fields.update(rssi=-90, dew_point=6.5)
    assert fingerprint(a.fields) == fingerprint(b.fields)
    assert Dedup().filter([a, b]).kept == [a]


def test_memory_is_bounded_oldest_forgotten_first() -> None:
    d = Dedup(max_entries=3)
    d.filter([p("gw-a", f"aa:aa:aa:aa:aa:0{i}", 1, T0) for i in range(3)])
    d.filter([p("gw-a", "aa:aa:aa:aa:aa:00", 2, T0, temp=1.0), p("gw-a", "aa:aa:aa:aa:aa:00", 3, T0, temp=2.0)])
    assert len(d) == 3
    # tags 1 and 2 were forgotten: their copies from another gateway are written again; tag 0's newest is not.
    r = d.filter([p("gw-b", "aa:aa:aa:aa:aa:01", 1, T0), p("gw-b", "aa:aa:aa:aa:aa:00", 3, T0, temp=2.0)])
    assert [x.tags["mac"] for x in r.kept] == ["aa:aa:aa:aa:aa:01"] and r.duplicates == {"gw-b": 1}


def test_more_tags_than_entries_forget_the_first_tags_count_not_its_measurements() -> None:
    d = Dedup(max_entries=3)
    d.filter([p("gw-a", f"aa:aa:aa:aa:aa:0{i}", 1, T0) for i in range(3)])
    d.filter([p("gw-a", "aa:aa:aa:aa:aa:00", 2, T0, temp=5.0)])  # evicts tag 1's entry; tag 0 has 2 entries
    assert len(d) == 3 and len(d._written) == 3
    d.filter([p("gw-a", "aa:aa:aa:aa:aa:09", 1, T0)])  # a fourth tag: tag 0's count goes, and its oldest entry
    assert len(d._written) == 3
    r = d.filter([p("gw-b", "aa:aa:aa:aa:aa:00", 2, T0, temp=5.0)])
    assert r.kept == [] and r.duplicates == {"gw-b": 1}


class _Reference:
    """The rules of Dedup written as plainly as possible (tuple keys, an OrderedDict), to check the fast one."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.seen: OrderedDict[tuple[str, str, str, int], tuple[int, int, str, int]] = OrderedDict()
        self.written: dict[tuple[str, str, str], int] = {}

    def filter(self, points: list[Point]) -> tuple[list[Point], dict[str, int], int]:
        kept, dups, redeliveries = [], {}, 0
        for pt in points:
            seq, mac = pt.fields.get("measurement_sequence_number"), pt.tags.get("mac")
            if type(seq) is not int or mac is None:
                kept.append(pt)
                continue
            df, gw = pt.tags.get("data_format", ""), pt.tags.get("gateway", "")
            tag = (pt.measurement, mac, df)
            key = (*tag, seq)
            fp, n = fingerprint(pt.fields), self.written.get(tag, 0)
            prev = self.seen.get(key)
            if prev is not None and prev[0] == fp and n - prev[1] < span_of(df):
                if (prev[2], prev[3]) == (gw, pt.time_ns):
                    redeliveries += 1
                else:
                    dups[gw] = dups.get(gw, 0) + 1
                continue
            if n == 0 and len(self.written) >= self.max_entries:
                del self.written[next(iter(self.written))]
            self.written[tag] = n + 1
            self.seen.pop(key, None)
            self.seen[key] = (fp, n + 1, gw, pt.time_ns)
            if len(self.seen) > self.max_entries:
                self.seen.popitem(last=False)
            kept.append(pt)
        return kept, dups, redeliveries


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(["gw-a", "gw-b"]), st.integers(1, 3),
                                           st.integers(0, 5), st.integers(0, 2), st.sampled_from(["5", "6"])),
                                 max_size=30), max_size=12),
       max_entries=st.integers(1, 40))
def test_dedup_keeps_exactly_what_the_plain_rules_keep(batches: list[list[tuple[str, int, int, int, str]]],
                                                       max_entries: int) -> None:
    """Small memories, few numbers and values: numbers come again (as after a wrap or reboot) and entries are
    forgotten all the time, in the same order as the plain rules forget them."""
    d, ref = Dedup(max_entries=max_entries), _Reference(max_entries)
    d._order_slack = 0  # its bookkeeping starts afresh often, as it does in a memory that never fills
    for i, batch in enumerate(batches):
        pts = [p(gw, f"aa:aa:aa:aa:aa:0{tag}", seq, T0 + (i * 100 + j) * S, temp=20.0 + value, df=df)
               for j, (gw, tag, seq, value, df) in enumerate(batch)]
        r = d.filter(pts)
        assert (r.kept, r.duplicates, r.redeliveries) == ref.filter(pts)
        assert len(d) == len(ref.seen)


def test_a_memory_that_never_fills_does_not_grow_with_numbers_that_come_again() -> None:
    """A few tags wrapping their counters again and again never fill a large memory, so its oldest places are
    never reached; the memory must still stay the size of what it remembers."""
    d = Dedup(max_entries=100_000)
    for lap in range(20):
        d.filter([p("gw-a", "aa:aa:aa:aa:aa:01", s, T0 + lap * 256 + s, temp=20.0 + lap, df="6") for s in range(256)])
    assert len(d) == 256
    assert len(d._order) <= 2 * 256 + 1024 + 1


def test_the_oldest_are_forgotten_first_after_the_bookkeeping_started_afresh() -> None:
    d, ref = Dedup(max_entries=4), _Reference(4)
    d._order_slack = 0
    a, b = "aa:aa:aa:aa:aa:01", "aa:aa:aa:aa:aa:02"
    batches = [[p("gw-a", a, s, T0 + lap * 10 + s, temp=20.0 + lap, df="6") for s in (0, 1)] for lap in range(4)]
    batches.append([p("gw-a", b, s, T0 + 100 + s) for s in range(3)])  # fills the memory: the oldest go
    batches.append([p(gw, mac, s, T0 + 200, temp=t, df=df) for gw in ("gw-b", "gw-c") for mac, s, t, df in
                    [(a, 0, 23.0, "6"), (a, 1, 23.0, "6"), (b, 0, 20.0, "5"), (b, 1, 20.0, "5"), (b, 2, 20.0, "5")]])
    for batch in batches:
        r = d.filter(batch)
        assert (r.kept, r.duplicates, r.redeliveries) == ref.filter(batch)
    assert len(d) == len(ref.seen) == 4
