"""Prometheus metrics of the receiver, on its own registry (so tests and several receivers in one process don't clash).

Names are what cloud/prometheus/cloud-ingest.rules.yml alerts on; keep the two in step.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BATCH_BUCKETS = (1, 10, 20, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "cloud_ingest_"
        self.messages_received = Counter(p + "messages_received", "MQTT messages received", ["format"], registry=r)
        self.redeliveries = Counter(p + "redeliveries", "MQTT messages received with the DUP flag", registry=r)
        self.held_back = Counter(p + "held_back_reconnects", "reconnects to get a message the broker held back (a "
                                 "skipped packet id, cloud/mqtt_gaps.py)", registry=r)
        self.resent_points = Counter(p + "resent_points", "points dropped by dedup as already written: a gateway's "
                                     "re-send or an MQTT redelivery", registry=r)
        self.readings_received = Counter(p + "readings_received", "readings (points) parsed from messages", registry=r)
        self.points_written = Counter(p + "points_written", "points written to the database", registry=r)
        self.dead_letters = Counter(p + "dead_letters", "messages or points sent to the dead-letter topic",
                                    ["stage"], registry=r)
        self.readings_refused = Counter(p + "readings_refused", "readings dead-lettered on their own, by why: "
                                        "ahead (timestamp in the future), too_old", ["reason"], registry=r)
        self.duplicates = Counter(p + "duplicates", "readings dropped by cross-gateway dedup, by the gateway that sent "
                                  "the dropped copy", ["gateway"], registry=r)
        self.confirmations = Counter(p + "confirmations", "confirmation messages published to edge-gw gateways",
                                     registry=r)
        self.confirmed_seqs = Counter(p + "confirmed_seqs", "edge-gw batch seqs confirmed", registry=r)
        self.broker_dropped = Counter(p + "broker_dropped_messages", "messages the broker dropped (Mosquitto's "
                                      "broker-wide $SYS count, all clients), counted across receiver and broker "
                                      "restarts", registry=r)
        self.broker_last_drop = Gauge(p + "broker_last_drop_timestamp_seconds", "Unix time the receiver last saw the "
                                      "broker's drop counter rise (0: never)", registry=r)
        self.broker_sys_ok = Gauge(p + "broker_sys_ok", "1 while the broker's $SYS drop counter reaches the receiver, "
                                   "0 when it cannot (ACL, not Mosquitto, sys_interval 0)", registry=r)
        self.write_errors = Counter(p + "write_errors", "failed write attempts (retried)", registry=r)
        self.batches = Counter(p + "batches", "batches written, by why they closed", ["reason"], registry=r)
        self.batch_points = Histogram(p + "batch_points", "points per written batch", buckets=_BATCH_BUCKETS,
                                      registry=r)
        self.batch_messages = Histogram(p + "batch_messages", "MQTT messages per written batch",
                                        buckets=_BATCH_BUCKETS, registry=r)
        self.write_seconds = Histogram(p + "write_seconds", "time to write one batch, retries included",
                                       buckets=_SECONDS_BUCKETS, registry=r)
        self.lag_seconds = Histogram(p + "lag_seconds", "now minus the gateway receive time of the newest point of "
                                     "a batch, when the batch is written", buckets=_LAG_BUCKETS, registry=r)
        self.lag_last = Gauge(p + "lag_last_seconds", "ingest lag of the last written batch (newest point)",
                              registry=r)
        self.queue_batches = Gauge(p + "queue_batches", "closed batches waiting to be written", registry=r)
        self.queue_points = Gauge(p + "queue_points", "points in memory, not written yet", registry=r)
        self.inflight = Gauge(p + "inflight_messages", "MQTT messages received and not acknowledged yet", registry=r)
        self.mqtt_connected = Gauge(p + "mqtt_connected", "1 while connected to the broker", registry=r)
        self.sink_ok = Gauge(p + "sink_ok", "1 while the last write succeeded, 0 while writes fail", registry=r)
        self.last_write = Gauge(p + "last_write_timestamp_seconds", "Unix time of the last successful write",
                                registry=r)
        self.gateway_last_seen = Gauge(p + "gateway_last_seen_timestamp_seconds",
                                       "Unix time a message from the gateway was last received", ["gateway"],
                                       registry=r)
        self.gateway_online = Gauge(p + "gateway_online", "1 if the gateway's last status said online", ["gateway"],
                                    registry=r)
        self.alert_events = Counter(p + "alert_events", "alert events published (docs/cloud-ingest.md, \"Alerts on "
                                    "the data\"), by rule and state (firing, resolved)", ["rule", "state"], registry=r)
        self.alerts_firing = Gauge(p + "alerts_firing", "alerts firing now (as last published)", registry=r)
        self.alert_webhook = Counter(p + "alert_webhook", "alerts posted to the webhook, by result: sent, error (a "
                                     "failed attempt, retried), dropped (queue full or retries exhausted)",
                                     ["result"], registry=r)
        self.http_requests = Counter(p + "http_requests", "HTTP requests to the Ruuvi Gateway listener, by answer code",
                                     ["code"], registry=r)
        self.http_readings = Counter(p + "http_readings_received", "readings parsed from HTTP request bodies",
                                     registry=r)
        # The Kafka input (`run --kafka`, cloud/kafka/consumer.py) and its dead-letter producer (cloud/kafka/dlq.py).
        self.kafka_records = Counter(p + "kafka_records", "Kafka records consumed", registry=r)
        self.kafka_poison = Counter(p + "kafka_poison_records", "Kafka records that could not be decoded (sent to "
                                    "the dead-letter topic)", registry=r)
        self.kafka_commit_failures = Counter(p + "kafka_commit_failures", "failed Kafka offset commits (retried "
                                             "with the next commit)", registry=r)
        self.kafka_lag = Gauge(p + "kafka_lag_records", "records in the partition after the group's committed "
                               "offset (high watermark minus committed), per assigned partition",
                               ["topic", "partition"], registry=r)
        self.kafka_rebalances = Counter(p + "kafka_rebalances", "partitions assigned, revoked or lost, by event",
                                        ["event"], registry=r)
        self._server: Any = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics; return the bound port (port 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
