"""Dedup: one reading per (mac, format, sequence) within the window; bounded in time and entries."""


from hypothesis import given, settings
from hypothesis import strategies as st

from edge.dedup import Dedup

S = 1_000_000_000  # ns
DF5 = b"\x05" + bytes(23)
DF3 = b"\x03" + bytes(13)


def test_repeats_of_one_measurement_are_duplicates() -> None:
    d = Dedup(window_s=60)
    assert [d.is_duplicate("aa", 7, DF5, t * S) for t in (0, 1, 2)] == [False, True, True]
    assert d.is_duplicate("aa", 8, DF5, 3 * S) is False
    assert d.is_duplicate("bb", 7, DF5, 3 * S) is False  # another tag
    assert d.duplicates == 2


def test_window_expiry_is_exclusive() -> None:
    d = Dedup(window_s=10)
    assert d.is_duplicate("aa", 1, DF5, 0) is False
    assert d.is_duplicate("aa", 1, DF5, 10 * S - 1) is True
    assert d.is_duplicate("aa", 1, DF5, 10 * S) is False  # a wrapped counter, seen again after the window
    assert d.is_duplicate("aa", 1, DF5, 15 * S) is True  # remembered from 10 s on
    assert len(d) == 1


def test_counter_wrap_around() -> None:
    d = Dedup(window_s=60)
    seqs = [65533, 65533, 65534, 65534, 65534, 0, 0, 1, 1, 1]
    kept = [s for i, s in enumerate(seqs) if not d.is_duplicate("aa", s, DF5, i * S)]
    assert kept == [65533, 65534, 0, 1]
    # 65535 measurements later (about 18 h at 1 Hz) the same number is a new reading.
    assert d.is_duplicate("aa", 0, DF5, 18 * 3600 * S) is False


def test_format_byte_separates_df6_and_e1() -> None:
    d = Dedup()
    assert d.is_duplicate("aa", 5, b"\x06" + bytes(19), 0) is False
    assert d.is_duplicate("aa", 5, b"\xe1" + bytes(39), 0) is False
    assert d.is_duplicate("aa", 5, b"\xe1" + bytes(39), 1) is True


def test_formats_without_sequence_use_the_payload() -> None:
    d = Dedup(window_s=60)
    other = b"\x03" + bytes(12) + b"\x01"
    assert [d.is_duplicate("aa", None, p, i * S) for i, p in enumerate((DF3, DF3, other, DF3, other))] == [
        False, True, False, True, True]
    assert d.is_duplicate("bb", None, DF3, 5 * S) is False
    assert d.is_duplicate("aa", None, DF3, 61 * S) is False


def test_entries_are_bounded_and_the_newest_survive() -> None:
    d = Dedup(window_s=3600, max_entries=1000)
    for i in range(100_000):
        assert d.is_duplicate(f"m{i % 5000}", i, DF5, i) is False
        assert len(d) <= 1000
    assert d.evicted == 99_000
    assert d.is_duplicate("m4999", 99_999, DF5, 100_000) is True  # most recent kept
    assert d.is_duplicate("m0", 0, DF5, 100_000) is False  # oldest forgotten


def test_a_full_window_stays_at_its_bound_over_a_long_history() -> None:
    # 10k keys per window, so from the 10k-th call on every call expires one key and the dict stays full. That the
    # cost per call does not grow with history is measured in bench/bench_timing.py, not asserted here.
    d = Dedup(window_s=1, max_entries=10_000)
    for i in range(320_000):
        d.is_duplicate("aa", i % 65535, DF5, i * 100_000)
    assert len(d) == 10_000


class Reference:
    """The obvious, slow version: remember every key's first time; a duplicate is a key seen < window ago."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.first: dict[object, int] = {}

    def is_duplicate(self, mac: str, seq: int | None, payload: bytes, now: int) -> bool:
        key = (mac, payload[0], seq) if seq is not None else (mac, payload)
        first = self.first.get(key)
        if first is not None and now - first < self.window_ns:
            return True
        self.first[key] = now
        return False


events = st.lists(st.tuples(
    st.sampled_from(["aa", "bb", "cc"]),
    st.one_of(st.none(), st.integers(0, 4), st.integers(65530, 65534)),
    st.sampled_from([DF5, DF3, b"\x06" + bytes(19), b"\xe1" + bytes(39)]),
    st.integers(0, 3 * S),  # time step
), max_size=200)


@given(events=events, window=st.integers(1, 5))
@settings(max_examples=300, deadline=None)
def test_matches_the_reference_when_unbounded(events: list[tuple[str, int | None, bytes, int]], window: int) -> None:
    d, ref = Dedup(window_s=window, max_entries=10**9), Reference(window * S)
    now = dups = 0
    for mac, seq, payload, step in events:
        now += step
        expected = ref.is_duplicate(mac, seq, payload, now)
        assert d.is_duplicate(mac, seq, payload, now) == expected
        dups += expected
    assert d.duplicates == dups


@given(events=events, bound=st.integers(1, 8))
@settings(max_examples=300, deadline=None)
def test_bound_holds_and_an_immediate_repeat_is_always_caught(events: list[tuple[str, int | None, bytes, int]],
                                                            bound: int) -> None:
    d = Dedup(window_s=2, max_entries=bound)
    now = 0
    for mac, seq, payload, step in events:
        now += step
        d.is_duplicate(mac, seq, payload, now)
        assert len(d) <= bound
        assert d.is_duplicate(mac, seq, payload, now) is True
