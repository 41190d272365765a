"""The secured deployment of issue 4, end to end with the shipped configs: Mosquitto with TLS, passwords and the ACL
(deploy/mosquitto/), InfluxDB with auth and three users (deploy/influxdb/), the real edge-gw and cloud-ingest daemons.

One deployment per module (certificates, broker, influxd, users): the tests run in file order and the last one greps
everything every process printed or logged for every password."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pki import make_ca, make_cert
from sec_deploy import (
    CLOUD,
    DEPLOY,
    EDGE,
    RECEIVER,
    Broker,
    Daemon,
    Listener,
    LoggingInfluxd,
    Secrets,
    connect,
    run,
    secret_file,
    tls_client,
    wait_until,
)
from servers import free_port, have

from core.wire import confirm_topic, encode_confirms, parse_confirm

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
        # As deploy/README.md says: the receiver cannot re-run rollups, so the CQs cover late data themselves.
        run([*CLOUD, "setup", "--influx", f"http://admin@127.0.0.1:{influx.port}/ruuvi",
             "--set", f"influx.password_file={files['admin']}", "--set", "rollups.cq_resample=RESAMPLE FOR 2d"],
            transcript, check=True)
        users = [*CREATE_USERS, "users", *url, "--admin-password-file", str(files["admin"]),
                 "--ingest-password-file", str(files["ingest"]), "--grafana-password-file", str(files["grafana"])]
        first = run(users, transcript, check=True).stdout
        assert first.splitlines() == ["ok: CREATE USER ingest", "ok: GRANT WRITE ON ruuvi TO ingest",
                                      "ok: CREATE USER grafana", "ok: GRANT READ ON ruuvi TO grafana"]
        # It can run again: the users exist, their passwords are set again.
        assert run(users, transcript, check=True).stdout == first
        assert run([*CREATE_USERS, "admin", *url, "--admin-password-file", str(files["admin"])], transcript,
                   check=True).stdout == "ok: CREATE USER admin\n"
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


def _check_connect(dep: Deployment, cfg: Path) -> subprocess.CompletedProcess[str]:
    return run([*EDGE, "config", "check", "--config", str(cfg), "--connect"], dep.transcript, timeout=30)


def _refused(p: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a refused `config check --connect`."""
    assert p.returncode == 1, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: broker: "), p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    return last


def test_wrong_ca_password_or_client_certificate_is_refused(dep: Deployment) -> None:
    c = dep.certs
    ok = _check_connect(dep, dep.edge_config("gw-a"))
    assert ok.returncode == 0 and ok.stderr.strip().splitlines()[-2:] == ["broker: connected", "config ok"]
    mtls = {"url": f"mqtts://127.0.0.1:{dep.broker.mtls_port}", "cert_file": str(c / "gw-a-client.crt"),
            "key_file": str(c / "gw-a-client.key")}
    ok = _check_connect(dep, dep.edge_config("gw-a", **mtls))
    assert ok.returncode == 0 and ok.stderr.strip().splitlines()[-2:] == ["broker: connected", "config ok"]

    # The broker's certificate is not signed by the CA the gateway trusts.
    last = _refused(_check_connect(dep, dep.edge_config("gw-a", ca_file=str(c / "rogue-ca.crt"))))
    assert last.startswith(  # then CPython's source position, e.g. (_ssl.c:1006)
        f"Error: broker: cannot connect to mqtts://gw-a@127.0.0.1:{dep.broker.port}: [SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: unable to get local issuer certificate ("), last
    # A wrong password, and a user the password file does not know.
    wrong = secret_file(dep.root / "wrong.pw", "not-the-password")
    broker = f"mqtts://gw-a@127.0.0.1:{dep.broker.port}"
    assert _refused(_check_connect(dep, dep.edge_config("gw-a", password_file=str(wrong)))) == (
        f"Error: broker: broker {broker} refused the connection: Not authorized "
        "(check the username 'gw-a' and its password)")
    last = _refused(_check_connect(dep, dep.edge_config("gw-a", username="gw-zz")))
    assert "refused the connection: Not authorized (check the username 'gw-zz' and its password)" in last
    # Mutual TLS: a client certificate from another CA, and none at all, are refused during the handshake.
    rogue = {**mtls, "cert_file": str(c / "rogue-client.crt"), "key_file": str(c / "rogue-client.key")}
    mbroker = f"mqtts://gw-a@127.0.0.1:{dep.broker.mtls_port}"
    assert _refused(_check_connect(dep, dep.edge_config("gw-a", **rogue))) == (
        f"Error: broker: connection to {mbroker} closed before CONNACK: Unspecified error (a broker that refuses the "
        f"client certificate does this; cert_file {c / 'rogue-client.crt'})")
    assert _refused(_check_connect(dep, dep.edge_config("gw-a", url=mtls["url"]))) == (
        f"Error: broker: connection to {mbroker} closed before CONNACK: Unspecified error (a broker that refuses the "
        "client certificate does this; no cert_file is set)")
    # The broker says why, each time.
    log = dep.broker.log.read_text(errors="replace")
    assert log.count("Client <unknown> disconnected, not authorised.") == 2
    for why in ("tlsv1 alert unknown ca", "certificate verify failed", "peer did not return a certificate"):
        assert log.count(f"SSL routines::{why}") == 1, why


