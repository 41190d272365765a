"""The BLE stall watchdog's decisions (pure; the bleak tests drive the real thing against bluezoo)."""

import pytest

from edge.sources.watchdog import RESET_ADAPTER, RESTART_SCANNER, Watchdog


def steps(w: Watchdog, start: float, end: float, tick: float = 0.5) -> list[tuple[float, str]]:
    out = []
    t = start
    while t <= end:
        step = w.check(t)
        if step:
            out.append((t, step))
        t += tick
    return out


def test_nothing_happens_before_the_first_advert() -> None:
    w = Watchdog(stall_s=10, expect_s=60)
    assert steps(w, 0, 1000) == []
    assert w.status(1000) == "waiting"


def test_restart_then_reset_alternately_until_tags_are_no_longer_expected() -> None:
    w = Watchdog(stall_s=10, expect_s=60)
    w.advert(100)
    assert w.status(105) == "receiving"
    assert w.status(110) == "stalled"
    assert steps(w, 100, 400) == [(110, RESTART_SCANNER), (120, RESET_ADAPTER), (130, RESTART_SCANNER),
                                  (140, RESET_ADAPTER), (150, RESTART_SCANNER), (160, RESET_ADAPTER)]
    assert w.status(400) == "idle"


def test_an_advert_ends_the_episode() -> None:
    w = Watchdog(stall_s=10, expect_s=60)
    w.advert(0)
    assert w.check(10) == RESTART_SCANNER
    w.advert(12)  # the restart helped
    assert w.check(21.9) is None
    assert w.check(22) == RESTART_SCANNER  # a new episode starts with a restart again
    assert w.status(22) == "stalled"


def test_steady_adverts_never_trigger() -> None:
    w = Watchdog(stall_s=5, expect_s=50)
    for t in range(0, 1000, 4):
        w.advert(t)
        assert w.check(t + 3.9) is None


def test_armed_at_start_when_tags_are_known_from_before() -> None:
    w = Watchdog(stall_s=10, expect_s=60)
    w.expect_from(100.0)
    assert w.check(109.0) is None
    assert w.check(110.0) == RESTART_SCANNER  # deaf from the start: recovered all the same
    w.expect_from(115.0)  # only arms; it never hides a silence already being handled
    assert w.check(120.0) == RESET_ADAPTER


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="stall_s <= expect_s"):
        Watchdog(stall_s=10, expect_s=5)
