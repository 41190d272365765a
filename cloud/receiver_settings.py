"""What the receiver needs to know, resolved from the config (cloud/config.py `receiver_settings`): the receiver's
parts never see the whole Config, and a test or another input can build these directly."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cloud.alert_hook import AlertSettings


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: ssl.SSLContext | None = None
    username: str = ""
    password: str = ""
    client_id: str = "cloud-ingest-1"
    keepalive: int = 30
    qos: int = 1
    session_expiry_s: int = 7 * 86400
    receive_maximum: int = 20000
    held_back_reconnect_s: float = 30.0  # 0: never (cloud/mqtt_gaps.py)
    subscriptions: tuple[str, ...] = ()  # topic filters, with $share/<group>/ already in front when shared


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The Ruuvi Gateway HTTP listener (cloud/http_input.py), credentials read and TLS context built."""

    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/ruuvi"
    auth: str = "basic"  # "basic", "bearer" or "none"
    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    tls: ssl.SSLContext | None = None
    max_body: int = 1 << 20
    timeout_s: float = 20.0


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """`run --kafka` (cloud/kafka/consumer.py): the consumer group and the topics, the client settings resolved."""

    client: dict[str, str] = field(default_factory=dict)  # librdkafka: bootstrap.servers and auth (kafka_client_config)
    topic: str = "ruuvi.readings"
    dlq_topic: str = "ruuvi.dlq"
    group: str = "cloud-ingest"
    client_id: str = "cloud-ingest-1"
    session_timeout_s: float = 10.0  # how long a crashed consumer's partitions wait before another takes them
    revoke_timeout_s: float = 10.0  # on a rebalance: finish the batch within this, else abandon it uncommitted
    assignment: str = "cooperative-sticky"  # partition.assignment.strategy (kafka.assignment)
    max_records: int = 20_000  # records handed over and not yet written: more pauses the partitions
    delivery_timeout_s: float = 30.0  # the dead-letter producer's message.timeout.ms (kafka.delivery_timeout)


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    dlq_topic: str = "edge-gw/dlq"
    dlq_max_payload: int = 65536
    batch_max_points: int = 5000
    batch_max_interval_s: float = 10.0
    batch_max_messages: int = 10000  # half of mqtt.receive_maximum (Config.batch_max_messages)
    queue_batches: int = 4
    writers: int = 2
    dedup: bool = True
    dedup_window_s: float = 30.0
    dedup_max_entries: int = 500_000
    dedup_state_file: Path | None = None
    status_interval_s: float = 1.0
    confirm: bool = True  # publish confirmations to edge-gw gateways (docs/wire-format.md "Confirmation")
    alerts: AlertSettings | None = None  # alerts on the data; None: no rules
    http: HttpSettings | None = None  # None: no HTTP listener
    kafka: KafkaSettings | None = None  # set: the input is a Kafka consumer group instead of MQTT
