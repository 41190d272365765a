"""Alerts on the data through the whole receiver, against a real Mosquitto and a real influxd: simulated tags sent as
edge-gw batches cross a threshold; the retained MQTT events, the Alertmanager webhook (a loopback HTTP server) and
a receiver restart (the firing state kept, nothing sent twice)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Any

import orjson
from test_receiver_support import (
    Publisher,
    Subscriber,
    count,
    create_db,
    edge_batch,
    mac_text,
    now_ns,
    reading,
    start_receiver,
    wait_until,
)

from cloud import status
from cloud.config import Config, load_config

MIN = 60_000_000_000
HOT, COLD_TAG = 1, 2

RULES = """
[alerts]
horizon = "2h"
check_interval = "0.2s"
webhook_url = "{webhook}"
webhook_retries = 2

[[alerts.rules]]
name = "cold-room-warm"
kind = "threshold"
field = "temperature"
op = ">"
value = 8.0
duration = "5m"
severity = "critical"
"""


class Webhook:
    """A loopback HTTP server that stores each POST body, answering 200 (Alertmanager answers 200 too)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        posts = self.posts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append((self.path, orjson.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v2/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(mqtt_port: int, influx_url: str, tmp: Path, webhook: str) -> Config:
    path = tmp / "cloud.toml"
    path.write_text(RULES.format(webhook=webhook))
    path.chmod(0o600)
    return load_config(path, {
        "mqtt.url": f"mqtt://127.0.0.1:{mqtt_port}", "influx.url": influx_url, "influx.backoff_max": "0.5",
        "metrics.port": "0", "status.file": str(tmp / "status.json"), "status.interval": "0.2",
        "mqtt.client_id": "receiver-test", "batch.max_interval": "0.2",
    }, environ={})


def minute_batches(seq0: int, t0: int, minutes: range, temps: dict[int, list[float]]) -> list[tuple[str, bytes]]:
    """One edge-gw batch a minute from gateway pi-1, one reading per tag."""
    out = []
    for m in minutes:
        readings = [reading(tag, m, t0 + m * MIN + tag, temp_c=temps[tag][m]) for tag in sorted(temps)]
        out.append(("edge-gw/pi-1/batch", edge_batch("pi-1", seq0 + m, readings)))
    return out


def events(sub: Subscriber) -> list[tuple[str, str, int, int, float]]:
    out = []
    for topic, payload in sub.messages:
        e = orjson.loads(payload)
        out.append((topic, e["state"], e["starts_ns"], e["ends_ns"], e["value"]))
    return out


def test_tags_crossing_a_threshold_give_exactly_the_retained_events_and_webhook_posts_across_a_restart(
        mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    hook = Webhook()
    url = create_db(influxd)
    cfg = config(mosquitto.port, url, tmp_path, hook.url)
    hot, cold = mac_text(HOT), mac_text(COLD_TAG)
    t0 = now_ns() - 30 * MIN
    # The hot tag: 5 °C, above 8 from minute 2 (fires at minute 7, after 5 min), back to 5 at minute 14.
    temps = {HOT: [5.0, 5.0] + [9.0] * 12 + [5.0, 5.0], COLD_TAG: [4.0] * 16}
    sub = Subscriber(mosquitto.port, "edge-gw/alerts/#", client_id="alert-watcher")
    pub = Publisher(mosquitto.port)
    rr = start_receiver(cfg)
    try:
        pub.publish(minute_batches(100, t0, range(10), temps))
        wait_until(lambda: count(influxd) == 20, 20, "minutes 0-9 written")
        wait_until(lambda: len(sub.messages) >= 1 and len(hook.posts) >= 1, 10, "the firing event")
        topic = f"edge-gw/alerts/cold-room-warm/{hot}"
        assert events(sub) == [(topic, "firing", t0 + 7 * MIN + HOT, 0, 9.0)]
        assert hook.posts == [("/api/v2/alerts", [{
            "labels": {"alertname": "cold-room-warm", "mac": hot, "severity": "critical", "kind": "threshold",
                       "source": "cloud-ingest", "receiver": "receiver-test"},
            "annotations": {"summary": f"cold-room-warm on {hot}: firing", "value": "9.0", "late": "false"},
            "startsAt": _iso(t0 + 7 * MIN + HOT),
        }])]
        assert rr.metric("cloud_ingest_alert_events_total", {"rule": "cold-room-warm", "state": "firing"}) == 1
        assert rr.metric("cloud_ingest_alerts_firing") == 1
        wait_until(lambda: len((status.read(tmp_path / "status.json") or status.Status()).alerts_firing) == 1, 5,
                   "status shows the firing alert")
    finally:
        rr.stop()

    # A restart: the alert is still firing, so neither further hot readings nor the restart send it again.
    saved = orjson.loads((tmp_path / "status.alerts.json").read_bytes())
    assert saved["outbox"] == []  # every event was PUBACKed before the stop
    rr = start_receiver(cfg)
    try:
        wait_until(lambda: (status.read(tmp_path / "status.json") or status.Status()).updated_ns > 0, 5, "status")
        current = status.read(tmp_path / "status.json")
        assert current is not None
        assert [(a["rule"], a["mac"], a["since_ns"]) for a in current.alerts_firing] == [
            ("cold-room-warm", hot, t0 + 7 * MIN + HOT)]
        text = status.render(current, interval_s=0.2, offline_after_s=300)
        assert "alerts firing:  1" in text and f"cold-room-warm  {hot}" in text
        pub.publish(minute_batches(100, t0, range(10, 16), temps))
        wait_until(lambda: count(influxd) == 32, 20, "minutes 10-15 written")
        wait_until(lambda: len(sub.messages) >= 2 and len(hook.posts) >= 2, 10, "the resolved event")
        assert events(sub) == [(topic, "firing", t0 + 7 * MIN + HOT, 0, 9.0),
                               (topic, "resolved", t0 + 7 * MIN + HOT, t0 + 14 * MIN + HOT, 5.0)]
        assert [p[1][0].get("endsAt") for p in hook.posts] == [None, _iso(t0 + 14 * MIN + HOT)]
        assert rr.metric("cloud_ingest_alert_events_total", {"rule": "cold-room-warm", "state": "firing"}) == 0
        assert rr.metric("cloud_ingest_alert_events_total", {"rule": "cold-room-warm", "state": "resolved"}) == 1
        assert rr.metric("cloud_ingest_alerts_firing") == 0
    finally:
        rr.stop()
        pub.close()
        sub.close()
        hook.close()
    # Retained: one message per alert, its latest state; the tag that stayed cold has none.
    late = Subscriber(mosquitto.port, "edge-gw/alerts/#", client_id="late-watcher")
    try:
        wait_until(lambda: len(late.messages) >= 1, 5, "the retained event")
        assert [(t, orjson.loads(p)["state"]) for t, p in late.messages] == [(topic, "resolved")]
        assert cold not in topic
    finally:
        late.close()


def _iso(ns: int) -> str:
    from cloud.alert_hook import rfc3339
    return rfc3339(ns)
