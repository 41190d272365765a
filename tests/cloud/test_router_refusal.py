"""Router: a reading with a timestamp out of bounds is refused on its own; the rest of its batch is kept (pure)."""

from __future__ import annotations

import orjson

from cloud.formats import FormatsConfig, Router
from cloud.model import Refused

NOW = 1_763_913_700_000_000_000
S = 1_000_000_000
FIELDS = {"data_format": 5, "temperature": 24.3, "humidity": 53.49, "pressure": 100044,
          "measurement_sequence_number": 0}


def reading(i: int, time_ns: int) -> dict[str, object]:
    return {"mac": f"c0:ff:ee:00:00:{i:02x}", "time_ns": time_ns, "clock_synced": True, "rssi": -70,
            "data_format": 5, "raw": "05", "fields": {**FIELDS, "measurement_sequence_number": i}}


def route(readings: list[dict[str, object]]) -> tuple[list[int], list[Refused]]:
    r = Router(FormatsConfig(max_age_s=3600, max_ahead_s=300), clock=lambda: NOW)
    payload = orjson.dumps({"v": 1, "gateway": "gw-1", "seq": 7, "readings": readings})
    parsed = r.route("edge-gw/gw-1/batch", payload)
    assert (parsed.gateway, parsed.seq) == ("gw-1", 7)  # still a batch to confirm
    return [int(p.fields["measurement_sequence_number"]) for p in parsed.points], parsed.refused


def test_the_good_readings_of_a_batch_are_kept_and_each_bad_one_refused_with_its_json() -> None:
    readings = [reading(i, NOW - 60 * S + i) for i in range(40)]
    # A clock stepped an hour ahead mid-batch: 4 readings from the future, one far in the past.
    for i in (3, 17, 18, 39):
        readings[i] = reading(i, NOW + 3600 * S + i)
    readings[25] = reading(25, NOW - 7200 * S)
    kept, refused = route(readings)
    assert kept == [i for i in range(40) if i not in (3, 17, 18, 25, 39)]
    assert [orjson.loads(x.payload) for x in refused] == [readings[i] for i in (3, 17, 18, 25, 39)]
    assert [x.kind for x in refused] == ["ahead", "ahead", "ahead", "too_old", "ahead"]
    assert refused[0].reason == (f"readings[3]: timestamp {NOW + 3600 * S + 3} is outside [now - 3600 s, "
                                 "now + 300 s]: 3600 s ahead of the receiver")
    assert refused[3].reason == (f"readings[25]: timestamp {NOW - 7200 * S} is outside [now - 3600 s, "
                                 "now + 300 s]: 7200 s old")


def test_the_bounds_are_inclusive_and_a_batch_of_only_bad_readings_keeps_nothing() -> None:
    kept, refused = route([reading(0, NOW + 300 * S), reading(1, NOW - 3600 * S)])
    assert (kept, refused) == ([0, 1], [])
    kept, refused = route([reading(0, NOW + 300 * S + 1), reading(1, NOW - 3600 * S - 1)])
    assert kept == []
    assert [x.kind for x in refused] == ["ahead", "too_old"]


def test_a_reading_without_values_is_neither_kept_nor_refused() -> None:
    empty = {**reading(1, NOW + 3600 * S), "fields": {"data_format": 5, "temperature": None}, "rssi": None}
    kept, refused = route([reading(0, NOW), empty, reading(2, NOW + 3600 * S)])
    assert kept == [0]
    assert [orjson.loads(x.payload)["fields"]["measurement_sequence_number"] for x in refused] == [2]
