"""edge.outstanding: the batches between send and confirmation. Pure, driven with explicit times."""

from __future__ import annotations

import pytest

from edge.outstanding import Outstanding, SentBatch


def batch(seq: int, n: int = 2) -> SentBatch:
    return SentBatch(seq, [seq * 10 + i for i in range(n)], live=True, sent_mono=0.0, sent_wall_ns=1000 + seq)


def ids(batches: list[SentBatch]) -> list[int]:
    return sorted(i for b in batches for i in b.ids)


def test_cloud_mode_deletes_only_on_confirmation() -> None:
    out = Outstanding("cloud", 10.0)
    out.sent(1, batch(7))
    out.sent(2, batch(8))
    assert out.readings == 4
    assert out.puback([1, 2], now=1.0) == []  # the broker took them: nothing to delete yet
    assert [b.seq for b in out.awaiting()] == [7, 8]
    assert out.unacked_batches == 0
    assert out.readings == 4
    assert ids(out.confirm([(8, 8)])) == [80, 81]
    assert ids(out.confirm([(7, 7), (8, 8)])) == [70, 71]  # 8 again: already done, ignored
    assert out.readings == 0
    assert out.awaiting() == []


def test_broker_mode_deletes_on_puback() -> None:
    out = Outstanding("broker", 10.0)
    out.sent(1, batch(7))
    assert ids(out.puback([1], now=1.0)) == [70, 71]
    assert out.readings == 0
    assert out.confirm([(7, 7)]) == []


def test_a_confirmation_before_the_puback_deletes_at_once() -> None:
    out = Outstanding("cloud", 10.0)
    out.sent(5, batch(3))
    assert ids(out.confirm([(3, 3)])) == [30, 31]
    assert out.readings == 0
    assert out.unacked_batches == 1  # still waits for its PUBACK, for the connection's sake
    assert out.puback([5], now=1.0) == []
    assert out.unacked_batches == 0


def test_ranges_overlapping_unsorted_and_wide() -> None:
    out = Outstanding("cloud", 10.0)
    for mid, seq in enumerate([1, 2, 3, 10, 11, 50, 2**52], start=1):
        out.sent(mid, batch(seq, 1))
    done = out.confirm([(10, 10), (0, 2), (1, 3), (40, 2**53 - 1)])
    assert sorted(b.seq for b in done) == [1, 2, 3, 10, 50, 2**52]
    assert [b.seq for b in out.by_seq.values()] == [11]


def test_unknown_seqs_delete_nothing() -> None:
    out = Outstanding("cloud", 10.0)
    out.sent(1, batch(100))
    assert out.confirm([(0, 99), (101, 2**53 - 1)]) == []
    assert out.readings == 2


def test_timeouts_hand_batches_back_and_double_up_to_16x_then_reset() -> None:
    out = Outstanding("cloud", 2.0)
    out.sent(1, batch(1))
    out.sent(2, batch(2))
    out.puback([1], now=0.0)
    out.puback([2], now=1.0)
    assert out.timed_out(1.9) == []
    assert out.next_timeout_mono() == 2.0
    late = out.timed_out(2.0)
    assert [b.seq for b in late] == [1]
    assert out.readings == 2
    assert out.timeout_s == 4.0
    assert [b.seq for b in out.timed_out(5.0)] == [2]
    assert out.timeout_s == 8.0
    for _ in range(5):
        out.sent(9, batch(9))
        out.puback([9], now=0.0)
        out.timed_out(1000.0)
    assert out.timeout_s == 32.0  # 16 x 2 s, no more
    assert out.timeouts == 7
    out.confirm([(99, 99)])  # any confirmation: the cloud is there again
    assert out.timeout_s == 2.0
    assert out.timeouts == 0


def test_a_batch_not_yet_pubacked_never_times_out() -> None:
    out = Outstanding("cloud", 1.0)
    out.sent(1, batch(1))
    assert out.timed_out(100.0) == []
    assert out.next_timeout_mono() is None


def test_connection_lost_forgets_everything() -> None:
    out = Outstanding("cloud", 1.0)
    out.sent(1, batch(1))
    out.sent(2, batch(2))
    out.puback([1], now=0.0)
    assert out.oldest_unconfirmed_wall_ns() == 1001
    assert out.connection_lost() == 4
    assert (out.readings, out.unacked_batches, out.awaiting()) == (0, 0, [])
    assert out.oldest_unconfirmed_wall_ns() is None


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="confirm mode"):
        Outstanding("maybe", 1.0)  # type: ignore[arg-type]
