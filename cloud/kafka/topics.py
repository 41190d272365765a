"""The bridge's topics, checked before it subscribes: created when `kafka.create_topics` is on (the cluster has
`auto.create.topics.enable=false`, as it should: a typo must not make a topic), a one-line error otherwise."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # where it is defined; confluent_kafka.admin re-exports it untyped

log = logging.getLogger("cloud.kafka")


class TopicError(Exception):
    """Kafka is unreachable, a topic is missing and may not be created, or creating it failed."""


def ensure_topics(client: dict[str, str], topics: Sequence[str], *, create: bool, partitions: int,
                  replication_factor: int, timeout_s: float = 30.0) -> list[str]:
    """Make sure the topics exist; return those created."""
    try:
        admin = AdminClient(dict[str, str | int | float | bool](client))
    except KafkaException as e:  # a setting librdkafka refuses (or a TLS/SASL feature it lacks)
        raise TopicError(f"Kafka client settings: {_why(e)}") from None
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as e:
        raise TopicError(f"cannot reach Kafka at {client['bootstrap.servers']}: {_why(e)}") from None
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    if not create:
        raise TopicError(f"Kafka topic {', '.join(map(repr, missing))} does not exist on "
                         f"{client['bootstrap.servers']} (create it, or set kafka.create_topics = true)")
    news = [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor) for t in missing]
    created = []
    for topic, future in admin.create_topics(news, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another bridge made it first: fine
                raise TopicError(f"cannot create Kafka topic {topic!r}: {_why(e)}") from None
        else:
            created.append(topic)
            log.info("created Kafka topic %s (%d partitions, replication factor %d)", topic, partitions,
                     replication_factor)
    return created


def _why(e: KafkaException) -> str:
    err = e.args[0] if e.args else None
    return f"{err.name()}: {err.str()}" if isinstance(err, KafkaError) else str(e)
