"""Alerts on the data: rules, per-(rule, tag) state and points in, firing/resolved events out. No I/O here; the
receiver's adapter (cloud/alert_hook.py) feeds it the written points and sends what it returns. Docs:
docs/cloud-ingest.md, "Alerts on the data".

Event time. A point changes an alert's state at the point's own timestamp (the gateway's receive time), never at the
receiver's clock, and a tag's points are taken in timestamp order: one that is not newer than the newest point this
rule already took from the tag (out of order, or a copy) changes nothing.

A late backlog (a gateway back after an outage) does not fire alerts for the past as if they were new. A point whose
timestamp is more than `horizon` behind the receiver's clock updates the state silently. Whenever a point within the
horizon arrives, the state the alert is in is compared with the state last sent, and only a difference is sent. So:
  - an excursion that began and ended inside the backlog sends nothing (the data is in the database);
  - one still going on when the tag catches up sends one firing event, its startsAt the event time it fired and
    `late` true when that is beyond the horizon;
  - an alert that was firing before the outage and ended during it sends one resolved event, endsAt its event time.
While the tag is live (its points within the horizon), every transition is sent, in order.

Silence is judged against the receiver's clock: a tag is silent when the newest timestamp heard from it is more than
`after` behind now. So a backlog that carries only old readings does not end a silence; reaching the present does.
A silence fires at (newest + after) and resolves at the receiver's time the first fresh reading came in.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud.model import Point

KINDS = ("threshold", "rate", "silence", "battery")
OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                                  "<=": operator.le}
STATE_VERSION = 1

# Low battery by data format (the `data_format` tag), in mV of `battery_voltage`. DF3, DF5 and C5 are RuuviTags on a
# CR2477 lithium cell: about 3.0 V for most of its life, then a fast fall; Ruuvi's battery FAQ says to replace it
# below 2.5 V. The cell's voltage sags in the cold without being empty, so below 0 °C (the point's own temperature)
# the threshold is lower. Formats 6 and E1 (Ruuvi Air) run on mains power and report no battery: never matched.
BATTERY_LOW_MV: dict[str, int] = {"3": 2500, "5": 2500, "197": 2500}
BATTERY_COLD_MV = ((-20.0, 2000), (0.0, 2300))  # (temperature at or below, threshold)
BATTERY_CLEAR_MV = 100  # resolved only once the voltage is this far above the threshold again


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str  # one of KINDS
    field: str = ""  # threshold, rate
    op: str = ">"
    value: float = 0.0  # threshold: the limit; rate: the change within `per_s`; battery: mV (0 = BATTERY_LOW_MV)
    clear: float | None = None  # threshold: resolved only once the value is back past this (default `value`)
    duration_s: float = 0.0  # the condition must hold this long (event time) before it fires
    per_s: float = 600.0  # rate: the window
    after_s: float = 0.0  # silence: quiet for this long
    tags: tuple[str, ...] = ()  # MACs (lower case); empty = every tag
    severity: str = "warning"

    def applies(self, mac: str) -> bool:
        return not self.tags or mac in self.tags


@dataclass(frozen=True, slots=True)
class Event:
    rule: str
    mac: str
    state: str  # "firing" or "resolved"
    starts_ns: int  # when it fired (event time; silence: newest reading + after)
    ends_ns: int  # when it resolved; 0 while firing
    value: float | None  # the value that made it change (silence: seconds since the newest reading)
    late: bool  # the transition lies further back than the horizon: it happened in a backlog
    kind: str = ""
    severity: str = "warning"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "mac": self.mac, "state": self.state, "kind": self.kind,
                "severity": self.severity, "starts_ns": self.starts_ns, "ends_ns": self.ends_ns,
                "value": self.value, "late": self.late}


@dataclass(slots=True)
class AlertState:
    """One rule on one tag."""

    newest_ns: int = 0  # newest event time this rule took from the tag
    cond_since_ns: int = 0  # event time the condition became true (0: it is not)
    firing_since_ns: int = 0  # event time it fired (0: not firing)
    resolved_ns: int = 0  # event time it last resolved
    value: float | None = None  # the value at the last change
    sent: str = "resolved"  # the state last sent: "firing" or "resolved"
    sent_since_ns: int = 0  # startsAt of the firing event last sent (its resolved event carries it too)
    window: list[tuple[int, float]] = field(default_factory=list)  # rate: (event time, value) within per_s

    def to_json(self) -> dict[str, Any]:
        return {"newest": self.newest_ns, "cond": self.cond_since_ns, "firing": self.firing_since_ns,
                "resolved": self.resolved_ns, "value": self.value, "sent": self.sent,
                "sent_since": self.sent_since_ns,
                "window": [list(w) for w in self.window]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AlertState:
        return cls(int(d["newest"]), int(d["cond"]), int(d["firing"]), int(d["resolved"]), d.get("value"),
                   str(d["sent"]), int(d.get("sent_since", 0)),
                   [(int(t), float(v)) for t, v in d.get("window", [])])


def battery_threshold(rule: Rule, data_format: str, temperature: float | None) -> float | None:
    """The low-battery limit in mV for this format (None: the format has no battery)."""
    if rule.value:
        return rule.value
    base = BATTERY_LOW_MV.get(data_format)
    if base is None:
        return None
    if temperature is not None:
        for limit, mv in BATTERY_COLD_MV:
            if temperature <= limit:
                return min(base, mv)
    return float(base)


class Evaluator:
    """All rules over all tags. `observe()` per batch of written points, `tick()` now and then (silence)."""

    def __init__(self, rules: Sequence[Rule], *, horizon_s: float, started_ns: int = 0) -> None:
        self.rules = {r.name: r for r in rules}
        self.horizon_ns = int(horizon_s * 1e9)
        self.started_ns = started_ns  # first start: explicit silence tags never heard count from here
        self.seen: dict[str, int] = {}  # mac -> newest event time heard
        self.states: dict[tuple[str, str], AlertState] = {}

    # ---- input ------------------------------------------------------------------------------------------------

    def observe(self, points: Iterable[Point], now_ns: int) -> list[Event]:
        if not self.started_ns:
            self.started_ns = now_ns
        out: list[Event] = []
        value_rules = [r for r in self.rules.values() if r.kind != "silence"]
        for p in sorted(points, key=lambda p: p.time_ns):
            mac = p.tags.get("mac")
            if mac is None:
                continue
            t = p.time_ns
            if t > self.seen.get(mac, 0):
                self.seen[mac] = t
            live = now_ns - t <= self.horizon_ns
            for rule in value_rules:
                if rule.applies(mac) and self._step(rule, mac, p) and live:
                    out.extend(self._reconcile(rule, mac, now_ns))
        out.extend(self.tick(now_ns))
        return out

    def _step(self, rule: Rule, mac: str, p: Point) -> bool:
        """Advance one alert by one point; False if the point says nothing to this rule."""
        if rule.kind == "battery":
            v = p.fields.get("battery_voltage")
            temp = p.fields.get("temperature")
            limit = battery_threshold(rule, p.tags.get("data_format", ""),
                                      float(temp) if isinstance(temp, int | float) else None)
            if limit is None:
                return False
        else:
            v = p.fields.get(rule.field)
            limit = 0.0
        if not isinstance(v, int | float) or isinstance(v, bool):
            return False
        key = (rule.name, mac)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = AlertState()
        t = p.time_ns
        if t <= st.newest_ns:
            return False  # out of order or a copy: the state is already past it
        st.newest_ns = t
        value = float(v)
        if rule.kind == "threshold":
            fires = OPS[rule.op](value, rule.value)
            clear = rule.value if rule.clear is None else rule.clear
            cleared = not OPS[rule.op](value, clear)
        elif rule.kind == "battery":
            fires = value < limit
            cleared = value >= limit + BATTERY_CLEAR_MV
        else:  # rate
            st.window.append((t, value))
            start = t - int(rule.per_s * 1e9)
            while st.window and st.window[0][0] < start:
                st.window.pop(0)
            values = [w[1] for w in st.window]
            change = value - (min(values) if rule.op in (">", ">=") else max(values))
            fires = OPS[rule.op](change, rule.value)
            cleared = not fires
            value = round(change, 6)
        if st.firing_since_ns:
            if cleared:
                st.firing_since_ns = st.cond_since_ns = 0
                st.resolved_ns = t
                st.value = value
        elif fires:
            if not st.cond_since_ns:
                st.cond_since_ns = t
            if t - st.cond_since_ns >= int(rule.duration_s * 1e9):
                st.firing_since_ns = t
                st.value = value
        else:
            st.cond_since_ns = 0
        return True

    def tick(self, now_ns: int) -> list[Event]:
        """Silence, against the receiver's clock `now_ns`."""
        if not self.started_ns:
            self.started_ns = now_ns
        out: list[Event] = []
        for rule in self.rules.values():
            if rule.kind != "silence":
                continue
            after_ns = int(rule.after_s * 1e9)
            macs = set(rule.tags) if rule.tags else set(self.seen)
            for mac in sorted(macs):
                newest = self.seen.get(mac, self.started_ns)
                key = (rule.name, mac)
                st = self.states.get(key)
                if st is None:
                    st = self.states[key] = AlertState()
                st.newest_ns = newest
                silent = now_ns - newest > after_ns
                if silent and not st.firing_since_ns:
                    st.firing_since_ns = newest + after_ns
                elif not silent and st.firing_since_ns:
                    st.firing_since_ns = 0
                    st.resolved_ns = now_ns
                st.value = round((now_ns - newest) / 1e9, 3)
                out.extend(self._reconcile(rule, mac, now_ns))
        return out

    def _reconcile(self, rule: Rule, mac: str, now_ns: int) -> list[Event]:
        """Send the alert's state if it differs from the state last sent."""
        st = self.states[(rule.name, mac)]
        if st.firing_since_ns and st.sent != "firing":
            st.sent = "firing"
            st.sent_since_ns = st.firing_since_ns
            return [Event(rule.name, mac, "firing", st.firing_since_ns, 0, st.value,
                          now_ns - st.firing_since_ns > self.horizon_ns, rule.kind, rule.severity)]
        if not st.firing_since_ns and st.sent == "firing":
            st.sent = "resolved"
            return [Event(rule.name, mac, "resolved", st.sent_since_ns, st.resolved_ns, st.value,
                          now_ns - st.resolved_ns > self.horizon_ns, rule.kind, rule.severity)]
        return []

    # ---- views and persistence --------------------------------------------------------------------------------

    def firing(self) -> list[tuple[str, str, AlertState]]:
        """(rule, mac, state) of every alert sent as firing, by rule then MAC."""
        return [(r, m, st) for (r, m), st in sorted(self.states.items()) if st.sent == "firing"]

    def to_json(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "started_ns": self.started_ns, "seen": self.seen,
                "alerts": [[r, m, st.to_json()] for (r, m), st in self.states.items()]}

    def load(self, data: dict[str, Any]) -> None:
        """Take the state a previous process saved; alerts of rules no longer configured are dropped."""
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"unknown alert state version {data.get('v')!r}")
        self.started_ns = int(data.get("started_ns", 0))
        self.seen = {str(k): int(v) for k, v in data.get("seen", {}).items()}
        self.states = {(str(r), str(m)): AlertState.from_json(st) for r, m, st in data.get("alerts", [])
                       if r in self.rules}