def _batch(gateway: str, seq: int, mac: str, time_ns: int) -> bytes:
    reading = {"mac": mac, "time_ns": time_ns, "clock_synced": True, "rssi": -60, "data_format": 5,
               "raw": "", "fields": {"data_format": 5, "temperature": 21.5}}
    return json.dumps({"v": 1, "gateway": gateway, "seq": seq, "readings": [reading]},
                      separators=(",", ":")).encode()


def test_gateway_cannot_publish_as_another(dep: Deployment) -> None:
    # Every topic a forged PUBLISH below aims at; not the confirm topics, where the running cloud-ingest confirms
    # the batches it stores (test_only_the_receiver_may_publish_confirmations covers those).
    watcher = Listener(dep.broker, dep.ca, RECEIVER, dep.secrets.mqtt[RECEIVER],
                       ["edge-gw/+/batch", "edge-gw/+/status", "edge-gw/dlq"], "sec-acl-watch")
    # What a receiver in a shared subscription group (mqtt.shared_group) subscribes to: the ACL allows it too.
    shared = Listener(dep.broker, dep.ca, RECEIVER, dep.secrets.mqtt[RECEIVER], ["$share/sec/edge-gw/+/batch"],
                      "sec-acl-shared")
    # A gateway cannot read the others' traffic either. Mosquitto 2.0 grants a wildcard subscription and applies
    # the read ACL to each message it would deliver: the spy gets nothing, not even its own gateway's batch; only
    # its own confirmations, if the running cloud-ingest sends any.
    spy = Listener(dep.broker, dep.ca, "gw-a", dep.secrets.mqtt["gw-a"], ["edge-gw/#"], "sec-acl-spy")
    assert spy.granted == [1]
    now = time.time_ns()
    try:
        # MQTT 3.1.1 has no error for a refused PUBLISH, so the proof is what a subscriber receives.
        # One connection each: Mosquitto 2.0.11 answers a denied QoS 1 PUBLISH from a 3.1.1 client with a PUBACK
        # that carries the v5 reason code 0x87, and paho then drops the connection ("Unspecified error").
        for topic, payload in (("edge-gw/gw-b/batch", _batch("gw-b", 1, "aa:bb:cc:00:00:0b", now)),
                               ("edge-gw/gw-b/status", b'{"v":1,"gateway":"gw-b","state":"offline"}'),
                               ("edge-gw/dlq", b'{"forged":true}'),
                               ("edge-gw/gw-a/batch", _batch("gw-a", 1, "aa:bb:cc:00:00:0a", now))):
            _publish_once(dep, "gw-a", topic, payload)
        # The broker handled (and acknowledged) each forged PUBLISH before A's own was sent: had it delivered
        # one, the watcher would have it before A's own batch.
        wait_until(lambda: len(watcher.on("edge-gw/gw-a/batch")) == 1, 10, "gw-a's own batch")
        assert [t for t, _ in watcher.messages] == ["edge-gw/gw-a/batch"]
        wait_until(lambda: ("gw-a", "aa:bb:cc:00:00:0a") in {(g, m) for _, m, g in dep.stored()}, 10, "A stored")
        assert "gw-b" not in {g for _, _, g in dep.stored()}
        # At most the retained status of gw-a (from the pipeline test); none for B.
        assert {t for t, _ in watcher.retained} <= {"edge-gw/gw-a/status"}
        assert [t for t, _ in spy.messages if t != "edge-gw/gw-a/confirm"] == [] and spy.retained == []
        wait_until(lambda: len(shared.messages) == 1, 10, "the shared subscriber's copy")
        assert [t for t, _ in shared.messages] == ["edge-gw/gw-a/batch"]
        # MQTT 5 says so: PUBACK reason code 0x87, not authorised, and the connection stays up.
        codes: list[int] = []
        a5 = tls_client("sec-acl-gw-a5", "gw-a", dep.secrets.mqtt["gw-a"], dep.ca, v5=True)
        a5.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(int(rc.value))
        connect(a5, dep.broker.port)
        try:
            for gw in ("gw-b", "gw-a"):
                a5.publish(f"edge-gw/{gw}/batch", _batch(gw, 2, "aa:bb:cc:00:00:0e", now), qos=1).wait_for_publish(10)
                connect(a5, dep.broker.port)  # Mosquitto closes the connection after refusing a PUBLISH
        finally:
            a5.loop_stop()
            a5.disconnect()
        assert codes == [0x87, 0]
        wait_until(lambda: len(watcher.on("edge-gw/gw-a/batch")) == 2, 10, "gw-a's second batch")
        assert [t for t, _ in watcher.messages] == ["edge-gw/gw-a/batch"] * 2
    finally:
        spy.close()
        shared.close()
        watcher.close()
    log = dep.broker.log.read_text(errors="replace")
    for topic in ("edge-gw/gw-b/batch", "edge-gw/gw-b/status", "edge-gw/dlq"):
        assert f"Denied PUBLISH from sec-acl-gw-a (d0, q1, r0, m1, '{topic}'" in log


