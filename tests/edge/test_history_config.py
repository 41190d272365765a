"""[history] config: its checks name the key, and include/exclude decide which tags' gaps are fetched."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.settings import ConfigError
from edge.config import load_config
from edge.gateway import history_settings
from edge.history import HistoryFiller
from edge.model import Reading

A, B, C = "c1:00:00:00:00:0a", "c1:00:00:00:00:0b", "c1:00:00:00:00:0c"
S = 1_000_000_000


def live(mac: str, t_s: int) -> Reading:
    return Reading(mac, t_s * S, time.monotonic_ns(), True, -60, 5, b"", {})


def history_config(**keys: str) -> Any:
    return load_config(None, {f"history.{k}": v for k, v in keys.items()}, environ={})


def test_the_sample_values_and_macs_normalised() -> None:
    # As in EDGE_GW_HISTORY_INCLUDE or --set: a comma-separated list.
    cfg = history_config(enabled="true", include="C1:00:00:00:00:0A, c1:00:00:00:00:0b", exclude=B.upper(),
                         gap_threshold="15m")
    s = history_settings(cfg)
    assert (s.enabled, s.gap_threshold_s, s.max_interval_s, s.timeout_s, s.backoff_min_s, s.backoff_max_s) == (
        True, 900.0, 864000.0, 120.0, 60.0, 3600.0)
    assert (s.include, s.exclude) == ([A, B], [B])


@pytest.mark.parametrize(("keys", "message"), [
    ({"include": "not-a-mac"}, "history.include"),
    ({"exclude": "c1:00:00:00:00"}, "history.exclude"),
    ({"gap_threshold": "5s"}, "history.gap_threshold"),
    ({"gap_threshold": "2h", "max_interval": "1h"}, "history.max_interval"),
    ({"backoff_min": "2h", "backoff_max": "1h"}, "history.backoff_min"),
])
def test_bad_values_name_the_key(keys: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        history_config(**keys)


def test_include_and_exclude_decide_whose_gaps_are_fetched() -> None:
    cfg = history_config(enabled="true", include=f"{A},{B}", exclude=B)
    t0 = 1_800_000_000
    filler = HistoryFiller(history_settings(cfg), lambda r: None, dict.fromkeys((A, B, C), t0 * S))
    for mac in (A, B, C):
        filler.observe(live(mac, t0 + 3600))  # an hour unheard: a gap for each
    assert {mac: t.gaps for mac, t in filler.tags.items()} == {A: [[t0, t0 + 3600]]}


def test_a_gap_is_cut_to_max_interval() -> None:
    cfg = history_config(enabled="true", max_interval="1d")
    t0 = 1_800_000_000
    filler = HistoryFiller(history_settings(cfg), lambda r: None, {A: t0 * S})
    filler.observe(live(A, t0 + 3 * 86400))  # three days unheard: only the last day is asked for
    assert filler.tags[A].gaps == [[t0 + 2 * 86400, t0 + 3 * 86400]]
