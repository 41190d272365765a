"""The secured deployment of issue 4, end to end with the shipped configs: Mosquitto with TLS, passwords and the ACL
(deploy/mosquitto/), InfluxDB with auth and three users (deploy/influxdb/), the real edge-gw and cloud-ingest daemons.

One deployment per module (certificates, broker, influxd, users): the tests run in file order and the last one greps
everything every process printed or logged for every password."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sec_deploy import (
    CLOUD,
    DEPLOY,
    EDGE,
    GATEWAYS,
    RECEIVER,
    Broker,
    Daemon,
    Listener,
    LoggingInfluxd,
    Secrets,
    make_ca,
    make_cert,
    run,
    secret_file,
    tls_client,
    wait_until,
)
from servers import free_port, have, series_values

pytestmark = pytest.mark.skipif(not (have("mosquitto") and have("influxd") and have("openssl")
                                     and have("mosquitto_passwd")),
                                reason="needs mosquitto, mosquitto_passwd, influxd and openssl")

CREATE_USERS = [sys.executable, str(DEPLOY / "influxdb" / "create_users.py")]


@dataclass
class Deployment:
    root: Path
    certs: Path
    broker: Broker
    influx: LoggingInfluxd
    secrets: Secrets
    files: dict[str, Path]  # password files by user name
    transcript: list[str] = field(default_factory=list)  # every command's output, for the secret grep
    daemons: list[Daemon] = field(default_factory=list)
    receiver: Daemon | None = None
    metrics_port: int = field(default_factory=free_port)

    @property
    def ca(self) -> Path:
        return self.certs / "ca.crt"

    def edge_config(self, gateway: str, **mqtt_over: str) -> Path:
        mqtt_keys = {"url": f"mqtts://127.0.0.1:{self.broker.port}", "username": gateway,
                     "password_file": str(self.files[gateway]), "ca_file": str(self.ca), **mqtt_over}
        lines = ["[gateway]", f'id = "{gateway}"', f'db = "{self.root}/{gateway}.db"', "[mqtt]",
                 *(f'{k} = "{v}"' for k, v in mqtt_keys.items()),
                 "[clock]", "assume_synced = true", "[log]", 'level = "debug"']
        path = self.root / f"edge-{gateway}-{len(self.transcript)}.toml"
        return secret_file(path, "\n".join(lines))

    def cloud_config(self) -> Path:
        text = f"""[mqtt]
