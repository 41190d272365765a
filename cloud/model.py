"""The values that flow between the cloud-ingest parts: parsers produce them, the sink writes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

FieldValue = float | int | bool | str


class Point(msgspec.Struct, gc=False):
    """One InfluxDB point. `time_ns` is the gateway's receive time, never the receiver's clock.

    A msgspec Struct, not a dataclass: the Kafka consumer decodes and type-checks records straight into Points in C
    (cloud/kafka/records.py), and every input creates and frees one per reading. gc=False: a Point holds only
    strings and numbers, so it can never be part of a reference cycle, and the cyclic GC need not track it.
    JSON batch records, per reading (bench/bench_kafka_records.py): decode with every check 1.2 us, against 1.7 us for
    orjson and the checks in Python with this Point, and 4.6 us with the dataclass Point before (docs/kafka.md).
    """

    measurement: Annotated[str, msgspec.Meta(min_length=1)]
    tags: dict[str, str]
    fields: Annotated[dict[str, bool | int | float | str], msgspec.Meta(min_length=1)]
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


class Parsed(msgspec.Struct, gc=False):
    """What one MQTT message became: points to write, and/or a gateway state change.

    A msgspec Struct, not a dataclass, for the same reason as Point: one is made per message, and a dataclass took
    5,900 instructions to make against 2,500 (callgrind). gc=False: nothing ever refers back to a Parsed."""

    points: list[Point]
    status: GatewayStatus | None = None
    gateway: str | None = None
    seq: int | None = None  # an edge-gw batch's `seq`: the receiver confirms it to `gateway` once it is stored
    refused: list[Refused] = msgspec.field(default_factory=list)  # readings of the batch refused one by one
    # For a message of several readings (not an edge-gw batch): each point's reading as it came, so that one
    # reading can be refused on its own, with its own dead-letter payload.
    sources: list[bytes] | None = None


class InvalidMessage(ValueError):
    """A message that cannot be parsed or validated; the one-line reason goes to the dead-letter record."""
