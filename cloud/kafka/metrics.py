"""Prometheus metrics of the Kafka producer (the bridge), on the receiver's registry (cloud/metrics.py), in its
naming style. The bridge's readings are also counted by the receiver's own metrics (`points_written` = readings
Kafka acknowledged, `write_errors` = produce rounds retried)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class KafkaMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        p = "cloud_ingest_kafka_"
        self.records_produced = Counter(p + "records_produced", "records Kafka acknowledged, by topic", ["topic"],
                                        registry=r)
        self.produce_errors = Counter(p + "produce_errors", "failed record deliveries, by topic and librdkafka error "
                                      "name; each is produced again, or dead-lettered when Kafka refuses the record "
                                      "itself", ["topic", "error"], registry=r)
        self.delivery_seconds = Histogram(p + "delivery_seconds", "time from the produce of a write's records to "
                                          "Kafka's acknowledgement of the last one (one try)",
                                          buckets=_SECONDS_BUCKETS, registry=r)
        self.queue_records = Gauge(p + "queue_records", "records in the producer's queue, not acknowledged yet",
                                   registry=r)
