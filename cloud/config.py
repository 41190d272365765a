"""cloud-ingest's configuration: one TOML file (cloud/cloud-ingest.example.toml), `CLOUD_INGEST_<SECTION>_<KEY>`
variables, then flags. Loaded and checked through core.settings, so every error names the bad key."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from cloud.alert_hook import AlertSettings
from cloud.alerts import KINDS, OPS, Rule
from cloud.formats import FormatsConfig
from cloud.formats._common import FLOAT_FIELDS, INT_FIELDS
from cloud.homeassistant import CloudHaSettings
from cloud.influx_duration import duration_ns
from cloud.receiver_settings import HttpSettings, KafkaSettings, MqttSettings, ReceiverSettings
from cloud.rollups import INTERVALS, RollupConfig
from cloud.sinks.base import SinkError, SinkOptions
from core.config import HomeAssistantSection as CoreHomeAssistantSection
from core.config import LogSection, MqttConnection, redact_url
from core.config import MetricsSection as CoreMetricsSection
from core.settings import (
    AutoBool,
    ConfigError,
    Duration,
    Size,
    check_private,
    ensure_dir,
    load,
    read_secret_file,
    state_dir,
)

ENV_PREFIX = "CLOUD_INGEST"
FORMAT_NAMES = ("edge", "ruuvi_gateway", "flat")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _valid_filter(topic: str) -> bool:
    if not topic or topic.startswith("$share/"):
        return False
    levels = topic.split("/")
    return all(lv in ("+", "#") or ("+" not in lv and "#" not in lv) for lv in levels) and "#" not in levels[:-1]


@dataclass
class MqttSection(MqttConnection):
    client_id: str = "cloud-ingest-1"
    shared_group: str = ""
    qos: int = 1
    session_expiry: Duration = Duration(7 * 86400.0)
    receive_maximum: int = 20000
    # Reconnect when a packet id the broker skipped has not come for this long: Mosquitto 2.0.11 can hold a queued
    # message back until the next connection (cloud/mqtt_gaps.py). 0 = never.
    held_back_reconnect: Duration = Duration(30.0)
    dlq_topic: str = "edge-gw/dlq"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(_CLIENT_ID.fullmatch(self.client_id) is not None,
               f"mqtt.client_id: {self.client_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ - "
               "(a fixed id is what keeps the persistent session)")
        _check(self.shared_group == "" or re.fullmatch(r"[^/+#]{1,64}", self.shared_group) is not None,
               f"mqtt.shared_group: {self.shared_group!r} must not contain / + #")
        _check(self.qos in (0, 1), f"mqtt.qos: must be 1 (acknowledge after write) or 0, got {self.qos}")
        _check(60 <= self.session_expiry <= 0xFFFFFFFF,
               f"mqtt.session_expiry: must be at least 60 s, or the broker forgets the queue while the receiver "
               f"restarts; got {self.session_expiry}")
        _check(2 <= self.receive_maximum <= 65535,
               f"mqtt.receive_maximum: must be 2..65535, got {self.receive_maximum}")
        _check(float(self.held_back_reconnect) == 0 or 1 <= self.held_back_reconnect <= 86400,
               f"mqtt.held_back_reconnect: must be 0 (never) or 1 s..1 day, got {self.held_back_reconnect}")
        _check(_valid_filter(self.dlq_topic) and "+" not in self.dlq_topic and "#" not in self.dlq_topic,
               f"mqtt.dlq_topic: {self.dlq_topic!r} must be a plain topic name")


@dataclass
class InfluxSection:
    url: str = "http://127.0.0.1:8086/ruuvi"
    password_file: str = ""
    token: str = ""
    token_file: str = ""
    org: str = ""
    bucket: str = ""
    measurement: str = "ruuvi"
    timeout: Duration = Duration(10.0)
    backoff_max: Duration = Duration(30.0)
    gzip: AutoBool = AutoBool("auto")

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        _check(parts.scheme in ("http", "https", "influx2", "influx2s") and bool(parts.hostname),
               f"influx.url: expected http://[user:pass@]host:port/db[?rp=..] or influx2://host:port?org=..&bucket=.., "
               f"got {redact_url(self.url)!r}")
        _check(parts.scheme.startswith("influx2") or len(parts.path.strip("/")) > 0,
               f"influx.url: {redact_url(self.url)!r} names no database (http://host:8086/<db>)")
        _check(bool(self.measurement) and "\n" not in self.measurement,
               f"influx.measurement: must be a non-empty name, got {self.measurement!r}")
        _check(0 < self.timeout <= 600, f"influx.timeout: must be in (0, 600] s, got {self.timeout}")
        _check(0.1 <= self.backoff_max <= 3600, f"influx.backoff_max: must be 0.1 s..1 h, got {self.backoff_max}")
        for key in ("password_file", "token_file"):
            path = getattr(self, key)
            _check(not path or Path(path).is_file(), f"influx.{key}: {path} does not exist")


@dataclass
class BatchSection:
    max_points: int = 5000
    max_interval: Duration = Duration(10.0)
    max_messages: int = 0
    queue_batches: int = 4
    writers: int = 2

    def __post_init__(self) -> None:
        _check(1 <= self.max_points <= 1_000_000, f"batch.max_points: must be 1..1000000, got {self.max_points}")
        _check(0.001 <= self.max_interval <= 3600, f"batch.max_interval: must be 1 ms..1 h, got {self.max_interval}")
        _check(self.max_messages >= 0,
               f"batch.max_messages: must be 0 (half the window) or more, got {self.max_messages}")
        _check(1 <= self.queue_batches <= 1000, f"batch.queue_batches: must be 1..1000, got {self.queue_batches}")
        _check(1 <= self.writers <= 16, f"batch.writers: must be 1..16, got {self.writers}")


@dataclass
class DedupSection:
    enabled: bool = True
    window: Duration = Duration(30.0)
    max_entries: int = 500_000
    state_file: str = ""  # "" = next to status.file (<status name>.dedup.sqlite); none if that is "" too

    def __post_init__(self) -> None:
        _check(self.window > 0, f"dedup.window: must be positive, got {self.window}")
        _check(self.max_entries >= 1, f"dedup.max_entries: must be at least 1, got {self.max_entries}")


@dataclass
class FormatsSection:
    edge: list[str] = field(default_factory=lambda: ["edge-gw/+/batch", "edge-gw/+/status"])
    ruuvi_gateway: list[str] = field(default_factory=lambda: ["ruuvi/+/+"])
    flat: list[str] = field(default_factory=lambda: ["sensors/+"])
    max_payload: Size = Size(1 << 20)
    max_age: Duration = Duration(366 * 86400.0)
    max_ahead: Duration = Duration(300.0)

    def __post_init__(self) -> None:
        for name in FORMAT_NAMES:
            for i, t in enumerate(getattr(self, name)):
                _check(_valid_filter(t), f"formats.{name}[{i}]: {t!r} is not a valid MQTT topic filter "
                                         "(write the plain filter; mqtt.shared_group adds $share/<group>/)")
        _check(any(getattr(self, name) for name in FORMAT_NAMES), "formats: no topic filter configured at all")
        _check(self.max_payload >= 1024, f"formats.max_payload: must be at least 1KiB, got {int(self.max_payload)}")
        _check(self.max_age >= 60, f"formats.max_age: must be at least 60 s, got {self.max_age}")
        _check(self.max_ahead >= 1, f"formats.max_ahead: must be at least 1 s, got {self.max_ahead}")

    def topics(self) -> list[str]:
        """Every filter once, in order: what the receiver subscribes to."""
        return list(dict.fromkeys(t for name in FORMAT_NAMES for t in getattr(self, name)))


@dataclass
class RollupsSection:
    enabled: bool = True
    raw_rp: str = "raw"
    raw_duration: str = "90d"
    rollup_rp: str = "rollups"
    rollup_duration: str = "INF"
    intervals: list[str] = field(default_factory=lambda: ["1h", "1d"])
    battery_field: str = "battery_voltage"
    cq_resample: str = ""
    settle: Duration = Duration(10.0)
    late_margin: Duration = Duration(60.0)

    def __post_init__(self) -> None:
        for key in ("raw_duration", "rollup_duration"):
            try:
                duration_ns(getattr(self, key))
            except SinkError as e:
                raise ConfigError(f"rollups.{key}: {e}") from None
        for i, iv in enumerate(self.intervals):
            _check(iv in INTERVALS, f"rollups.intervals[{i}]: {iv!r} is not one of {', '.join(INTERVALS)}")
        for key in ("raw_rp", "rollup_rp", "battery_field"):
            _check(bool(getattr(self, key)), f"rollups.{key}: must not be empty")
        _check(self.raw_rp != self.rollup_rp, "rollups.rollup_rp: must differ from rollups.raw_rp")


@dataclass
class DlqSection:
    max_payload: Size = Size(65536)

    def __post_init__(self) -> None:
        _check(self.max_payload >= 64, f"dlq.max_payload: must be at least 64 bytes, got {int(self.max_payload)}")


@dataclass
class ConfirmSection:
    enabled: bool = True


@dataclass
class MetricsSection(CoreMetricsSection):
    port: int = 9466  # the receiver serves /metrics by default; the gateway only when asked


@dataclass
class StatusSection:
    file: str = ""  # "" = status.json in the state folder (core.settings.state_dir); "off" = none
    interval: Duration = Duration(1.0)
    gateway_offline_after: Duration = Duration(300.0)

    def __post_init__(self) -> None:
        _check(0.05 <= self.interval <= 300, f"status.interval: must be 50 ms..300 s, got {self.interval}")
        _check(self.gateway_offline_after >= 1,
               f"status.gateway_offline_after: must be at least 1 s, got {self.gateway_offline_after}")


_RULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NUMERIC_FIELDS = FLOAT_FIELDS | INT_FIELDS


@dataclass
class AlertRuleSection:
    """One `[[alerts.rules]]` table (cloud/alerts.py Rule); errors start with the key, load() puts the table first."""

    name: str = ""
    kind: str = ""
    field: str = ""
    op: str = ">"
    value: float = 0.0
    clear: float | None = None
    duration: Duration = Duration(0.0)
    per: Duration = Duration(600.0)
    after: Duration = Duration(0.0)
    tags: list[str] = dataclasses.field(default_factory=list)  # `field` is a key in this class
    severity: str = "warning"

    def __post_init__(self) -> None:
        _check(_RULE_NAME.fullmatch(self.name) is not None,
               f"name: {self.name!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (it is a topic level)")
        _check(self.kind in KINDS, f"kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind in ("threshold", "rate"):
            _check(self.field in _NUMERIC_FIELDS, f"field: unknown field {self.field!r}" + (
                f" (numeric fields: {', '.join(sorted(_NUMERIC_FIELDS))})" if self.field else ""))
        else:
            _check(not self.field, f"field: a {self.kind} rule takes no field")
        _check(self.op in OPS, f"op: {self.op!r} is not one of {' '.join(OPS)}")
        if self.kind == "rate":
            rising = self.op in (">", ">=")
            _check(self.value > 0 if rising else self.value < 0,
                   f"value: a rate rule with op {self.op!r} needs a {'positive' if rising else 'negative'} change, "
                   f"got {self.value}")
            _check(self.per > 0, f"per: must be positive, got {self.per}")
        if self.clear is not None:
            _check(self.kind == "threshold", "clear: only a threshold rule has a clear level")
            ok = self.clear <= self.value if self.op in (">", ">=") else self.clear >= self.value
            _check(ok, f"clear: {self.clear} is on the firing side of value {self.value} (op {self.op!r})")
        if self.kind == "silence":
            _check(self.after >= 1, f"after: a silence rule needs after >= 1 s, got {self.after}")
        if self.kind == "battery":
            _check(self.value >= 0,
                   f"value: a battery threshold in mV, or 0 for the per-format table, got {self.value}")
        for i, mac in enumerate(self.tags):
            _check(re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", mac) is not None,
                   f"tags[{i}]: {mac!r} is not a MAC (aa:bb:cc:dd:ee:ff)")
        _check(bool(self.severity), "severity: must not be empty")

    def rule(self) -> Rule:
        return Rule(name=self.name, kind=self.kind, field=self.field, op=self.op, value=self.value, clear=self.clear,
                    duration_s=float(self.duration), per_s=float(self.per), after_s=float(self.after),
                    tags=tuple(m.lower() for m in self.tags), severity=self.severity)


@dataclass
class AlertsSection:
    topic_prefix: str = "edge-gw/alerts"
    horizon: Duration = Duration(600.0)
    check_interval: Duration = Duration(10.0)
    state_file: str = ""  # "" = next to status.file (<status name>.alerts.json)
    webhook_url: str = ""
    webhook_timeout: Duration = Duration(5.0)
    webhook_retries: int = 5
    webhook_queue: int = 1000
    rules: list[AlertRuleSection] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(_valid_filter(self.topic_prefix) and "+" not in self.topic_prefix and "#" not in self.topic_prefix,
               f"alerts.topic_prefix: {self.topic_prefix!r} must be a plain topic name")
        _check(self.horizon >= 1, f"alerts.horizon: must be at least 1 s, got {self.horizon}")
        _check(0.1 <= self.check_interval <= 3600,
               f"alerts.check_interval: must be 100 ms..1 h, got {self.check_interval}")
        parts = urlsplit(self.webhook_url)
        _check(not self.webhook_url or (parts.scheme in ("http", "https") and bool(parts.hostname)),
               f"alerts.webhook_url: expected http(s)://host:port/api/v2/alerts, got {redact_url(self.webhook_url)!r}")
        _check(0 < self.webhook_timeout <= 300,
               f"alerts.webhook_timeout: must be in (0, 300] s, got {self.webhook_timeout}")
        _check(0 <= self.webhook_retries <= 100,
               f"alerts.webhook_retries: must be 0..100, got {self.webhook_retries}")
        _check(1 <= self.webhook_queue <= 1_000_000,
               f"alerts.webhook_queue: must be 1..1000000, got {self.webhook_queue}")
        names = [r.name for r in self.rules]
        for i, name in enumerate(names):
            _check(name not in names[:i], f"alerts.rules[{i}].name: {name!r} is used by an earlier rule")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
HTTP_AUTH = ("basic", "bearer", "none")


def split_listen(key: str, listen: str) -> tuple[str, int]:
    """host and port of `host:port` or `[v6]:port`; ConfigError naming `key` otherwise."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected host:port (e.g. 0.0.0.0:8080 or [::]:8080), got {listen!r}")
    return host, int(port)