def _publish_once(dep: Deployment, user: str, topic: str, payload: bytes) -> None:
    c = tls_client("sec-acl-gw-a", user, dep.secrets.mqtt[user], dep.ca)
    connect(c, dep.broker.port)
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


def test_gateway_logged_in_as_another_keeps_its_readings(dep: Deployment) -> None:
    """gateway.id gw-b with gw-a's login: the broker refuses every publish under edge-gw/gw-b/ and drops the
    connection, before the gateway could take a PUBACK for a batch. Nothing is lost: it all stays buffered."""
    cfg = dep.edge_config("gw-a")
    cfg.write_text(cfg.read_text().replace('id = "gw-a"', 'id = "gw-b"').replace("gw-a.db", "gw-b.db"))
    p = run([*EDGE, "run", "--config", str(cfg), "--source", "simulate", "--tags", "3", "--rate", "300",
             "--count", "60", "--drain", "3"], dep.transcript, timeout=60)
    assert p.returncode == 1
    committed = int(re.fullmatch(r"adverts=60 committed=(\d+) drained=no",  # type: ignore[union-attr]
                                 p.stderr.strip().splitlines()[-1]).group(1))
    with sqlite3.connect(dep.root / "gw-b.db") as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == committed > 0
    assert "gw-b" not in {g for _, _, g in dep.stored()}
    # The first thing it publishes, its retained online status, is refused (its packet id follows the SUBSCRIBE to
    # its confirm topic, which the broker grants and then delivers nothing of: gw-a may read only gw-a's).
    assert re.search(r"Denied PUBLISH from edge-gw-gw-b \(d0, q1, r1, m\d+, 'edge-gw/gw-b/status'",
                     dep.broker.log.read_text())


def _publish_v5(dep: Deployment, client_id: str, user: str, topic: str, payload: bytes) -> int:
    """One QoS 1 PUBLISH as `user` over MQTT 5, on its own connection (Mosquitto closes the connection after it
    refuses a PUBLISH); returns the PUBACK's reason code."""
    codes: list[int] = []
    c = tls_client(client_id, user, dep.secrets.mqtt[user], dep.ca, v5=True)
    c.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(int(rc.value))
    connect(c, dep.broker.port)
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    assert len(codes) == 1, codes
    return codes[0]


