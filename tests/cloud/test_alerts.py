"""The alert evaluator (cloud/alerts.py), pure: rules, points and clock in, the exact events out."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cloud.alerts import Evaluator, Event, Rule
from cloud.config import alert_settings, load_config
from cloud.model import Point
from core.settings import ConfigError

S = 1_000_000_000
MIN = 60 * S
T0 = 1_763_900_000 * S
A = "c0:ff:ee:00:00:01"
B = "c0:ff:ee:00:00:02"


def pt(mac: str, t: int, df: str = "5", **fields: float) -> Point:
    return Point("ruuvi", {"mac": mac, "gateway": "pi-1", "data_format": df}, dict(fields), t)


def temps(mac: str, start: int, step: int, values: list[float]) -> list[Point]:
    return [pt(mac, start + i * step, temperature=v) for i, v in enumerate(values)]


def brief(events: list[Event]) -> list[tuple[str, str, str, int, int, float | None, bool]]:
    """(rule, mac, state, startsAt, endsAt, value, late), times in minutes after T0."""
    def m(ns: int) -> int:
        return (ns - T0) // MIN if ns else -1
    return [(e.rule, e.mac, e.state, m(e.starts_ns), m(e.ends_ns), e.value, e.late) for e in events]


COLD = Rule("cold-room", "threshold", field="temperature", op=">", value=8.0, clear=7.5, duration_s=600)


def live(ev: Evaluator, points: list[Point]) -> list[Event]:
    """Each point observed when it arrives (the receiver's clock = its timestamp + 1 s)."""
    out: list[Event] = []
    for p in points:
        out += ev.observe([p], p.time_ns + S)
    return out


def test_threshold_fires_after_its_duration_once_and_resolves_past_the_clear_level() -> None:
    ev = Evaluator([COLD], horizon_s=600)
    # one reading a minute: 9 °C from minute 1; 7.8 (still above clear 7.5) at 13, 7.4 at 14
    values = [7.0, 9.0, 9.0, 8.5, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 7.8, 7.4, 7.0]
    events = live(ev, temps(A, T0, MIN, values))
    assert brief(events) == [
        ("cold-room", A, "firing", 11, -1, 9.0, False),  # true since minute 1, 10 min later
        ("cold-room", A, "resolved", 11, 14, 7.4, False),  # 7.8 is above clear: still firing at 13
    ]


def test_a_dip_below_the_threshold_restarts_the_duration() -> None:
    ev = Evaluator([COLD], horizon_s=600)
    values = [9.0] * 9 + [7.9] + [9.0] * 11
    events = live(ev, temps(A, T0, MIN, values))
    assert brief(events) == [("cold-room", A, "firing", 20, -1, 9.0, False)]


def test_rate_of_change_within_its_window() -> None:
    rise = Rule("warming", "rate", field="temperature", op=">", value=2.0, per_s=600)
    ev = Evaluator([rise], horizon_s=600)
    # +0.25 °C a minute: exactly 2.0 after 8 min (not more), 2.25 at minute 9; flat from minute 10
    values = [4.0 + 0.25 * i for i in range(11)] + [6.5] * 12
    events = live(ev, temps(A, T0, MIN, values))
    assert brief(events) == [
        ("warming", A, "firing", 9, -1, 2.25, False),
        # the window (minutes 1..11) still holds 4.25 at minute 11 (+2.25); at 12 the lowest is 4.5: +2.0, not more
        ("warming", A, "resolved", 9, 12, 2.0, False),
    ]


def test_falling_rate() -> None:
    drop = Rule("door-open", "rate", field="temperature", op="<", value=-3.0, per_s=300)
    ev = Evaluator([drop], horizon_s=600)
    events = live(ev, temps(A, T0, MIN, [20.0, 19.0, 16.5, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0]))
    # -3.5 at minute 2; at minute 6 the 5-min window (1..6) holds 19.0 at most: -3.0, not below -3
    assert brief(events) == [("door-open", A, "firing", 2, -1, -3.5, False),
                             ("door-open", A, "resolved", 2, 6, -3.0, False)]


def test_silence_against_the_receiver_clock_for_seen_and_listed_tags() -> None:
    quiet = Rule("quiet", "silence", after_s=1800, tags=(A, B))
    ev = Evaluator([quiet], horizon_s=600)
    assert ev.observe([pt(A, T0, temperature=5.0)], T0) == []
    assert ev.tick(T0 + 30 * MIN) == []  # exactly `after`: not yet
    assert brief(ev.tick(T0 + 30 * MIN + S)) == [
        ("quiet", A, "firing", 30, -1, 1801.0, False),
        ("quiet", B, "firing", 30, -1, 1801.0, False),  # never heard since the evaluator started at T0
    ]
    assert ev.tick(T0 + 40 * MIN) == []  # not sent again while it stays firing
    # A backlog of old readings does not end it; a fresh one does, at the receiver's time.
    assert ev.observe([pt(A, T0 + 5 * MIN, temperature=5.0)], T0 + 45 * MIN) == []
    assert brief(ev.observe([pt(A, T0 + 44 * MIN, temperature=5.0)], T0 + 45 * MIN)) == [
        ("quiet", A, "resolved", 30, 45, 60.0, False)]


def test_silence_for_all_tags_covers_every_tag_heard() -> None:
    ev = Evaluator([Rule("quiet", "silence", after_s=600)], horizon_s=600)
    ev.observe([pt(A, T0, temperature=1.0), pt(B, T0 + 5 * MIN, temperature=1.0)], T0 + 5 * MIN)
    assert brief(ev.tick(T0 + 12 * MIN)) == [("quiet", A, "firing", 10, -1, 720.0, False)]
    assert brief(ev.tick(T0 + 16 * MIN)) == [("quiet", B, "firing", 15, -1, 660.0, False)]


def test_battery_low_for_its_format() -> None:
    bat = Rule("battery", "battery", duration_s=0)
    ev = Evaluator([bat], horizon_s=600)
    points = [
        pt(A, T0, "5", battery_voltage=2450, temperature=20.0),  # DF5 below 2500 mV: low
        pt(B, T0, "3", battery_voltage=2490, temperature=20.0),  # DF3 likewise
        pt("c0:ff:ee:00:00:03", T0, "5", battery_voltage=2200, temperature=-5.0),  # cold: limit 2300
        pt("c0:ff:ee:00:00:04", T0, "5", battery_voltage=2100, temperature=-25.0),  # freezer: limit 2000, fine
        pt("c0:ff:ee:00:00:05", T0, "6", battery_voltage=1000),  # Ruuvi Air has no battery: never
        pt("c0:ff:ee:00:00:06", T0, "5", battery_voltage=2600, temperature=20.0),
    ]
    events = ev.observe(points, T0 + S)
    assert sorted((e.mac, e.state, e.value) for e in events) == [
        (A, "firing", 2450.0), (B, "firing", 2490.0), ("c0:ff:ee:00:00:03", "firing", 2200.0)]
    # Resolves only 100 mV above the limit: 2550 is not enough, a new cell (3000) is.
    assert ev.observe([pt(A, T0 + MIN, "5", battery_voltage=2550, temperature=20.0)], T0 + MIN) == []
    assert brief(ev.observe([pt(A, T0 + 2 * MIN, "5", battery_voltage=3000, temperature=20.0)], T0 + 2 * MIN)) == [
        ("battery", A, "resolved", 0, 2, 3000.0, False)]


def test_rule_for_listed_tags_only() -> None:
    ev = Evaluator([Rule("fridge", "threshold", field="temperature", op=">", value=8.0, tags=(B,))], horizon_s=600)
    events = ev.observe([pt(A, T0, temperature=20.0), pt(B, T0, temperature=9.0)], T0 + S)
    assert brief(events) == [("fridge", B, "firing", 0, -1, 9.0, False)]


def test_a_late_backlog_does_not_fire_for_the_past() -> None:
    ev = Evaluator([COLD], horizon_s=600)
    # A gateway comes back 3 h late with 2 h of readings: an excursion from minute 10 to 40 (over and done), then
    # another from minute 90 still going on at the end of the backlog, which reaches minute 179.
    values = [5.0] * 10 + [9.0] * 30 + [5.0] * 50 + [9.0] * 90
    backlog = temps(A, T0, MIN, values)
    now = T0 + 180 * MIN
    events: list[Event] = []
    for i in range(0, len(backlog), 20):  # in batches, as the receiver writes them
        events += ev.observe(backlog[i:i + 20], now)
    # Only the alert still firing now is sent, once, with the event time it fired; marked late (160 min ago).
    assert brief(events) == [("cold-room", A, "firing", 100, -1, 9.0, True)]
    # A reading out of order (older than what the rule took) changes nothing.
    assert ev.observe([pt(A, T0 + 20 * MIN, temperature=1.0)], now) == []
    assert brief(live(ev, temps(A, T0 + 181 * MIN, MIN, [7.0]))) == [
        ("cold-room", A, "resolved", 100, 181, 7.0, False)]


def test_a_backlog_ends_an_alert_sent_before_the_outage() -> None:
    ev = Evaluator([COLD], horizon_s=600)
    events = live(ev, temps(A, T0, MIN, [9.0] * 11))
    assert brief(events) == [("cold-room", A, "firing", 10, -1, 9.0, False)]
    backlog = temps(A, T0 + 11 * MIN, MIN, [9.0] * 9 + [5.0] * 60)  # ended at minute 20, back 1 h later
    assert ev.observe(backlog[:50], T0 + 80 * MIN) == []  # up to minute 60: beyond the horizon, nothing sent
    assert brief(ev.observe(backlog[50:], T0 + 80 * MIN)) == [("cold-room", A, "resolved", 10, 20, 5.0, True)]


def test_state_survives_a_restart_and_nothing_is_sent_twice() -> None:
    rules = [COLD, Rule("quiet", "silence", after_s=600)]
    ev = Evaluator(rules, horizon_s=600)
    first = live(ev, temps(A, T0, MIN, [9.0] * 11))
    assert brief(first) == [("cold-room", A, "firing", 10, -1, 9.0, False)]
    saved = orjson.loads(orjson.dumps(ev.to_json()))
    again = Evaluator(rules, horizon_s=600)
    again.load(saved)
    assert [(r, m) for r, m, _ in again.firing()] == [("cold-room", A)]
    assert live(again, temps(A, T0 + 11 * MIN, MIN, [9.0] * 5)) == []  # still firing: not sent again
    assert brief(live(again, temps(A, T0 + 16 * MIN, MIN, [7.0]))) == [
        ("cold-room", A, "resolved", 10, 16, 7.0, False)]
    # The pending part survives too: a tag above the limit for 6 min before the restart fires 4 min after it.
    ev2 = Evaluator([COLD], horizon_s=600)
    assert live(ev2, temps(B, T0, MIN, [9.0] * 7)) == []
    restarted = Evaluator([COLD], horizon_s=600)
    restarted.load(orjson.loads(orjson.dumps(ev2.to_json())))
    assert brief(live(restarted, temps(B, T0 + 7 * MIN, MIN, [9.0] * 4))) == [
        ("cold-room", B, "firing", 10, -1, 9.0, False)]


def test_a_rule_removed_from_the_config_loses_its_state() -> None:
    ev = Evaluator([COLD], horizon_s=600)
    live(ev, temps(A, T0, MIN, [9.0] * 11))
    other = Evaluator([Rule("quiet", "silence", after_s=600)], horizon_s=600)
    other.load(ev.to_json())
    assert other.firing() == []


RULE = "[[alerts.rules]]\nname = 'r'\nkind = 'threshold'\nfield = 'temperature'\nvalue = 8\n"


@pytest.mark.parametrize(("toml", "message"), [
    (RULE + "[[alerts.rules]]\nname = 'b'\nkind = 'threshold'\nfield = 'temprature'\n",
     "alerts.rules[1].field: unknown field 'temprature'"),
    ("[[alerts.rules]]\nname = 'x'\nkind = 'treshold'\n", "alerts.rules[0].kind: 'treshold' is not one of"),
    (RULE + "colour = 'red'\n", "alerts.rules[0].colour: unknown key"),
    (RULE + "op = '=>'\n", "alerts.rules[0].op: '=>' is not one of > >= < <="),
    (RULE + "clear = 9\n", "alerts.rules[0].clear: 9.0 is on the firing side of value 8.0"),
    (RULE + "duration = 'long'\n", "alerts.rules[0].duration: expected a duration"),
    (RULE + "tags = ['kitchen']\n", "alerts.rules[0].tags[0]: 'kitchen' is not a MAC"),
    ("[[alerts.rules]]\nname = 'r'\nkind = 'rate'\nfield = 'temperature'\nop = '<'\nvalue = 2\n",
     "alerts.rules[0].value: a rate rule with op '<' needs a negative change"),
    ("[[alerts.rules]]\nname = 'q'\nkind = 'silence'\n", "alerts.rules[0].after: a silence rule needs after >= 1 s"),
    ("[[alerts.rules]]\nname = 'a/b'\nkind = 'silence'\nafter = '1m'\n", "alerts.rules[0].name: 'a/b' must be"),
    (RULE + RULE, "alerts.rules[1].name: 'r' is used by an earlier rule"),
    ("[alerts]\nwebhook_url = 'ftp://x'\n", "alerts.webhook_url: expected http(s)://"),
    ("[alerts]\ntopic_prefix = 'ruuvi'\n" + RULE, "alerts.topic_prefix: 'ruuvi' is under a formats topic"),
])
def test_config_errors_name_the_rule_and_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert message in str(e.value)


def test_config_builds_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(RULE + "tags = ['C0:FF:EE:00:00:01']\nduration = '10m'\nclear = 7.5\n")
    cfg = load_config(path, {"status.file": str(tmp_path / "s.json")}, environ={})
    settings = alert_settings(cfg)
    assert settings is not None and settings.state_file == tmp_path / "s.alerts.json"
    assert settings.rules == (Rule("r", "threshold", field="temperature", op=">", value=8.0, clear=7.5,
                                   duration_s=600.0, tags=(A,)),)
    assert alert_settings(load_config(None, environ={})) is None  # no rules: no alerts at all
