"""The batcher closes a batch on size, on the in-flight window, and on time; messages are never split."""

from __future__ import annotations

import pytest

from cloud.batcher import Batcher
from cloud.model import Point


def pts(n: int, start: int = 0) -> list[Point]:
    return [Point("ruuvi", {"mac": "aa:bb:cc:dd:ee:ff"}, {"temperature": 1.0}, start + i) for i in range(n)]


def test_closes_on_size_without_splitting_a_message() -> None:
    b: Batcher[str] = Batcher(max_points=10, max_interval_s=10, max_messages=100)
    assert b.add(pts(4), "m1", now=0.0) is None
    assert b.add(pts(4), "m2", now=0.1) is None
    closed = b.add(pts(4), "m3", now=0.2)
    assert closed is not None
    assert (closed.reason, closed.n_points, closed.messages, closed.opened_at, closed.closed_at) == \
        ("size", 12, ["m1", "m2", "m3"], 0.0, 0.2)
    assert b.open_points == 0 and b.deadline() is None


def test_closes_when_the_window_of_messages_is_full() -> None:
    # One reading per message (Ruuvi Gateway traffic): 5000 points would never come while PUBACKs are held.
    b: Batcher[int] = Batcher(max_points=5000, max_interval_s=10, max_messages=3)
    assert b.add(pts(1), 1, 0.0) is None
    assert b.add(pts(1), 2, 0.0) is None
    closed = b.add(pts(1), 3, 0.0)
    assert closed is not None and closed.reason == "window" and closed.messages == [1, 2, 3]


def test_closes_on_time_from_the_first_message() -> None:
    b: Batcher[int] = Batcher(max_points=5000, max_interval_s=10, max_messages=1000)
    assert b.due(100.0) is None
    b.add(pts(2), 1, now=5.0)
    assert b.deadline() == 15.0
    b.add(pts(2), 2, now=14.0)
    assert b.due(14.999) is None
    closed = b.due(15.0)
    assert closed is not None and closed.reason == "time" and closed.n_points == 4
    assert b.due(1000.0) is None


def test_status_messages_without_points_keep_their_place() -> None:
    b: Batcher[str] = Batcher(max_points=5, max_interval_s=1, max_messages=10)
    b.add([], "status", 0.0)
    b.add(pts(5), "batch", 0.0)  # closes on size
    assert b.open_messages == 0
    b.add([], "status2", 1.0)
    closed = b.close("drain", 1.5)
    assert closed is not None and closed.messages == ["status2"] and closed.points() == [] and closed.reason == "drain"
    assert b.close("drain", 2.0) is None


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        Batcher(max_points=0)
    with pytest.raises(ValueError):
        Batcher(max_interval_s=0)
    with pytest.raises(ValueError):
        Batcher(max_messages=0)


def test_a_batch_keeps_each_message_with_its_points_and_drops_whole_messages() -> None:
    b: Batcher[str] = Batcher(max_points=100, max_interval_s=1, max_messages=10)
    b.add(pts(2), "a", 0.0)
    b.add(pts(3, start=10), "b", 0.0)
    b.add(pts(1, start=20), "c", 0.0)
    batch = b.close("drain", 1.0)
    assert batch is not None
    assert [(m, [p.time_ns for p in ps]) for m, ps in batch] == [("a", [0, 1]), ("b", [10, 11, 12]), ("c", [20])]
    assert batch.drop(lambda m: m == "b") == ["b"]
    assert [p.time_ns for p in batch.points()] == [0, 1, 20] and batch.n_points == 3 and len(batch) == 2
