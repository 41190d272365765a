"""The whole gateway process (`edge-gw run`) against a real Mosquitto: kill -9, flush, status, bad config, no BlueZ."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto

from core.wire import encode_confirms

EDGE = [sys.executable, "-m", "edge.cli"]


class Collector:
    """Subscribes to every gateway batch, keeps every reading's identity (mac, time_ns) and confirms each batch as
    cloud-ingest would (the gateway deletes only confirmed readings)."""

    def __init__(self, port: int) -> None:
        self.keys: set[tuple[str, int]] = set()
        self.deliveries = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="collector", clean_session=False)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edge-gw/+/batch", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        batch = json.loads(msg.payload)
        with self.lock:
            self.deliveries += len(batch["readings"])
            self.keys.update((r["mac"], r["time_ns"]) for r in batch["readings"])
        for payload in encode_confirms(batch["gateway"], [batch["seq"]]):
            self.client.publish(f"edge-gw/{batch['gateway']}/confirm", payload, qos=1)

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.keys) < n:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def committed_total(db: Path) -> int:
    """Readings ever committed: AUTOINCREMENT ids are handed out in order and never reused or rolled back."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        return int(row[0]) if row else 0


def buffered(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def gateway_cmd(broker: Mosquitto, db: Path, *extra: str) -> list[str]:
    return [*EDGE, "run", "--gateway-id", "gw-test", "--mqtt", broker.url, "--db", str(db), "--assume-synced", *extra]


def test_kill9_loses_nothing_committed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    collector = Collector(mosquitto.port)
    rng = random.Random(7)
    try:
        # At least 4 kills, and on until over 1000 readings were committed: on a loaded machine (the other test
        # workers) a gateway can spend most of its 1-2 s starting.
        round_ = 0
        while round_ < 4 or (committed_total(db) <= 1000 and round_ < 20):
            proc = subprocess.Popen(
                gateway_cmd(mosquitto, db, "--source", "simulate", "--tags", "50", "--rate", "3000",
                            "--seed", str(round_)),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0.8, 1.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            round_ += 1
        total = committed_total(db)
        assert total > 1000
        # Whatever is still buffered goes out with flush; then every committed reading has arrived.
        flush = subprocess.run([*EDGE, "flush", "--gateway-id", "gw-test", "--mqtt", mosquitto.url, "--db", str(db),
                                "--timeout", "60"], capture_output=True, text=True, check=False)
        assert flush.returncode == 0, flush.stderr
        collector.wait_for(total, 30)
        assert buffered(db) == 0
        assert len(collector.keys) == total  # zero lost: every committed reading, by identity
        assert collector.deliveries >= total  # at-least-once: duplicates allowed, never fewer
    finally:
        collector.close()


def test_count_exits_after_commit_and_drain(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    collector = Collector(mosquitto.port)
    try:
        proc = subprocess.run(gateway_cmd(mosquitto, db, "--source", "simulate", "--tags", "10", "--rate", "5000",
                                          "--count", "3000", "--drain", "30"),
                              capture_output=True, text=True, check=False, timeout=60)
        assert proc.returncode == 0, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("adverts=3000 committed=")
        committed = int(last.split("committed=")[1].split()[0])
        assert committed == committed_total(db)
        # Each virtual tag repeats a measurement 2-3 times; dedup keeps one.
        assert 3000 / 3 <= committed <= 3000 / 2
        collector.wait_for(committed, 10)
        assert len(collector.keys) == committed
        report = json.loads(subprocess.run([*EDGE, "status", "--db", str(db), "--json"], capture_output=True,
                                           text=True, check=True).stdout)
        assert report["buffer"]["rows"] == 0
        assert report["counters"]["adverts_received"] == 3000
        assert report["counters"]["readings_stored"] == committed
        assert report["counters"]["readings_acked"] == committed
        assert report["duplicates"] == 3000 - committed
        assert len(report["tags"]) == 10
        assert all(t["completeness_pct"] == 100.0 for t in report["tags"])
        assert report["gateway"]["running"] is False
        screen = subprocess.run([*EDGE, "status", "--db", str(db)], capture_output=True, text=True, check=True).stdout
        assert "daemon not running" in screen and f"delivered {committed}" in screen
    finally:
        collector.close()


def test_broker_down_then_up_through_the_daemon(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosq").start()
    db = tmp_path / "edge.db"
    collector = Collector(broker.port)
    proc = subprocess.Popen(gateway_cmd(broker, db, "--source", "simulate", "--tags", "20", "--rate", "2000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        collector.wait_for(200, 30)
        assert len(collector.keys) >= 200, "the gateway did not forward"
        broker.stop()
        # The gateway keeps committing to its buffer while the broker is away.
        deadline = time.monotonic() + 30
        while buffered(db) <= 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert buffered(db) > 1000
        seen = len(collector.keys)
        broker.start()  # same port, same persistence dir: the collector's session is kept
        collector.wait_for(seen + 1000, 30)  # the gateway reconnected and forwards its backlog again
        assert len(collector.keys) >= seen + 1000
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        total = committed_total(db)
        flush = subprocess.run([*EDGE, "flush", "--gateway-id", "gw-test", "--mqtt", broker.url, "--db", str(db)],
                               capture_output=True, text=True, check=False)
        assert flush.returncode == 0, flush.stderr
        collector.wait_for(total, 30)
        assert len(collector.keys) == total
    finally:
        if proc.poll() is None:
            proc.kill()
        collector.close()
        broker.stop()


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[gateway]\nid = "x"\n[store]\nmax_bytes = "huge"\n')
    proc = subprocess.run([*EDGE, "run", "--config", str(cfg)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "Error: config: store.max_bytes: expected a size such as 536870912 or \"512MiB\", got 'huge'")


def test_without_bluez_run_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-such-bus"}
    proc = subprocess.run([*EDGE, "run", "--gateway-id", "gw", "--db", str(tmp_path / "e.db"), "--source", "bleak",
                           "--mqtt", "mqtt://127.0.0.1:1"], capture_output=True, text=True, check=False, env=env,
                          timeout=60)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "--source simulate" in errors[0]


@pytest.mark.parametrize("cmd", [["flush", "--gateway-id", "g"], ["status"]])
def test_missing_buffer(tmp_path: Path, cmd: list[str]) -> None:
    proc = subprocess.run([*EDGE, *cmd, "--db", str(tmp_path / "none.db")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: no buffer at {tmp_path / 'none.db'}" + (
        " (use --db)" if cmd == ["status"] else "")


def test_prometheus_metrics_while_running(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from servers import free_port

    port = free_port()
    collector = Collector(mosquitto.port)
    proc = subprocess.Popen(gateway_cmd(mosquitto, tmp_path / "e.db", "--source", "simulate", "--tags", "5",
                                        "--rate", "200", "--metrics-port", str(port)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import urllib.request

        deadline = time.monotonic() + 15
        values: dict[str, float] = {}
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                continue
            values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                      if line.startswith("edge_gw_") and " " in line}
            if values.get("edge_gw_readings_acked_total", 0) > 50:
                break
        assert values["edge_gw_adverts_received_total"] >= values["edge_gw_readings_stored_total"] > 50
        assert values["edge_gw_readings_acked_total"] > 50
        assert values["edge_gw_uplink_connected"] == 1.0
        assert values["edge_gw_clock_synced"] == 1.0
        assert values["edge_gw_decode_errors_total"] == 0.0
        assert values["edge_gw_confirms_received_total"] > 0
        assert values["edge_gw_tags_seen"] == 5.0
        assert 0.0 <= values["edge_gw_oldest_unsent_age_seconds"] < 60.0
        assert values["edge_gw_confirms_invalid_total"] == 0.0
        assert "edge_gw_unconfirmed_readings" in values
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        collector.close()


def test_scan_records_and_replay_forwards_the_same_adverts(mosquitto: Mosquitto, tmp_path: Path) -> None:
    capture = tmp_path / "capture.jsonl"
    scan = subprocess.run([*EDGE, "scan", "--source", "simulate", "--count", "300", "--record", str(capture)],
                          capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, "EDGE_GW_SOURCE_RATE": "3000", "EDGE_GW_SOURCE_TAGS": "6"})
    assert scan.returncode == 0, scan.stderr
    printed = [json.loads(line) for line in scan.stdout.splitlines()]
    assert len(printed) == 300 and scan.stderr.strip().endswith("300 adverts")
    assert {p["data_format"] for p in printed} == {5}
    assert all(p["raw"].startswith("05") and p["temperature"] is not None for p in printed)
    unique = {(p["mac"], p["measurement_sequence_number"]) for p in printed}
    db = tmp_path / "e.db"
    collector = Collector(mosquitto.port)
    try:
        run = subprocess.run(gateway_cmd(mosquitto, db, "--source", f"replay:{capture}", "--drain", "30"),
                             capture_output=True, text=True, check=False, timeout=90)
        assert run.returncode == 0, run.stderr
        assert run.stderr.strip().splitlines()[-1] == f"adverts=300 committed={len(unique)} drained=yes"
        collector.wait_for(len(unique), 10)
        assert len(collector.keys) == len(unique)
    finally:
        collector.close()