@dataclass
class HttpSection:
    listen: str = ""  # "" = off
    path: str = "/ruuvi"
    auth: str = "basic"
    user: str = ""
    password_file: str = ""
    token_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    max_body: Size = Size(1 << 20)
    timeout: Duration = Duration(20.0)

    def __post_init__(self) -> None:
        _check(self.path.startswith("/") and " " not in self.path and "?" not in self.path,
               f"http.path: must be a URL path starting with /, got {self.path!r}")
        _check(self.auth in HTTP_AUTH, f"http.auth: expected one of {', '.join(HTTP_AUTH)}, got {self.auth!r}")
        _check(self.max_body >= 1024, f"http.max_body: must be at least 1KiB, got {int(self.max_body)}")
        _check(0.1 <= self.timeout <= 600, f"http.timeout: must be 100 ms..600 s, got {self.timeout}")
        _check(bool(self.cert_file) == bool(self.key_file), "http.cert_file and http.key_file go together")
        for key in ("password_file", "token_file", "cert_file", "key_file"):
            path = getattr(self, key)
            _check(not path or Path(path).is_file(), f"http.{key}: {path} does not exist")
        if not self.listen:
            return
        host, _port = split_listen("http.listen", self.listen)
        if self.auth == "basic":
            _check(bool(self.user) and bool(self.password_file),
                   "http.auth: basic needs http.user and http.password_file")
        elif self.auth == "bearer":
            _check(bool(self.token_file), "http.auth: bearer needs http.token_file")
        else:
            # An open listener reachable from the network would take readings from anyone.
            _check(host in _LOOPBACK, f"http.auth: none is allowed only on a loopback address (behind a proxy that "
                                      f"authenticates), not on {host!r}")


