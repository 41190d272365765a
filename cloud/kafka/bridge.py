"""`cloud-ingest bridge`: MQTT in, Kafka out. It is the receiver (cloud/receiver.py: the same subscriptions,
persistent session, formats, batches, dedup and write path) with Kafka as its sink and its dead-letter topic, so the
rule "acknowledged only once stored" holds with "stored" meaning "acknowledged by Kafka with acks=all".

Not carried over from `run`: `batch.writers` (always 1, see bridge_receiver) and `batch.max_points` (the bridge
has its own, `kafka.bridge_batch_points`), alerts on the data, Home Assistant and the InfluxDB rollups. The last
three act on stored points, so they belong to the consumer that writes them to InfluxDB (`run --kafka`), or they
would act twice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cloud.config import Config, formats_config, kafka_client_config, receiver_settings
from cloud.formats import Router
from cloud.kafka.delivery import Delivery, DeliverySettings
from cloud.kafka.dlq import KafkaDeadLetter
from cloud.kafka.metrics import KafkaMetrics
from cloud.kafka.producer import KafkaSink, KafkaTarget
from cloud.kafka.topics import ensure_topics
from cloud.metrics import Metrics
from cloud.receiver import Receiver


def delivery_settings(cfg: Config) -> DeliverySettings:
    return DeliverySettings(message_timeout_ms=int(cfg.kafka.delivery_timeout * 1000))


def prepare_topics(cfg: Config) -> list[str]:
    """Check (and create, when kafka.create_topics) the readings and dead-letter topics; TopicError says why not."""
    k = cfg.kafka
    return ensure_topics(kafka_client_config(cfg), [k.topic, k.dlq_topic], create=k.create_topics,
                         partitions=k.partitions, replication_factor=k.replication_factor)


def bridge_receiver(cfg: Config, *, metrics: Metrics | None = None, status_file: Path | None = None,
                    delivery: DeliverySettings | None = None) -> Receiver:
    """The receiver of the bridge, with its Kafka producer. Its run() closes the producer (flushing it)."""
    k = cfg.kafka
    metrics = metrics or Metrics()
    producer = Delivery(kafka_client_config(cfg), delivery or delivery_settings(cfg),
                        metrics=KafkaMetrics(metrics.registry))
    sink = KafkaSink(KafkaTarget(k.bootstrap, k.topic, k.encoding, k.record), producer)
    # One writer: a batch is produced only once the one before it is acknowledged. With two, a batch retried after
    # an outage could land behind the next one, and a tag's readings out of order.
    settings = dataclasses.replace(receiver_settings(cfg), alerts=None, writers=1,
                                   batch_max_points=k.bridge_batch_points)
    dead_letter = KafkaDeadLetter(producer, topic=k.dlq_topic, receiver=settings.mqtt.client_id,
                                  max_payload=settings.dlq_max_payload)
    return Receiver(settings, sink=sink, router=Router(formats_config(cfg)), metrics=metrics,
                    status_file=status_file, dead_letter=dead_letter)