def test_only_the_receiver_may_publish_confirmations(dep: Deployment) -> None:
    """A confirmation makes a gateway delete readings (docs/wire-format.md, "Confirmation"), so only the receiver's
    identity may write <prefix>/<id>/confirm; a gateway reads its own confirm topic and nobody else's.

    gw-b's confirm topic is the target: no batch of gw-b was stored before this test, so the running cloud-ingest
    has nothing of its own to confirm there while the listeners are open."""
    topic = confirm_topic("edge-gw", "gw-b")
    owner = Listener(dep.broker, dep.ca, "gw-b", dep.secrets.mqtt["gw-b"], [topic], "sec-confirm-gw-b", v5=True)
    # Mosquitto 2.0 grants any subscription and applies the read ACL to each message it would deliver.
    spy = Listener(dep.broker, dep.ca, "gw-a", dep.secrets.mqtt["gw-a"], [topic, "edge-gw/gw-b/#"],
                   "sec-confirm-spy", v5=True)
    assert owner.granted == [1] and spy.granted == [1, 1]
    forged_by_other = encode_confirms("gw-b", range(1, 1001))  # [[1,1000]]: would delete gw-b's first 1000 batches
    forged_by_self = encode_confirms("gw-b", [5, 6, 7])
    real = encode_confirms("gw-b", [41, 42, 44])
    assert [*forged_by_other, *forged_by_self, *real] == [b'{"v":1,"gateway":"gw-b","seqs":[[1,1000]]}',
                                                          b'{"v":1,"gateway":"gw-b","seqs":[[5,7]]}',
                                                          b'{"v":1,"gateway":"gw-b","seqs":[[41,42],[44,44]]}']
    try:
        # Another gateway, and the gateway itself, are refused: MQTT 5 PUBACK reason code 0x87, not authorised.
        assert _publish_v5(dep, "sec-cf-gw-a", "gw-a", topic, forged_by_other[0]) == 0x87
        assert _publish_v5(dep, "sec-cf-gw-b", "gw-b", topic, forged_by_self[0]) == 0x87
        # The receiver's identity may. Each refused PUBLISH was handled before this one was sent: had the broker
        # delivered one, the owner would have it first.
        assert _publish_v5(dep, "sec-cf-receiver", RECEIVER, topic, real[0]) == 0
        wait_until(lambda: len(owner.messages) == 1, 10, "gw-b's confirmation")
        time.sleep(0.3)  # nothing else arrives
        assert owner.messages == [(topic, real[0])] and owner.retained == []
        assert parse_confirm(owner.messages[0][1], "gw-b") == [(41, 42), (44, 44)]
        assert spy.messages == spy.retained == []
    finally:
        spy.close()
        owner.close()
    log = dep.broker.log.read_text(errors="replace")
    for client in ("sec-cf-gw-a", "sec-cf-gw-b"):
        assert log.count(f"Denied PUBLISH from {client} (d0, q1, r0, m1, '{topic}'") == 1, client
    assert "Denied PUBLISH from sec-cf-receiver" not in log


@pytest.mark.parametrize("wildcard", ["edge-gw/+/confirm", "edge-gw/#"])
def test_a_gateway_reads_only_its_own_confirmations(dep: Deployment, wildcard: str) -> None:
    """Wildcard subscriptions of a gateway get its own confirmations and none of another gateway's."""
    a = Listener(dep.broker, dep.ca, "gw-a", dep.secrets.mqtt["gw-a"], [wildcard], "sec-confirm-wild", v5=True)
    own, other = encode_confirms("gw-a", [900_001]), encode_confirms("gw-b", [900_002])
    try:
        assert a.granted == [1]
        assert _publish_v5(dep, "sec-wild", RECEIVER, confirm_topic("edge-gw", "gw-b"), other[0]) == 0
        assert _publish_v5(dep, "sec-wild", RECEIVER, confirm_topic("edge-gw", "gw-a"), own[0]) == 0
        wait_until(lambda: (confirm_topic("edge-gw", "gw-a"), own[0]) in a.messages, 10, "gw-a's confirmation")
        # The running cloud-ingest may confirm gw-a's batches of the earlier tests here too; never anything of gw-b.
        assert a.retained == []
        assert {t for t, _ in a.messages} == {"edge-gw/gw-a/confirm"}
        assert other[0] not in [p for _, p in a.messages]
    finally:
        a.close()


