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

from cloud import dlq
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