url = "mqtts://127.0.0.1:{self.broker.port}"
username = "{RECEIVER}"
password_file = "{self.files[RECEIVER]}"
ca_file = "{self.ca}"
client_id = "cloud-ingest-sec"
[influx]
url = "http://ingest@127.0.0.1:{self.influx.port}/ruuvi"
password_file = "{self.files['ingest']}"
[batch]
max_interval = "0.2s"
[rollups]
enabled = false
[metrics]
port = {self.metrics_port}
[status]
file = "{self.root}/cloud-status.json"
interval = "0.2s"
[log]
level = "debug"
"""
        return secret_file(self.root / "cloud-ingest.toml", text)

    def cloud_status(self) -> dict[str, object]:
        p = run([*CLOUD, "status", "--config", str(self.cloud_config()), "--json"], self.transcript, check=True)
        return json.loads(p.stdout)  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            body = r.read().decode()
        self.transcript.append(body)
        total = 0.0
        for line in body.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def influx_http(self, path: str, user: str, password: str | None = None, *, body: bytes = b"",
                    **params: str) -> tuple[int, str]:
        """(HTTP status, body) of a POST to influxd as `user`, with basic auth (what Grafana and cloud-ingest send)."""
        import base64

        secret = self.secrets.influx[user] if password is None else password
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        url = f"{self.influx.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": f"Basic {auth}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stored(self, user: str = "grafana") -> list[tuple[int, str, str]]:
        """(time_ns, mac, gateway) of every raw point, read as the dashboards' user."""
        status, body = self.influx_http("/query", user, db="ruuvi", epoch="ns",
                                        q="SELECT temperature, mac, gateway FROM raw.ruuvi")
        assert status == 200, body
        rows: list[tuple[int, str, str]] = []
        for s in json.loads(body)["results"][0].get("series", []):
            rows.extend((int(v[0]), str(v[2]), str(v[3])) for v in s["values"])
        return rows


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("security")
    certs = root / "certs"
    certs.mkdir()
    make_ca(certs, "ca")
    make_ca(certs, "rogue-ca")
    make_cert(certs, "server", "ca", server=True)
    make_cert(certs, "gw-a-client", "ca", server=False)
    make_cert(certs, "rogue-client", "rogue-ca", server=False)
    sec = Secrets()
    files = {u: secret_file(root / f"{u}.pw", pw) for u, pw in {**sec.mqtt, **sec.influx}.items()}
    transcript: list[str] = []
    broker = Broker(root / "mosquitto", certs)
    broker.workdir.mkdir()
    passwd = broker.workdir / "edge-gw.passwd"
    for i, (user, pw) in enumerate(sec.mqtt.items()):
        # -b puts the password on the command line: fine for a test, deploy/README.md types it at the prompt.
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw],
                       check=True, capture_output=True, timeout=10)
    os.chmod(passwd, 0o600)
    broker.start()
    influx = LoggingInfluxd(root / "influxd", auth=True)
    d = Deployment(root, certs, broker, influx, sec, files, transcript)
    try:
        influx.start()
        url = ["--url", influx.url]
        run([*CREATE_USERS, "admin", *url, "--admin-password-file", str(files["admin"])], transcript, check=True)
        run([*CLOUD, "setup", "--influx", f"http://admin@127.0.0.1:{influx.port}/ruuvi",
             "--set", f"influx.password_file={files['admin']}"], transcript, check=True)
        run([*CREATE_USERS, "users", *url, "--admin-password-file", str(files["admin"]),
             "--ingest-password-file", str(files["ingest"]), "--grafana-password-file", str(files["grafana"])],
            transcript, check=True)
        d.receiver = Daemon([*CLOUD, "run", "--config", str(d.cloud_config())], root, "cloud-ingest")
        d.daemons.append(d.receiver)
        wait_until(lambda: (root / "cloud-status.json").exists()
                   and json.loads((root / "cloud-status.json").read_bytes())["mqtt_connected"], 20,
                   "cloud-ingest connected over mqtts://")
        yield d
    finally:
        for daemon in d.daemons:
            daemon.stop()
        influx.stop()
        broker.stop()


def test_pipeline_over_mqtts_counts_every_reading(dep: Deployment) -> None:
    """edge-gw (gateway identity) -> Mosquitto TLS+ACL -> cloud-ingest (receiver identity, write-only DB user)."""
    watcher = Listener(dep.broker, dep.ca, RECEIVER, dep.secrets.mqtt[RECEIVER], ["edge-gw/+/batch"], "sec-watch")
    try:
        cfg = dep.edge_config("gw-a")
        p = run([*EDGE, "run", "--config", str(cfg), "--source", "simulate", "--tags", "8", "--rate", "2000",
                 "--count", "900", "--drain", "20", "--log-level", "debug"], dep.transcript, timeout=60)
        assert p.returncode == 0, p.stderr[-2000:]
        last = p.stderr.strip().splitlines()[-1]
        committed = int(re.fullmatch(r"adverts=900 committed=(\d+) drained=yes", last).group(1))  # type: ignore[union-attr]
        with sqlite3.connect(dep.root / "gw-a.db") as conn:
            ever = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()[0]
        assert committed == ever and 300 <= committed <= 450  # each simulated measurement is heard 2-3 times
        wait_until(lambda: len(dep.stored()) == committed, 20, f"{committed} points in InfluxDB")
        time.sleep(0.5)  # nothing more arrives
        rows = dep.stored()
        assert len(rows) == committed
        assert {gw for _, _, gw in rows} == {"gw-a"}
        wait_until(lambda: len(watcher.keys("gw-a")) == committed, 10, "the watcher saw every reading")
        assert {(mac, t) for t, mac, _ in rows} == watcher.keys("gw-a")
        status = dep.cloud_status()
        assert status["written"] == committed
        assert status["dead_letters"] == 0
        report = json.loads(run([*EDGE, "status", "--config", str(cfg), "--json"], dep.transcript, check=True).stdout)
        assert report["buffer"]["rows"] == 0
        assert report["counters"]["readings_acked"] == committed
    finally:
        watcher.close()