def test_gateways_publish_batch_and_status_only_under_their_own_id(dep: Deployment) -> None:
    """Narrowing the gateways' pattern to batch and status keeps both working, for each gateway, and still refuses
    them under another id."""
    # Not the confirm topics: the running cloud-ingest confirms what it stores there (the refused confirmations are
    # proven by the reason code and the broker log).
    watch = ["edge-gw/+/batch", "edge-gw/+/status", "edge-gw/dlq"]
    watcher = Listener(dep.broker, dep.ca, RECEIVER, dep.secrets.mqtt[RECEIVER], watch, "sec-own-watch")
    now = time.time_ns()
    sent: list[tuple[str, bytes]] = []
    try:
        for me, other, mac in (("gw-a", "gw-b", "aa:bb:cc:00:01:0a"), ("gw-b", "gw-a", "aa:bb:cc:00:01:0b")):
            # Refused first, so that a delivered one would arrive before the allowed ones.
            for t in ("batch", "status", "confirm"):
                forged = _batch(other, 9, mac, now)
                assert _publish_v5(dep, f"sec-own-{me}", me, f"edge-gw/{other}/{t}", forged) == 0x87, (me, t)
            status = f'{{"v":1,"gateway":"{me}","state":"online"}}'.encode()
            # Not retained (the ACL does not look at the flag): a retained status would outlive this test.
            for t, payload in (("status", status), ("batch", _batch(me, 500, mac, now))):
                assert _publish_v5(dep, f"sec-own-{me}", me, f"edge-gw/{me}/{t}", payload) == 0, (me, t)
                sent.append((f"edge-gw/{me}/{t}", payload))
        wait_until(lambda: len(watcher.messages) >= 4, 10, "the four allowed messages")
        time.sleep(0.3)  # nothing else arrives
        assert watcher.messages == sent
        wait_until(lambda: {("gw-a", "aa:bb:cc:00:01:0a"), ("gw-b", "aa:bb:cc:00:01:0b")}
                   <= {(g, m) for _, m, g in dep.stored()}, 10, "both batches stored")
    finally:
        watcher.close()
    stored = {(g, m) for _, m, g in dep.stored()}
    assert ("gw-a", "aa:bb:cc:00:01:0b") not in stored and ("gw-b", "aa:bb:cc:00:01:0a") not in stored
    log = dep.broker.log.read_text(errors="replace")
    for me, other in (("gw-a", "gw-b"), ("gw-b", "gw-a")):
        for t in ("batch", "status", "confirm"):
            assert log.count(f"Denied PUBLISH from sec-own-{me} (d0, q1, r0, m1, 'edge-gw/{other}/{t}'") == 1


def test_receiver_dead_letters_a_batch_whose_gateway_differs_from_the_topic(dep: Deployment) -> None:
    before = dep.cloud_status()
    assert before["dead_letters"] == 0
    dlq = Listener(dep.broker, dep.ca, RECEIVER, dep.secrets.mqtt[RECEIVER], ["edge-gw/dlq"], "sec-dlq")
    a = tls_client("sec-forge-gw-a", "gw-a", dep.secrets.mqtt["gw-a"], dep.ca)
    connect(a, dep.broker.port)
    forged = _batch("gw-b", 7, "aa:bb:cc:00:00:0c", time.time_ns())
    try:
        # The ACL lets A write its own topic; the payload claims to be B.
        a.publish("edge-gw/gw-a/batch", forged, qos=1).wait_for_publish(10)
        wait_until(lambda: len(dlq.on("edge-gw/dlq")) == 1, 10, "the dead letter")
    finally:
        a.loop_stop()
        a.disconnect()
        dlq.close()
    record = json.loads(dlq.on("edge-gw/dlq")[0])
    assert {k: record[k] for k in ("v", "receiver", "stage", "reason", "topic", "payload_encoding", "payload",
                                   "payload_size", "truncated")} == {
        "v": 1, "receiver": "cloud-ingest-sec", "stage": "parse",
        "reason": "gateway 'gw-b' in the payload differs from 'gw-a' in the topic",
        "topic": "edge-gw/gw-a/batch", "payload_encoding": "utf-8", "payload": forged.decode(),
        "payload_size": len(forged), "truncated": False}
    wait_until(lambda: dep.cloud_status()["dead_letters"] == 1, 5, "status dead_letters == 1")
    assert dep.metric('cloud_ingest_dead_letters_total{stage="parse"}') == 1.0
    assert "aa:bb:cc:00:00:0c" not in {m for _, m, _ in dep.stored()}
    assert "dead letter (parse) from edge-gw/gw-a/batch: gateway 'gw-b' in the payload differs" in dep.receiver.text()  # type: ignore[union-attr]


