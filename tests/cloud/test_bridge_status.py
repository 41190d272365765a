"""`cloud-ingest status` on the bridge's status file: it says Kafka, where the readings go and what the producer did."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from cloud import status
from cloud.cli import cli


def test_status_of_the_bridge_names_kafka_its_topic_and_the_producer_counts(tmp_path: Path) -> None:
    now = time.time_ns()
    st = status.Status(
        client_id="bridge-1", pid=4242, started_ns=now - 60 * 10**9, updated_ns=now, mqtt_connected=True,
        sink_state="retrying", sink_error="_ALL_BROKERS_DOWN: 1/1 brokers are down", written=9000,
        sink_name="kafka 10.0.0.5:9092 topic ruuvi.readings (avro, one record per batch)",
        sink_counts={"records_produced": 120, "produce_errors": 3, "queued_records": 40},
    )
    path = tmp_path / "status.json"
    status.write(path, st)
    result = CliRunner().invoke(cli, ["status", "--status-file", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:5] == [
        "mqtt:           connected",
        "kafka:          retrying (last error: _ALL_BROKERS_DOWN: 1/1 brokers are down)",
        "  kafka 10.0.0.5:9092 topic ruuvi.readings (avro, one record per batch): 120 records produced, "
        "3 produce errors, 40 queued records",
        "queue:          0 batches, 0 points, 0 messages not acknowledged",
    ]
    assert status.read(path) == st  # the two new fields survive the file