KAFKA_SECURITY = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
KAFKA_SASL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_ASSIGNMENT = ("cooperative-sticky", "range", "roundrobin")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_BOOTSTRAP_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}")


@dataclass
class KafkaSection:
    """The Kafka path (docs/kafka.md): what `cloud-ingest bridge` produces to and `run --kafka` consumes from."""

    bootstrap: str = ""  # host:port[,host:port...]; "" = no Kafka (--kafka sets it)
    topic: str = "ruuvi.readings"
    dlq_topic: str = "ruuvi.dlq"
    group: str = "cloud-ingest"  # the consumer group of `run --kafka`
    encoding: str = "json"  # "json" or "avro" (cloud/kafka/reading.avsc)
    record: str = "batch"  # one record per tag and write "batch" (measured faster, docs/kafka.md), or per "reading"
    # The bridge's batch.max_points: bigger produce rounds make bigger "batch" records, which cost Kafka and both
    # sides less per reading (docs/kafka.md); batch.max_interval still bounds the wait.
    bridge_batch_points: int = 20000
    create_topics: bool = True  # the bridge creates missing topics with these two settings
    # How long librdkafka tries to deliver one record before it is produced again (message.timeout.ms): the
    # bridge's records and dead letters, and the dead letters of `run --kafka`.
    delivery_timeout: Duration = Duration(30.0)
    partitions: int = 6
    replication_factor: int = 1
    security_protocol: str = "plaintext"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    # `run --kafka`: a consumer that stops heart-beating (a crash) loses its partitions after session_timeout; on
    # a rebalance the batch in hand is written and committed within revoke_timeout, else abandoned uncommitted.
    session_timeout: Duration = Duration(10.0)
    revoke_timeout: Duration = Duration(10.0)
    # How the group shares the partitions: "cooperative-sticky" moves only the partitions that change owner on a
    # rebalance, the others keep being consumed; "range" and "roundrobin" (eager) take every partition back first.
    # All consumers of a group must use one kind: switching kinds means stopping them all first.
    assignment: str = "cooperative-sticky"

    def __post_init__(self) -> None:
        from cloud.kafka.records import ENCODINGS, RECORD_KINDS

        if self.bootstrap:
            for part in self.bootstrap.split(","):
                _check(_BOOTSTRAP_HOST.fullmatch(part.strip()) is not None,
                       f"kafka.bootstrap: expected host:port[,host:port...], got {self.bootstrap!r}")
        for key in ("topic", "dlq_topic"):
            value = getattr(self, key)
            _check(_KAFKA_TOPIC.fullmatch(value) is not None and value not in (".", ".."),
                   f"kafka.{key}: {value!r} must be 1-249 characters of A-Z a-z 0-9 . _ -")
        _check(self.topic != self.dlq_topic, "kafka.dlq_topic: must differ from kafka.topic")
        _check(bool(self.group), "kafka.group: must not be empty")
        _check(self.encoding in ENCODINGS, f"kafka.encoding: expected one of {', '.join(ENCODINGS)}, "
                                            f"got {self.encoding!r}")
        _check(self.record in RECORD_KINDS, f"kafka.record: expected one of {', '.join(RECORD_KINDS)}, "
                                             f"got {self.record!r}")
        _check(1 <= self.bridge_batch_points <= 1_000_000,
               f"kafka.bridge_batch_points: must be 1..1000000, got {self.bridge_batch_points}")
        _check(1 <= self.delivery_timeout <= 3600,
               f"kafka.delivery_timeout: must be 1 s..1 h, got {self.delivery_timeout}")
        _check(1 <= self.partitions <= 10000, f"kafka.partitions: must be 1..10000, got {self.partitions}")
        _check(1 <= self.replication_factor <= 32,
               f"kafka.replication_factor: must be 1..32, got {self.replication_factor}")
        _check(self.security_protocol in KAFKA_SECURITY,
               f"kafka.security_protocol: expected one of {', '.join(KAFKA_SECURITY)}, got {self.security_protocol!r}")
        sasl = self.security_protocol.startswith("sasl")
        _check(not sasl or self.sasl_mechanism in KAFKA_SASL,
               f"kafka.sasl_mechanism: expected one of {', '.join(KAFKA_SASL)}, got {self.sasl_mechanism!r}")
        _check(not sasl or (bool(self.username) and bool(self.password_file)),
               f"kafka.security_protocol: {self.security_protocol} needs kafka.username and kafka.password_file")
        _check(not self.ca_file or Path(self.ca_file).is_file(), f"kafka.ca_file: {self.ca_file} does not exist")
        # librdkafka's bounds for session.timeout.ms; brokers allow 6-1800 s by default (group.*.session.timeout.ms).
        _check(1 <= self.session_timeout <= 3600,
               f"kafka.session_timeout: must be 1 s..1 h, got {self.session_timeout}")
        _check(self.assignment in KAFKA_ASSIGNMENT,
               f"kafka.assignment: expected one of {', '.join(KAFKA_ASSIGNMENT)}, got {self.assignment!r}")
        _check(0 <= self.revoke_timeout <= 240, f"kafka.revoke_timeout: must be 0..240 s (the poll thread waits for it "
                                                f"inside the rebalance), got {self.revoke_timeout}")