def test_influx_write_only_and_read_only_users(dep: Deployment) -> None:
    # A recent time: the raw retention policy (90 d) refuses older points with a 400.
    line = b"ruuvi,mac=aa:bb:cc:00:00:ff,gateway=gw-perm,data_format=5 temperature=1.5 %d\n" % time.time_ns()
    select = {"db": "ruuvi", "q": "SELECT count(temperature) FROM raw.ruuvi"}
    # The receiver's user writes, and cannot read.
    assert dep.influx_http("/write", "ingest", body=line, db="ruuvi", rp="raw")[0] == 204
    status, body = dep.influx_http("/query", "ingest", **select)
    assert (status, json.loads(body)["error"]) == (403, 'error authorizing query: ingest not authorized to execute '
                                                        'statement \'SELECT count(temperature) FROM raw.ruuvi\', '
                                                        'requires READ on ruuvi')
    # The dashboards' user reads, and cannot write.
    status, body = dep.influx_http("/query", "grafana", **select)
    assert status == 200 and "error" not in json.loads(body)["results"][0]
    status, body = dep.influx_http("/write", "grafana", body=line.replace(b"gw-perm", b"gw-perm2"), db="ruuvi")
    assert (status, json.loads(body)["error"]) == (403, '"grafana" user is not authorized to write to database "ruuvi"')
    # Wrong passwords, and no credentials at all.
    assert dep.influx_http("/query", "grafana", "wrong", **select)[0] == 401
    assert dep.influx_http("/write", "ingest", "wrong", body=line, db="ruuvi")[0] == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{dep.influx.url}/query?{urllib.parse.urlencode(select)}", timeout=10)
    assert e.value.code == 401
    gateways = {g for _, _, g in dep.stored()}
    assert "gw-perm" in gateways and "gw-perm2" not in gateways
    # The admin made the rollup CQs with the RESAMPLE clause deploy/README.md recommends.
    status, body = dep.influx_http("/query", "admin", q="SHOW CONTINUOUS QUERIES")
    cqs = [v[1] for s in json.loads(body)["results"][0]["series"] if s["name"] == "ruuvi" for v in s["values"]]
    assert status == 200 and len(cqs) == 2 and all(" RESAMPLE FOR 2d BEGIN " in q for q in cqs), cqs


