"""The values that flow between the cloud-ingest parts: parsers produce them, the sink writes them."""

from __future__ import annotations

from dataclasses import dataclass, field

FieldValue = float | int | bool | str


@dataclass(slots=True)
class Point:
    """One InfluxDB point. `time_ns` is the gateway's receive time, never the receiver's clock."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


@dataclass(slots=True, frozen=True)
class GatewayStatus:
    gateway: str
    state: str  # "online" / "offline"
    time_ns: int


@dataclass(slots=True, frozen=True)
class Refused:
    """One reading of an otherwise good batch that is not written: it goes to the dead-letter topic on its own."""

    payload: bytes  # the reading as JSON, as the batch carried it
    reason: str  # one line
    kind: str  # why, as a metric label: "ahead" (timestamp in the future) or "too_old"


@dataclass(slots=True)
class Parsed:
    """What one MQTT message became: points to write, and/or a gateway state change."""

    points: list[Point]
    status: GatewayStatus | None = None
    gateway: str | None = None
    seq: int | None = None  # an edge-gw batch's `seq`: the receiver confirms it to `gateway` once it is stored
    refused: list[Refused] = field(default_factory=list)  # readings of the batch refused one by one
    # For a message of several readings (not an edge-gw batch): each point's reading as it came, so that one
    # reading can be refused on its own, with its own dead-letter payload.
    sources: list[bytes] | None = None


class InvalidMessage(ValueError):
    """A message that cannot be parsed or validated; the one-line reason goes to the dead-letter record."""