@dataclass
class HomeAssistantSection(CoreHomeAssistantSection):
    state_prefix: str = "cloud-ingest/ha"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(bool(self.state_prefix), "homeassistant.state_prefix: must not be empty")


@dataclass
class Config:
    mqtt: MqttSection = field(default_factory=MqttSection)
    influx: InfluxSection = field(default_factory=InfluxSection)
    batch: BatchSection = field(default_factory=BatchSection)
    dedup: DedupSection = field(default_factory=DedupSection)
    formats: FormatsSection = field(default_factory=FormatsSection)
    rollups: RollupsSection = field(default_factory=RollupsSection)
    dlq: DlqSection = field(default_factory=DlqSection)
    confirm: ConfirmSection = field(default_factory=ConfirmSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    status: StatusSection = field(default_factory=StatusSection)
    log: LogSection = field(default_factory=LogSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    http: HttpSection = field(default_factory=HttpSection)
    homeassistant: HomeAssistantSection = field(default_factory=HomeAssistantSection)
    kafka: KafkaSection = field(default_factory=KafkaSection)

    def batch_max_messages(self) -> int:
        """Messages per batch: half the in-flight window by default, so that one batch fills while another is
        written. Never more than the window, or a batch would wait for messages the broker won't send."""
        window = self.mqtt.receive_maximum
        return min(self.batch.max_messages or max(1, window // 2), window)


def load_config(path: Path | None, overrides: dict[str, object] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Load and validate; raise ConfigError naming the bad key."""
    cfg = load(Config, path, env_prefix=ENV_PREFIX, environ=environ, overrides=overrides)
    if cfg.status.file == "off":
        cfg.status.file = ""  # no status file (and so no dedup journal beside it)
    elif not cfg.status.file:
        cfg.status.file = str(state_dir("cloud-ingest", environ) / "status.json")
    if path is not None:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for section, key in (("mqtt", "password"), ("influx", "password"), ("influx", "token")):
            sec = data.get(section, {})
            if sec.get(key) or urlsplit(str(sec.get("url", ""))).password:
                check_private(f"{section}.{key}", path)
    _check_cross(cfg)
    return cfg


def _check_cross(cfg: Config) -> None:
    if cfg.mqtt.dlq_topic in cfg.formats.topics():
        raise ConfigError(f"mqtt.dlq_topic: {cfg.mqtt.dlq_topic!r} is also a formats topic; dead letters would loop")
    if cfg.alerts.rules and any(_matches(t, f"{cfg.alerts.topic_prefix}/r/m") for t in cfg.formats.topics()):
        raise ConfigError(f"alerts.topic_prefix: {cfg.alerts.topic_prefix!r} is under a formats topic; the receiver "
                          "would read its own alerts")
    if cfg.http.listen and cfg.http.max_body > cfg.formats.max_payload:
        raise ConfigError(f"http.max_body: {int(cfg.http.max_body)} is more than formats.max_payload "
                          f"({int(cfg.formats.max_payload)}), which would refuse the bodies in between")


def _matches(filt: str, topic: str) -> bool:
    f, t = filt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def check_secrets(cfg: Config) -> None:
    """Read every credential file now: a missing one, or one others can read, is a one-line error before the
    receiver starts (not a traceback at the first connect)."""
    cfg.mqtt.credentials()
    influx_url(cfg)
    sink_options(cfg)
    http_settings(cfg)


def check_runtime(cfg: Config) -> None:
    """What only `run` needs: checked there, so that `config check` works on another machine."""
    check_secrets(cfg)
    if cfg.status.file:
        ensure_dir("status.file", Path(cfg.status.file).parent)
    state = dedup_state_file(cfg)  # by default in the status directory
    if state is not None:
        ensure_dir("dedup.state_file", state.parent)
    alerts = alerts_state_file(cfg)
    if alerts is not None:
        ensure_dir("alerts.state_file", alerts.parent)


def alerts_state_file(cfg: Config) -> Path | None:
    """Where the alert state is kept across restarts: alerts.state_file, else next to status.file."""
    if not cfg.alerts.rules:
        return None
    if cfg.alerts.state_file:
        return Path(cfg.alerts.state_file)
    if cfg.status.file:
        status_file = Path(cfg.status.file)
        return status_file.with_name(f"{status_file.stem}.alerts.json")
    return None


def alert_settings(cfg: Config) -> AlertSettings | None:
    a = cfg.alerts
    if not a.rules:
        return None
    return AlertSettings(rules=tuple(r.rule() for r in a.rules), topic_prefix=a.topic_prefix,
                         horizon_s=float(a.horizon), check_interval_s=float(a.check_interval),
                         state_file=alerts_state_file(cfg), webhook_url=a.webhook_url,
                         webhook_timeout_s=float(a.webhook_timeout), webhook_retries=a.webhook_retries,
                         webhook_queue=a.webhook_queue)


def dedup_state_file(cfg: Config) -> Path | None:
    """Where the dedup memory is kept across restarts: dedup.state_file, else next to status.file."""
    if not cfg.dedup.enabled:
        return None
    if cfg.dedup.state_file:
        return Path(cfg.dedup.state_file)
    if cfg.status.file:
        status_file = Path(cfg.status.file)
        return status_file.with_name(f"{status_file.stem}.dedup.sqlite")
    return None


def influx_url(cfg: Config) -> str:
    """influx.url, with the password from influx.password_file put in when that is set."""
    if not cfg.influx.password_file:
        return cfg.influx.url
    parts = urlsplit(cfg.influx.url)
    if not parts.username:
        raise ConfigError("influx.password_file: influx.url has no user name (http://user@host:8086/db)")
    secret = quote(read_secret_file("influx.password_file", cfg.influx.password_file), safe="")
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:{secret}@{host}").geturl()


def gzip_writes(influx: InfluxSection) -> bool:
    """influx.gzip: "auto" compresses the writes unless InfluxDB is on this host (a loopback address or localhost),
    where compressing only costs CPU at both ends: 0.56 µs of the receiver's CPU per point of a Ruuvi Gateway batch
    (293 bytes of line protocol, 13.7:1 at level 1), about 3 % of all it spends per one-reading message, and influxd
    then inflates it."""
    if influx.gzip != "auto":
        return influx.gzip == "true"
    host = urlsplit(influx.url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: assume it is remote


def sink_options(cfg: Config) -> SinkOptions:
    token = read_secret_file("influx.token_file", cfg.influx.token_file) if cfg.influx.token_file else cfg.influx.token
    return SinkOptions(
        timeout_s=float(cfg.influx.timeout),
        gzip=gzip_writes(cfg.influx),
        backoff_max_s=float(cfg.influx.backoff_max),
        token=token or None,
        org=cfg.influx.org or None,
        bucket=cfg.influx.bucket or None,
    )


def rollup_config(cfg: Config) -> RollupConfig:
    r = cfg.rollups
    return RollupConfig(
        measurement=cfg.influx.measurement,
        raw_rp=r.raw_rp,
        raw_duration=r.raw_duration,
        rollup_rp=r.rollup_rp,
        rollup_duration=r.rollup_duration,
        intervals=tuple(r.intervals),
        battery_field=r.battery_field,
        cq_resample=r.cq_resample,
        settle_s=float(r.settle),
        late_margin_s=float(r.late_margin),
    )


def receiver_settings(cfg: Config) -> ReceiverSettings:
    """Everything the receiver needs, resolved: credentials read, TLS context built, subscriptions spelled out."""
    mq = cfg.mqtt
    parts = urlsplit(mq.url)
    tls = parts.scheme == "mqtts"
    user, password = mq.credentials()
    share = f"$share/{mq.shared_group}/" if mq.shared_group else ""
    mqtt = MqttSettings(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=mq.ssl_context(),
        username=user,
        password=password,
        client_id=mq.client_id,
        keepalive=mq.keepalive,
        qos=mq.qos,
        session_expiry_s=int(mq.session_expiry),
        receive_maximum=mq.receive_maximum,
        held_back_reconnect_s=float(mq.held_back_reconnect),
        subscriptions=tuple(share + t for t in cfg.formats.topics()),
    )
    return ReceiverSettings(
        mqtt=mqtt,
        dlq_topic=mq.dlq_topic,
        dlq_max_payload=int(cfg.dlq.max_payload),
        batch_max_points=cfg.batch.max_points,
        batch_max_interval_s=float(cfg.batch.max_interval),
        batch_max_messages=cfg.batch_max_messages(),
        queue_batches=cfg.batch.queue_batches,
        writers=cfg.batch.writers,
        dedup=cfg.dedup.enabled,
        dedup_window_s=float(cfg.dedup.window),
        dedup_max_entries=cfg.dedup.max_entries,
        dedup_state_file=dedup_state_file(cfg),
        status_interval_s=float(cfg.status.interval),
        confirm=cfg.confirm.enabled,
        alerts=alert_settings(cfg),
        http=http_settings(cfg),
    )


def http_settings(cfg: Config) -> HttpSettings | None:
    """The HTTP listener's settings with its secrets read and its TLS context built; None when it is off."""
    h = cfg.http
    if not h.listen:
        return None
    host, port = split_listen("http.listen", h.listen)
    password = read_secret_file("http.password_file", h.password_file) if h.auth == "basic" else ""
    token = read_secret_file("http.token_file", h.token_file) if h.auth == "bearer" else ""
    _check(h.auth != "basic" or bool(password), f"http.password_file: {h.password_file} is empty")
    _check(h.auth != "bearer" or bool(token), f"http.token_file: {h.token_file} is empty")
    tls = None
    if h.cert_file:
        try:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(h.cert_file, h.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"http.cert_file: cannot load {h.cert_file} with http.key_file {h.key_file}: {e}") \
                from None
    return HttpSettings(host=host, port=port, path=h.path, auth=h.auth, user=h.user, password=password, token=token,
                        tls=tls, max_body=int(h.max_body), timeout_s=float(h.timeout))


def formats_config(cfg: Config) -> FormatsConfig:
    f = cfg.formats
    return FormatsConfig(
        measurement=cfg.influx.measurement,
        edge=tuple(f.edge),
        ruuvi_gateway=tuple(f.ruuvi_gateway),
        flat=tuple(f.flat),
        max_payload_bytes=int(f.max_payload),
        max_age_s=float(f.max_age),
        max_ahead_s=float(f.max_ahead),
    )


def homeassistant_settings(cfg: Config) -> CloudHaSettings | None:
    """The Home Assistant discovery settings, or None when [homeassistant] is off."""
    h = cfg.homeassistant
    if not h.enabled:
        return None
    return CloudHaSettings(discovery_prefix=h.discovery_prefix, state_prefix=h.state_prefix,
                           state_interval_s=float(h.state_interval), expire_after_s=int(h.expire_after),
                           remove_after_s=float(h.remove_after))


def check_kafka_consumer(cfg: Config) -> None:
    """`run --kafka` publishes nothing over MQTT: what would, is refused with the key to turn off."""
    _check(not cfg.alerts.rules, "alerts.rules: alerts publish over MQTT, not available with --kafka "
                                 "(run them in an MQTT receiver, or remove the rules)")
    _check(not cfg.homeassistant.enabled, "homeassistant.enabled: Home Assistant discovery publishes over MQTT, "
                                          "not available with --kafka")
    _check(not cfg.http.listen, "http.listen: the Ruuvi Gateway HTTP listener is not available with --kafka")


def kafka_settings(cfg: Config) -> KafkaSettings:
    """The consumer's settings, credentials read (`run --kafka`). Confirmations are the bridge's job."""
    k = cfg.kafka
    return KafkaSettings(client=kafka_client_config(cfg), topic=k.topic, dlq_topic=k.dlq_topic, group=k.group,
                         client_id=cfg.mqtt.client_id, session_timeout_s=float(k.session_timeout),
                         revoke_timeout_s=float(k.revoke_timeout), delivery_timeout_s=float(k.delivery_timeout),
                         assignment=k.assignment,
                         max_records=cfg.batch.max_points * (cfg.batch.queue_batches + cfg.batch.writers + 1))


def kafka_client_config(cfg: Config) -> dict[str, str]:
    """The librdkafka settings every Kafka client of ours shares (producer, consumer, admin): where the brokers are
    and how to authenticate. Reads kafka.password_file; ConfigError naming the key when Kafka is not configured."""
    k = cfg.kafka
    if not k.bootstrap:
        raise ConfigError("kafka.bootstrap: not set (--kafka host:port)")
    out = {"bootstrap.servers": k.bootstrap, "security.protocol": k.security_protocol}
    if k.security_protocol.startswith("sasl"):
        out["sasl.mechanism"] = k.sasl_mechanism
        out["sasl.username"] = k.username
        out["sasl.password"] = read_secret_file("kafka.password_file", k.password_file)
    if k.ca_file:
        out["ssl.ca.location"] = k.ca_file
    return out
