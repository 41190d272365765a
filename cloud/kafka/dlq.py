"""The Kafka dead-letter topic (kafka.dlq_topic), one for both sides: the write path's `DeadLetter`
(cloud/write_path.py) of the bridge and of `run --kafka`. The awaitable it returns completes once Kafka acknowledged
the dead letter (cloud/kafka/delivery.py: retried for as long as Kafka is away), and only then is the message
PUBACKed or the record's offset committed.

A dead letter is the payload as it came (cut at dlq.max_payload), with why in `dlq-*` headers:
- `dlq-reason` (one line), `dlq-stage` (parse: it could not be read; reading: one reading of a batch was refused;
  write: the sink refused a point, whose line protocol or record is then the value);
- `dlq-source`: where it came from, the MQTT topic (bridge) or `topic/partition/offset` (consumer);
- `dlq-time-ns` (when it failed), `dlq-receiver` (the client id) and, when the payload was cut, `dlq-payload-bytes`.
On the bridge a dead letter is keyed by its MQTT topic (a gateway's dead letters stay in order); on the consumer it
keeps the record's own key and headers (`origin`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cloud.kafka.delivery import Delivery
from cloud.kafka.records import Record
from cloud.sinks.base import SinkError

# The original key and headers of the record named by a dead letter's source, if there is one.
Origin = Callable[[str], "tuple[bytes | None, list[tuple[str, bytes]]] | None"]
MAX_REASON = 1000


class DeadLetterError(SinkError):
    """Kafka refused a dead letter for what it is: its message must not be acknowledged."""


class KafkaDeadLetter:
    def __init__(self, delivery: Delivery, *, topic: str, receiver: str, max_payload: int,
                 origin: Origin | None = None) -> None:
        self.delivery = delivery
        self.topic = topic
        self.receiver = receiver
        self.max_payload = max_payload
        self._origin = origin

    def record(self, source: str, payload: bytes, reason: str, stage: str, time_ns: int) -> Record:
        origin = self._origin(source) if self._origin is not None else None
        key, headers = origin if origin is not None else (source.encode(), [])
        headers = [*headers,
                   ("dlq-reason", " ".join(reason.split()).encode()[:MAX_REASON]),
                   ("dlq-stage", stage.encode()),
                   ("dlq-source", source.encode()),
                   ("dlq-time-ns", str(time_ns).encode()),
                   ("dlq-receiver", self.receiver.encode())]
        if len(payload) > self.max_payload:
            headers.append(("dlq-payload-bytes", str(len(payload)).encode()))
            payload = payload[:self.max_payload]
        return Record(key, payload, headers, 0)

    async def __call__(self, topic: str, payload: bytes, reason: str, stage: str,
                       time_ns: int) -> Awaitable[None]:
        rec = self.record(topic, payload, reason, stage, time_ns)  # `topic`: the source (the DeadLetter protocol)
        # Produced now, waited for by the write path (with the batch's other dead letters) before it acknowledges.
        return asyncio.ensure_future(self._send(rec))

    async def _send(self, rec: Record) -> None:
        refused = await self.delivery.deliver(self.topic, [rec])
        # Cut to dlq.max_payload, it fits any sane message.max.bytes. If Kafka refuses it even so, the write fails
        # and the process stops without acknowledging: the message or record stays, nothing is lost quietly.
        if refused:
            raise DeadLetterError(f"Kafka refused the dead letter from {rec.headers[-3][1].decode()}: "
                                  f"{refused[0][1]}")
