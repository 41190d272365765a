"""KafkaSink: the bridge's Sink, writing points as records (cloud/kafka/records.py) to `kafka.topic` through one
producer (cloud/kafka/delivery.py). `write()` returns once Kafka acknowledged every record, so the write path
confirms to gateways and PUBACKs to the broker only after that, as it does after an InfluxDB write. Its dead letters
go through the same producer (cloud/kafka/dlq.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from cloud.kafka.delivery import Delivery
from cloud.kafka.records import Codec, record_key
from cloud.model import Point
from cloud.sinks.base import Rejected, SinkError, WriteOutcome


@dataclass(frozen=True, slots=True)
class KafkaTarget:
    bootstrap: str
    topic: str = "ruuvi.readings"
    encoding: str = "json"
    record: str = "batch"


class KafkaSink:
    """Points to `target.topic`, one record per reading or per tag and batch, keyed by MAC."""

    def __init__(self, target: KafkaTarget, delivery: Delivery) -> None:
        self.target = target
        self.delivery = delivery
        self.codec = Codec(target.encoding)
        self.last_write_ns: int | None = None
        # For `cloud-ingest status`: the status file says where the points go, and what the producer did.
        self.name = f"kafka {target.bootstrap} topic {target.topic} ({target.encoding}, one record per {target.record})"

    @property
    def state(self) -> str:
        return self.delivery.state

    @property
    def last_error(self) -> str | None:
        return self.delivery.last_error

    @property
    def failed_attempts(self) -> int:
        return self.delivery.failed_attempts

    @property
    def counts(self) -> dict[str, int]:
        d = self.delivery
        return {"records_produced": d.produced, "produce_errors": d.errors, "queued_records": d.queued()}

    async def write(self, points: Sequence[Point]) -> WriteOutcome:
        if self.delivery.state == "closed":
            raise SinkError("the Kafka producer is closed")
        records = self.codec.records(points, self.target.record)
        refused = await self.delivery.deliver(self.target.topic, records)
        self.last_write_ns = time.time_ns()
        if not refused:
            return WriteOutcome(len(points))
        owners = self._points_of(points)
        rejects = [Rejected(i, points[i], reason, None) for index, reason in refused for i in owners[index]]
        return WriteOutcome(len(points) - len(rejects), sorted(rejects, key=lambda r: r.index))

    def _points_of(self, points: Sequence[Point]) -> list[list[int]]:
        """The point indexes of each record, in the order Codec.records made them."""
        if self.target.record == "reading":
            return [[i] for i in range(len(points))]
        groups: dict[bytes, list[int]] = {}
        for i, p in enumerate(points):
            groups.setdefault(record_key(p), []).append(i)
        return list(groups.values())

    async def close(self) -> None:
        await self.delivery.close()