def test_credential_files_must_be_private(dep: Deployment) -> None:
    """Both daemons refuse a password file others can read, with one line naming it, before they start."""
    loose = secret_file(dep.root / "loose.pw", dep.secrets.mqtt["gw-a"], mode=0o640)
    want = f"Error: config: mqtt.password_file: {loose} is readable by group or others (mode 0640); chmod 600 it"
    cfg = dep.edge_config("gw-a", password_file=str(loose))
    for cmd in (["config", "check", "--config", str(cfg)],
                ["run", "--config", str(cfg), "--source", "simulate", "--count", "10", "--db", str(dep.root / "x.db")],
                ["flush", "--config", str(cfg), "--timeout", "5"]):
        p = run([*EDGE, *cmd], dep.transcript, timeout=30)
        assert (p.returncode, p.stderr.strip().splitlines()) == (1, [want]), cmd
    assert not (dep.root / "x.db").exists()  # refused before it opened anything

    # A config file with the password inline must be private itself.
    inline = dep.edge_config("gw-a", password_file="", password=dep.secrets.mqtt["gw-a"])
    os.chmod(inline, 0o644)
    p = run([*EDGE, "config", "check", "--config", str(inline)], dep.transcript)
    assert (p.returncode, p.stderr.strip()) == (1, f"Error: config: mqtt.password is set inline in {inline}, which "
                                                   f"is readable by group or others (mode 0644); chmod 600 {inline} "
                                                   "or use a password file")

    cloud = dep.cloud_config()
    status_dir = dep.root / "status-refused"
    status_dir.mkdir()
    for key in ("mqtt.password_file", "influx.password_file"):
        sets = ["--set", f"{key}={loose}", "--set", f"status.file={status_dir}/status.json", "--set", "metrics.port=0"]
        for cmd in (["config", "check"], ["run"], ["retire"]):
            p = run([*CLOUD, *cmd, "--config", str(cloud), *sets], dep.transcript, timeout=30)
            assert (p.returncode, p.stderr.strip().splitlines()) == (1, [want.replace("mqtt.password_file", key)]), cmd
    assert list(status_dir.iterdir()) == []
    os.chmod(cloud, 0o640)
    p = run([*CLOUD, "config", "check", "--config", str(cloud)], dep.transcript)
    assert p.returncode == 0  # no password inline: the file may be readable, the password files are not
    assert oct(dep.broker.workdir.joinpath("edge-gw.passwd").stat().st_mode & 0o777) == "0o600"


def test_no_secret_in_any_log_or_status(dep: Deployment) -> None:
    """Last: every process ran at debug level. Grep all they printed or logged, and every status view."""
    t = dep.transcript
    edge_cfg = dep.edge_config("gw-a")
    for cmd in (["status", "--config", str(edge_cfg)], ["status", "--config", str(edge_cfg), "--json"],
                ["config", "check", "--config", str(edge_cfg), "--connect"]):
        assert run([*EDGE, *cmd], t).returncode == 0, cmd
    # The password in the URL instead of a file: redacted too.
    url = f"mqtts://gw-a:{dep.secrets.mqtt['gw-a']}@127.0.0.1:{dep.broker.port}"
    in_url = dep.edge_config("gw-a", password_file="", url=url)
    assert run([*EDGE, "config", "check", "--config", str(in_url), "--connect"], t).returncode == 0
    cloud = dep.cloud_config()
    for cmd in (["status", "--config", str(cloud)], ["status", "--config", str(cloud), "--json"],
                ["config", "check", "--config", str(cloud)]):
        assert run([*CLOUD, *cmd], t).returncode == 0, cmd
    influx_in_url = f"http://ingest:{dep.secrets.influx['ingest']}@127.0.0.1:{dep.influx.port}/ruuvi"
    assert run([*CLOUD, "config", "check", "--config", str(cloud), "--set", f"influx.url={influx_in_url}",
                "--set", "influx.password_file="], t).returncode == 0
    dep.metric("cloud_ingest_dead_letters_total")  # /metrics goes into the transcript
    assert dep.receiver is not None and dep.receiver.stop() == 0
    dep.influx.stop()
    dep.broker.stop()
    texts = {"commands": "\n".join(t), "cloud-ingest run": dep.receiver.text(),
             "mosquitto log": dep.broker.log.read_text(errors="replace"),
             "mosquitto stdout": (dep.broker.workdir / "mosquitto.stdout").read_text(errors="replace"),
             "influxd log": (dep.influx.workdir / "influxd.log").read_text(errors="replace"),
             "cloud status file": (dep.root / "cloud-status.json").read_text()}
    # The logs are really at debug level and cover what was run.
    assert " DEBUG " in texts["cloud-ingest run"] and " DEBUG " in texts["commands"]
    assert "u'gw-a'" in texts["mosquitto log"] and "Sending PUBACK" in texts["mosquitto log"]
    assert "CREATE USER ingest WITH PASSWORD [REDACTED]" in texts["influxd log"]
    assert sum(len(v) for v in texts.values()) > 50_000
    leaks = [(where, name) for where, text in texts.items() for name, secret in
             [*dep.secrets.mqtt.items(), *dep.secrets.influx.items()] if secret in text]
    assert leaks == []

