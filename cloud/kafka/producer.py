"""The bridge's two ways into Kafka, on one producer (cloud/kafka/delivery.py):

- KafkaSink: the receiver's Sink, writing points as records (cloud/kafka/records.py) to `kafka.topic`. `write()`
  returns once Kafka acknowledged every record, so the write path confirms to gateways and PUBACKs to the broker
  only after that, as it does after an InfluxDB write.
- KafkaDeadLetter: the write path's DeadLetter, sending a message that failed (a parse failure, a refused reading, a
  record Kafka refused) to `kafka.dlq_topic`: the payload as it came (cut at dlq.max_payload), why in the headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from cloud.kafka.delivery import Delivery
from cloud.kafka.records import Codec, Record, record_key
from cloud.model import Point
from cloud.sinks.base import Rejected, SinkError, WriteOutcome


@dataclass(frozen=True, slots=True)
class KafkaTarget:
    bootstrap: str
    topic: str = "ruuvi.readings"
    encoding: str = "json"
    record: str = "reading"


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


class KafkaDeadLetter:
    """The write path's DeadLetter for the bridge: one record per dead letter, keyed by its MQTT topic (a gateway's
    dead letters stay in order), headers `reason`, `stage`, `mqtt-topic`, `receiver`, `time-ns` (when it failed)
    and, when the payload was cut, `payload-bytes` (its full length)."""

    def __init__(self, delivery: Delivery, *, topic: str, receiver: str, max_payload: int) -> None:
        self.delivery = delivery
        self.topic = topic
        self.receiver = receiver
        self.max_payload = max_payload

    def record(self, topic: str, payload: bytes, reason: str, stage: str, time_ns: int) -> Record:
        headers = [("reason", reason.encode()), ("stage", stage.encode()), ("mqtt-topic", topic.encode()),
                   ("receiver", self.receiver.encode()), ("time-ns", str(time_ns).encode())]
        if len(payload) > self.max_payload:
            headers.append(("payload-bytes", str(len(payload)).encode()))
            payload = payload[:self.max_payload]
        return Record(topic.encode(), payload, headers, 0)

    async def __call__(self, topic: str, payload: bytes, reason: str, stage: str,
                       time_ns: int) -> Awaitable[None]:
        rec = self.record(topic, payload, reason, stage, time_ns)
        # Produced now, waited for by the write path (with the batch's other dead letters) before it acknowledges.
        return asyncio.ensure_future(self._send(rec))

    async def _send(self, rec: Record) -> None:
        refused = await self.delivery.deliver(self.topic, [rec])
        # Cut to dlq.max_payload, it fits any sane message.max.bytes. If Kafka refuses it even so, the write fails
        # and the bridge stops without acknowledging: the broker keeps the message, nothing is lost quietly.
        if refused:
            raise SinkError(f"Kafka refused the dead letter for {rec.key.decode()}: {refused[0][1]}")
