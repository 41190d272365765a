"""`cloud-ingest run` as a real process: kill -9 mid-stream loses nothing; a 401 from the database stops it loudly
without acknowledging anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from servers import Influxd
from test_receiver_support import (
    Publisher,
    broker_settings,
    create_db,
    edge_batch,
    mac_text,
    now_ns,
    reading,
    stored,
    wait_until,
)

MS = 1_000_000


def cloud_ingest(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-c", "from cloud.cli import main; main()", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def run_args(mqtt_port: int, url: str, tmp: Path, *extra: str) -> list[str]:
    return ["run", "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}", "--influx", url, "--client-id", "rx-kill",
            "--metrics-port", "0", "--status-file", str(tmp / "status.json"),
            "--set", "batch.max_interval=0.2", "--set", "influx.backoff_max=0.5", "--set", "rollups.enabled=false",
            *extra]


def wait_subscribed(log: Path, timeout: float = 15.0) -> None:
    wait_until(lambda: log.exists() and b"subscribed to" in log.read_bytes(), timeout, "receiver subscribed")


def test_kill_9_mid_stream_loses_nothing(mosquitto_factory: Any, influxd: Any, tmp_path: Path) -> None:
    mosquitto = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    url = create_db(influxd)
    log = tmp_path / "rx.log"
    rx = cloud_ingest(*run_args(mosquitto.port, url, tmp_path), log=log)
    pub = Publisher(mosquitto.port)
    batches, per_batch = 400, 50
    t0 = now_ns() - 600_000 * MS
    try:
        wait_subscribed(log)

        def publish() -> None:
            for b in range(batches):
                rs = [reading(i, b, t0 + b * 1000 * MS + i * MS) for i in range(per_batch)]
                pub.publish([("edge-gw/gw-k/batch", edge_batch("gw-k", b, rs))])
                time.sleep(0.005)

        feeder = threading.Thread(target=publish)
        feeder.start()
        wait_until(lambda: len(stored(influxd)) >= 2000, 30, "some points written")
        os.kill(rx.pid, signal.SIGKILL)
        rx.wait(10)
        assert rx.returncode == -signal.SIGKILL
        written_at_kill = len(stored(influxd))
        assert written_at_kill < batches * per_batch  # it really died mid-stream
        time.sleep(0.5)
        rx = cloud_ingest(*run_args(mosquitto.port, url, tmp_path), log=log)
        feeder.join(60)
        wait_until(lambda: len(stored(influxd)) == batches * per_batch, 60, "every point after the restart")
        pts = stored(influxd)
        want = {(t0 + b * 1000 * MS + i * MS, mac_text(i)) for b in range(batches) for i in range(per_batch)}
        assert {(p["time"], p["mac"]) for p in pts} == want
    finally:
        pub.close()
        if rx.poll() is None:
            rx.send_signal(signal.SIGTERM)
            rx.wait(30)
    assert rx.returncode == 0, log.read_text()[-3000:]


def test_database_refusing_credentials_stops_the_receiver_without_acknowledging(mosquitto: Any,
                                                                                  tmp_path: Path) -> None:
    db = Influxd(tmp_path / "influxd", auth=True).start()
    log = tmp_path / "rx.log"
    try:
        db.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES", method="POST")
        good = f"http://admin:right@127.0.0.1:{db.port}/ruuvi"
        bad = f"http://admin:wrong@127.0.0.1:{db.port}/ruuvi"
        setup = cloud_ingest("setup", "--influx", good, log=tmp_path / "setup.log")
        assert setup.wait(30) == 0, (tmp_path / "setup.log").read_text()
        assert "setup ok" in (tmp_path / "setup.log").read_text()
        rx = cloud_ingest(*run_args(mosquitto.port, bad, tmp_path), log=log)
        wait_subscribed(log)
        pub = Publisher(mosquitto.port)
        t0 = now_ns() - 60_000 * MS
        pub.publish([("edge-gw/gw-a/batch", edge_batch("gw-a", 1, [reading(i, 1, t0 + i) for i in range(5)]))])
        pub.close()
        assert rx.wait(30) == 1
        text = log.read_text()
        assert "HTTP 401" in text and "Error:" in text
        # Nothing was acknowledged: with the right password the same session gets the message again.
        rx = cloud_ingest(*run_args(mosquitto.port, good, tmp_path), log=log)
        wait_until(lambda: len(_stored_auth(db)) == 5, 30, "5 points")
        rx.send_signal(signal.SIGTERM)
        assert rx.wait(30) == 0
    finally:
        db.stop()


def _stored_auth(db: Influxd) -> list[list[Any]]:
    res = db.query('SELECT * FROM "ruuvi"', "ruuvi", user="admin", password="right")
    return [row for s in res["results"][0].get("series", []) for row in s["values"]]


def test_broker_refusing_the_connection_exits_1(mosquitto_factory: Any, tmp_path: Path) -> None:
    broker = mosquitto_factory(tmp_path / "mq", anonymous=False).start()
    log = tmp_path / "rx.log"
    rx = cloud_ingest(*run_args(broker.port, "http://127.0.0.1:9/ruuvi", tmp_path), log=log)
    assert rx.wait(30) == 1
    assert "Error: the broker refused the connection" in log.read_text()
