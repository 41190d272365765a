"""/metrics, the shipped alert rules (valid, and naming only metrics that exist), dead-letter record encoding."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from cloud import dlq
from cloud.kafka.metrics import KafkaMetrics
from cloud.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "cloud" / "prometheus" / "cloud-ingest.rules.yml"


def exposed_names(m: Metrics) -> set[str]:
    m.gateway_online.labels("x").set(1)
    m.gateway_last_seen.labels("x").set(1)
    m.duplicates.labels("x").inc()
    m.dead_letters.labels("parse").inc()
    m.messages_received.labels("edge").inc()
    m.batches.labels("size").inc()
    m.kafka_lag.labels("ruuvi.readings", "0").set(1)
    m.kafka_rebalances.labels("lost").inc()
    # The Kafka producer's metrics, on the same registry as in the bridge and in run --kafka (cloud/kafka/bridge.py,
    # cloud/receiver.py): one process serves both sets.
    k = KafkaMetrics(m.registry)
    k.records_produced.labels("ruuvi.readings").inc()
    k.produce_errors.labels("ruuvi.readings", "_MSG_TIMED_OUT").inc()
    return {s.name for fam in m.registry.collect() for s in fam.samples}


def test_metrics_are_served() -> None:
    m = Metrics()
    port = m.serve(0)
    try:
        m.points_written.inc(5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        m.stop()
    assert "cloud_ingest_points_written_total 5.0" in text
    for name in ("cloud_ingest_batch_points_bucket", "cloud_ingest_write_seconds_bucket", "cloud_ingest_lag_seconds",
                 "cloud_ingest_queue_batches", "cloud_ingest_inflight_messages"):
        assert name in text


def test_alert_rules_name_only_existing_metrics() -> None:
    names = exposed_names(Metrics())
    used = set(re.findall(r"\bcloud_ingest_[a-z_]+", RULES.read_text()))
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    assert used and used <= names, used - names
    # receiver down, write errors, DLQ rate, gateway offline, lag: the ones the issue asks for, and a few more.
    assert {"CloudIngestDown", "CloudIngestWriteErrors", "CloudIngestDeadLetters", "CloudIngestGatewayOffline",
            "CloudIngestLag"} <= set(alerts)


def test_kafka_alert_rules_watch_the_kafka_path_with_exposed_metrics_only() -> None:
    groups = {g["name"]: g["rules"] for g in yaml.safe_load(RULES.read_text())["groups"]}
    kafka = {r["alert"]: r["expr"] for r in groups["cloud-ingest-kafka"]}
    used = {n for expr in kafka.values() for n in re.findall(r"\bcloud_ingest_[a-z_]+", expr)}
    assert used <= exposed_names(Metrics()), used - exposed_names(Metrics())
    assert all(n.startswith("cloud_ingest_kafka_") for n in used), used  # the Kafka path's own metrics
    # lag (high, growing, not consumed), the bridge's failed deliveries and stuck queue, commits, poison, sessions
    assert used == {"cloud_ingest_kafka_lag_records", "cloud_ingest_kafka_records_total",
                    "cloud_ingest_kafka_produce_errors_total", "cloud_ingest_kafka_queue_records",
                    "cloud_ingest_kafka_records_produced_total", "cloud_ingest_kafka_commit_failures_total",
                    "cloud_ingest_kafka_poison_records_total", "cloud_ingest_kafka_rebalances_total"}
    assert set(kafka) == {"CloudIngestKafkaLagHigh", "CloudIngestKafkaLagGrowing", "CloudIngestKafkaNotConsuming",
                          "CloudIngestKafkaProduceErrors", "CloudIngestKafkaProducerStuck",
                          "CloudIngestKafkaCommitFailures", "CloudIngestKafkaPoisonRecords",
                          "CloudIngestKafkaPartitionsLost"}
    # Label values the rules match on exist: the rebalance events the consumer counts (cloud/kafka/consumer.py).
    assert set(re.findall(r'event="(\w+)"', "".join(kafka.values()))) <= {"assigned", "revoked", "lost"}
    # Every rule of the file has a severity and a summary (Alertmanager routes and shows them).
    for rules in groups.values():
        for r in rules:
            assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
            assert r["annotations"]["summary"], r["alert"]


@pytest.mark.skipif(shutil.which("vmalert") is None, reason="vmalert (Debian package victoria-metrics) not installed")
def test_alert_rules_are_valid_for_vmalert(tmp_path: Path) -> None:
    ok = subprocess.run(["vmalert", "-dryRun", f"-rule={RULES}"], check=False, capture_output=True, text=True,
                        timeout=30)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("cloud_ingest_queue_batches >= 4", "cloud_ingest_queue_batches >= ("))
    bad = subprocess.run(["vmalert", "-dryRun", f"-rule={broken}"], check=False, capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode != 0  # the check would catch a broken expression


def test_dead_letter_records() -> None:
    rec = orjson.loads(dlq.record(topic="sensors/x", payload=b"\xff\x00binary", reason="malformed\nJSON  here",
                                  stage="parse", time_ns=7, receiver="rx"))
    assert rec == {"v": 1, "time_ns": 7, "receiver": "rx", "stage": "parse", "reason": "malformed JSON here",
                   "topic": "sensors/x", "payload_encoding": "base64", "payload": base64.b64encode(b"\xff\x00binary")
                   .decode(), "payload_size": 8, "truncated": False}
    assert dlq.payload_bytes(rec) == b"\xff\x00binary"
    # Cut inside a 3-byte character: still text, without the partial character.
    text = ("é" * 10 + "€").encode()
    rec = orjson.loads(dlq.record(topic="t", payload=text, reason="r", stage="parse", time_ns=1, receiver="rx",
                                  max_payload=21))
    assert (rec["payload_encoding"], rec["payload"], rec["payload_size"], rec["truncated"]) == ("utf-8", "é" * 10, 23,
                                                                                              True)
