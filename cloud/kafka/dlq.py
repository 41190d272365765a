"""The Kafka dead-letter topic (kafka.dlq_topic): a poison record goes there as it came (its key, value and headers),
with why in `dlq-*` headers. It is a write path `DeadLetter` (cloud/write_path.py): the awaitable it returns completes
when Kafka acknowledged the dead letter, and only then is the record's offset committed.

Headers added: `dlq-reason` (one line), `dlq-stage` (parse: the record could not be decoded; write: InfluxDB refused
one of its points, whose line protocol is then the value), `dlq-source` (topic/partition/offset), `dlq-time-ns` and
`dlq-receiver` (the consumer's client id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from cloud.metrics import Metrics

log = logging.getLogger("cloud.receiver")

# The original key and headers of the record named by the dead letter's topic, if there is one.
Origin = Callable[[str], "tuple[bytes | None, list[tuple[str, bytes]]] | None"]
MAX_REASON = 1000


class DeadLetterError(Exception):
    """Kafka did not accept a dead letter: its record must not be committed."""


class KafkaDeadLetter:
    def __init__(self, client: dict[str, str], topic: str, *, receiver: str, origin: Origin,
                 metrics: Metrics | None = None) -> None:
        self.topic = topic
        self._receiver = receiver.encode()
        self._origin = origin
        self._metrics = metrics
        self._producer: Any = Producer({**client, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                        "client.id": f"{receiver}-dlq",
                                        "logger": logging.getLogger("cloud.kafka.librdkafka")})
        self._pending = 0
        self._pump: asyncio.Task[None] | None = None

    async def __call__(self, topic: str, payload: bytes, reason: str, stage: str,
                       time_ns: int) -> Awaitable[None]:
        origin = self._origin(topic)
        key, headers = origin if origin is not None else (None, [])
        headers = [*headers,
                   ("dlq-reason", " ".join(reason.split()).encode()[:MAX_REASON]),
                   ("dlq-stage", stage.encode()),
                   ("dlq-source", topic.encode()),
                   ("dlq-time-ns", str(time_ns).encode()),
                   ("dlq-receiver", self._receiver)]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(err: KafkaError | None) -> None:
            self._pending -= 1
            if done.done():
                return
            if err is None:
                done.set_result(None)
                return
            if self._metrics is not None:
                self._metrics.kafka_produce_errors.labels(self.topic).inc()
            done.set_exception(DeadLetterError(f"kafka: dead letter to {self.topic} failed: {err}"))

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            # From producer.poll() (the pump, on the loop) or flush() (a thread, at close): settle on the loop.
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(settle, err)

        while True:
            try:
                self._producer.produce(self.topic, value=payload, key=key, headers=headers, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0)
                await asyncio.sleep(0.01)
            except KafkaException as e:
                if self._metrics is not None:
                    self._metrics.kafka_produce_errors.labels(self.topic).inc()
                raise DeadLetterError(f"kafka: dead letter to {self.topic} refused: {e}") from None
        self._pending += 1
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump(), name="cloud-ingest-kafka-dlq")
        return done

    async def _run_pump(self) -> None:
        while self._pending > 0:
            self._producer.poll(0)
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        """Deliver what is queued (up to 10 s), then stop."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        left = await asyncio.to_thread(self._producer.flush, 10.0)
        if left:
            log.warning("kafka: %d dead letters not delivered to %s at shutdown", left, self.topic)
