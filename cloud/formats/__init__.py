"""Input formats: pure parsers from (topic, payload) to points, and the Router that picks one by topic pattern.

Every parser has the signature `parse(topic, payload, *, measurement="ruuvi", received_ns=None) -> Parsed` and
raises InvalidMessage (a one-line reason for the dead-letter record) for anything it can't parse or validate.
The Router adds the checks that are the same for all formats: payload size, and timestamps absurdly far in the
past or future (configurable), which refuse the reading that carries one, not the batch around it. Which format a
topic uses is configurable with MQTT topic filters (`+`, `#`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud.formats import edge_batch, flat, ruuvi_gateway, ruuvi_gateway_http
from cloud.model import InvalidMessage, Parsed, Point, Refused

# (topic, payload, measurement, received_ns) -> what the message holds; raises InvalidMessage.
Parser = Callable[[str, bytes, str, int | None], Parsed]

PARSERS: dict[str, Parser] = {
    "edge": edge_batch.parse,
    "ruuvi_gateway": ruuvi_gateway.parse,
    "flat": flat.parse,
}

# Formats that do not come by topic: the HTTP input picks its parser itself (Router.route_format).
BODY_PARSERS: dict[str, Parser] = {
    "ruuvi_gateway_http": ruuvi_gateway_http.parse,
}

_NS = 1_000_000_000


@dataclass(slots=True, frozen=True)
class FormatsConfig:
    """Topic filters per format (first match wins, in the order edge, ruuvi_gateway, flat) and validation bounds."""

    measurement: str = "ruuvi"
    edge: tuple[str, ...] = ("edge-gw/+/batch", "edge-gw/+/status")
    ruuvi_gateway: tuple[str, ...] = ("ruuvi/+/+",)
    flat: tuple[str, ...] = ("sensors/+",)
    max_payload_bytes: int = 1024 * 1024
    # A store-and-forward gateway can hold weeks of readings; anything older than this is a broken clock.
    max_age_s: float = 366 * 86400.0
    max_ahead_s: float = 300.0

    def filters(self) -> list[tuple[str, str]]:
        """(topic filter, format name) pairs: what the receiver subscribes to, and how route() chooses."""
        return [(f, name) for name in PARSERS for f in getattr(self, name)]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest, `$`-topics never match a leading wildcard)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


_UNKNOWN = "?"  # not in the format cache yet (None there means: no format for that topic)


class Router:
    def __init__(self, config: FormatsConfig | None = None, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config or FormatsConfig()
        self._filters = self.config.filters()
        self._clock = clock
        # Topic -> format, cached: matching the filters cost more than the rest of routing, and a Ruuvi Gateway
        # has one topic per tag, so the set of topics is small; cleared if it ever grows past the bound.
        self._format_cache: dict[str, str | None] = {}
        self._max_age_ns = int(self.config.max_age_s * _NS)
        self._max_ahead_ns = int(self.config.max_ahead_s * _NS)

    def format_of(self, topic: str) -> str | None:
        try:
            return self._format_cache[topic]
        except KeyError:
            pass
        name: str | None = None
        for f, candidate in self._filters:
            if topic_matches(f, topic):
                name = candidate
                break
        if len(self._format_cache) >= 50_000:
            self._format_cache.clear()
        self._format_cache[topic] = name
        return name

    def route(self, topic: str, payload: bytes, received_ns: int | None = None) -> Parsed:
        """Parse one MQTT message. `received_ns` (default: now) is the time used for messages that carry none.

        A reading whose timestamp is outside [now - max_age, now + max_ahead] is refused on its own: it goes to
        `Parsed.refused` (with its JSON and the reason) and the other readings of the batch are kept. A message of
        the other formats is one reading: refused, it is the whole payload."""
        cfg = self.config
        if len(payload) > cfg.max_payload_bytes:
            raise InvalidMessage(f"payload of {len(payload)} bytes exceeds {cfg.max_payload_bytes}")
        name = self._format_cache.get(topic, _UNKNOWN)
        if name is _UNKNOWN:
            name = self.format_of(topic)
        if name is None:
            raise InvalidMessage(f"no input format configured for topic {topic!r}")
        return self._parse(name, PARSERS[name], topic, payload, received_ns)

    def route_format(self, name: str, topic: str, payload: bytes, received_ns: int | None = None) -> Parsed:
        """route() for an input that knows its format (BODY_PARSERS; the HTTP input): the same checks."""
        cfg = self.config
        if len(payload) > cfg.max_payload_bytes:
            raise InvalidMessage(f"payload of {len(payload)} bytes exceeds {cfg.max_payload_bytes}")
        return self._parse(name, BODY_PARSERS[name], topic, payload, received_ns)

    def _parse(self, name: str, parser: Parser, topic: str, payload: bytes, received_ns: int | None) -> Parsed:
        cfg = self.config
        now = self._clock() if received_ns is None else received_ns
        parsed = parser(topic, payload, cfg.measurement, now)
        points = parsed.points
        if not points:
            return parsed
        oldest = now - self._max_age_ns
        newest = now + self._max_ahead_ns
        if len(points) == 1:  # most messages (Ruuvi Gateway, flat): no generator to start twice
            first = last = points[0].time_ns
        else:
            times = [p.time_ns for p in points]
            first, last = min(times), max(times)
        if oldest <= first and last <= newest:
            return parsed

        bounds = f"outside [now - {_seconds(cfg.max_age_s)} s, now + {_seconds(cfg.max_ahead_s)} s]"

        def refuse(time_ns: int) -> tuple[str, str] | None:
            if time_ns > newest:
                return f"timestamp {time_ns} is {bounds}: {(time_ns - now) / _NS:.0f} s ahead of the receiver", "ahead"
            if time_ns < oldest:
                return f"timestamp {time_ns} is {bounds}: {(now - time_ns) / _NS:.0f} s old", "too_old"
            return None

        if name == "edge" and parsed.seq is not None:
            parsed.points, parsed.refused = edge_batch.split_readings(payload, parsed.gateway or "", cfg.measurement,
                                                                      refuse)
            return parsed
        kept: list[Point] = []
        if parsed.sources is not None:  # several readings, each with its own source
            sources: list[bytes] = []
            for p, source in zip(points, parsed.sources, strict=True):
                why = refuse(p.time_ns)
                if why is None:
                    kept.append(p)
                    sources.append(source)
                else:
                    parsed.refused.append(Refused(source, *why))
            parsed.points, parsed.sources = kept, sources
            return parsed
        for p in points:
            why = refuse(p.time_ns)
            if why is None:
                kept.append(p)
            elif not parsed.refused:  # one message, one reading: the payload is the record
                parsed.refused.append(Refused(payload, *why))
        parsed.points = kept
        return parsed


def _seconds(s: float) -> str:
    return f"{s:.0f}" if float(s).is_integer() else f"{s:g}"


__all__ = ["BODY_PARSERS", "PARSERS", "FormatsConfig", "InvalidMessage", "Parsed", "Refused", "Router", "topic_matches"]
