"""The bridge's topics, checked before it subscribes: created when `kafka.create_topics` is on (the cluster has
`auto.create.topics.enable=false`, as it should: a typo must not make a topic), a one-line error otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # where it is defined; confluent_kafka.admin re-exports it untyped

from cloud.kafka.delivery import librdkafka_log

log = logging.getLogger("cloud.kafka")

# Connection errors no retry can fix: wrong credentials, a certificate not trusted (or a plain listener spoken to
# with TLS). Seen at start-up, they end the start at once, named, instead of after timeout_s as "transport failure".
REFUSED_US = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL,
                         KafkaError.ILLEGAL_SASL_STATE, KafkaError.UNSUPPORTED_SASL_MECHANISM})


class TopicError(Exception):
    """Kafka is unreachable, a topic is missing and may not be created, or creating it failed."""


def ensure_topics(client: dict[str, str], topics: Sequence[str], *, create: bool, partitions: int,
                  replication_factor: int, timeout_s: float = 30.0) -> list[str]:
    """Make sure the topics exist; return those created."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**client, "error_cb": errors.append, "logger": librdkafka_log}  # the stub omits callbacks
    try:
        admin = AdminClient(conf)
    except KafkaException as e:  # a setting librdkafka refuses (or a TLS/SASL feature it lacks)
        raise TopicError(f"Kafka client settings: {_why(e)}") from None
    existing = set(_list_topics(admin, client["bootstrap.servers"], errors, timeout_s))
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


def _list_topics(admin: AdminClient, bootstrap: str, errors: list[KafkaError], timeout_s: float) -> list[str]:
    """The cluster's topic names. Asked in rounds of a second: librdkafka reports why a connection failed only
    through error_cb (served by poll), while list_topics would wait out its whole timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return list(admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic()))).topics)
        except KafkaException as e:
            admin.poll(0)  # runs error_cb for what happened meanwhile
            refused = next((err for err in errors if err.code() in REFUSED_US), None)
            if refused is not None:
                # librdkafka's text names the broker and the cause (e.g. "SASL authentication error: ... invalid
                # credentials with SASL mechanism SCRAM-SHA-512", "certificate verify failed"), never the password.
                raise TopicError(f"Kafka at {bootstrap} refused the connection: {refused.name()}: "
                                 f"{refused.str()}") from None
            if time.monotonic() >= deadline:
                last = errors[-1] if errors else None
                why = f"{last.name()}: {last.str()}" if last is not None else _why(e)
                raise TopicError(f"cannot reach Kafka at {bootstrap}: {why}") from None


def _why(e: KafkaException) -> str:
    err = e.args[0] if e.args else None
    return f"{err.name()}: {err.str()}" if isinstance(err, KafkaError) else str(e)
