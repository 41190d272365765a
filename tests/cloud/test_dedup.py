"""Cross-gateway dedup: one measurement (mac + sequence number, within the window) is written once."""

from __future__ import annotations

from cloud.dedup import Dedup
from cloud.model import Point

S = 1_000_000_000
T0 = 1_763_900_000 * S


def p(gw: str, mac: str, seq: int | None, t: int, temp: float = 20.0) -> Point:
    fields: dict[str, float | int | bool | str] = {"temperature": temp}
    if seq is not None:
        fields["measurement_sequence_number"] = seq
    return Point("ruuvi", {"mac": mac, "gateway": gw, "data_format": "5"}, fields, t)


def test_same_measurement_from_two_gateways_is_written_once_and_counted() -> None:
    d = Dedup(window_s=30)
    a = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)
    b = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0 + S // 10)
    r = d.filter([a, b])
    assert r.kept == [a]
    assert r.duplicates == {"gw-b": 1} and r.redeliveries == 0 and r.dropped == 1


def test_first_receive_time_wins_within_a_batch() -> None:
    d = Dedup(window_s=30)
    late = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0 + 2 * S)
    other = p("gw-b", "aa:aa:aa:aa:aa:02", 1, T0)
    early = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)
    r = d.filter([late, other, early])
    assert r.kept == [other, early]  # original order kept, the earlier copy replaced the later one
    assert r.duplicates == {"gw-b": 1}


def test_across_batches_the_written_copy_stays() -> None:
    d = Dedup(window_s=30)
    first = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0 + S)
    assert d.filter([first]).kept == [first]
    r = d.filter([p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)])
    assert r.kept == [] and r.duplicates == {"gw-a": 1}


def test_redelivery_of_the_same_point_is_dropped_and_counted_apart() -> None:
    d = Dedup(window_s=30)
    a = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)
    d.filter([a])
    r = d.filter([p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)])
    assert r.kept == [] and r.redeliveries == 1 and r.duplicates == {}


def test_sequence_wrap_outside_the_window_is_a_new_measurement() -> None:
    d = Dedup(window_s=30)
    a = p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0)
    b = p("gw-b", "aa:aa:aa:aa:aa:01", 7, T0 + 31 * S)
    assert d.filter([a]).kept == [a]
    assert d.filter([b]).kept == [b]
    # ... and the newer one is now what later copies are compared with.
    assert d.filter([p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0 + 32 * S)]).duplicates == {"gw-a": 1}


def test_points_without_sequence_number_or_mac_always_pass() -> None:
    d = Dedup(window_s=30)
    pts = [p("gw-a", "aa:aa:aa:aa:aa:01", None, T0), p("gw-b", "aa:aa:aa:aa:aa:01", None, T0),
           Point("sensors", {"sensor": "x"}, {"measurement_sequence_number": 1}, T0),
           Point("sensors", {"sensor": "y"}, {"measurement_sequence_number": 1}, T0)]
    assert d.filter(pts).kept == pts
    assert len(d) == 0


def test_different_tags_and_measurements_are_not_confused() -> None:
    d = Dedup(window_s=30)
    pts = [p("gw-a", "aa:aa:aa:aa:aa:01", 7, T0), p("gw-a", "aa:aa:aa:aa:aa:02", 7, T0),
           Point("other", {"mac": "aa:aa:aa:aa:aa:01", "gateway": "gw-b"}, {"measurement_sequence_number": 7}, T0)]
    assert d.filter(pts).kept == pts


def test_memory_is_bounded_oldest_forgotten_first() -> None:
    d = Dedup(window_s=30, max_entries=3)
    d.filter([p("gw-a", f"aa:aa:aa:aa:aa:0{i}", 1, T0) for i in range(5)])
    assert len(d) == 3
    # tag 0 was forgotten: its copy from another gateway is written again; tag 4 is still remembered.
    r = d.filter([p("gw-b", "aa:aa:aa:aa:aa:00", 1, T0), p("gw-b", "aa:aa:aa:aa:aa:04", 1, T0)])
    assert [x.tags["mac"] for x in r.kept] == ["aa:aa:aa:aa:aa:00"] and r.duplicates == {"gw-b": 1}
