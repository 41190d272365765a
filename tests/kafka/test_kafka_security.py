"""The Kafka path over SASL_SSL (SCRAM-SHA-512 over TLS) against a real broker: `cloud-ingest bridge` and
`cloud-ingest run --kafka` with kafka.security_protocol, username, password_file (mode 0600) and ca_file store every
reading published to Mosquitto in InfluxDB exactly, and so do SSL alone and SASL_PLAINTEXT with SCRAM-SHA-256 and
with PLAIN: every protocol and mechanism the config accepts. A wrong password and an untrusted CA stop the bridge at
once with the cause named, no password in its output, and nothing acknowledged to the MQTT broker.

One broker for the module (about 8-12 s to start): each test has topics and a consumer group of its own. Its
PLAINTEXT listener serves the test's own reader, the clients under test use only the SASL_SSL one."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import bridge_process, read_topic, readings
from kafka_server import Kafka, Pki, SaslSsl, make_pki
from kafka_support import start_consumer
from servers import Influxd
from test_bridge_faults import influx_rows
from test_receiver_support import Publisher, broker_settings, create_db, edge_batch, reading, wait_until

MS = 1_000_000
S = 1_000_000_000
# Distinct texts, so that a leak of either shows; neither is a substring of anything else the processes print.
USERS = {"bridge": "brpw-Q7xZ2mK9vT", "ingest": "inpw-R4nW8cJ3sL"}
WRONG = "wrongpw-H6dF1pY5"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Kafka]:
    broker = Kafka(tmp_path_factory.mktemp("kafka"), secure=SaslSsl(pki, USERS)).start()
    try:
        yield broker
    finally:
        broker.stop()


def secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)  # read_secret_file refuses a password file others can read
    return path


def bridge_args(mq_port: int, kafka: Kafka, tmp: Path, topic: str, *, password_file: Path | None,
                ca_file: Path | None, protocol: str = "sasl_ssl", mechanism: str = "SCRAM-SHA-512",
                bootstrap: str | None = None) -> list[str]:
    auth = ["--set", f"kafka.sasl_mechanism={mechanism}", "--set", "kafka.username=bridge",
            "--set", f"kafka.password_file={password_file}"] if password_file is not None else []
    return ["--mqtt", f"mqtt://127.0.0.1:{mq_port}", "--kafka", bootstrap or kafka.secure_bootstrap,
            "--client-id", "bridge-sec", "--metrics-port", "0", "--status-file", str(tmp / "status.json"),
            "--log-level", "debug", "--set", "batch.max_interval=0.1", "--set", "status.interval=0.2",
            "--set", "kafka.partitions=3", "--set", f"kafka.topic={topic}", "--set", f"kafka.dlq_topic={topic}.dlq",
            "--set", f"kafka.security_protocol={protocol}", *auth,
            *(["--set", f"kafka.ca_file={ca_file}"] if ca_file is not None else [])]


def status(tmp: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((tmp / "status.json").read_bytes()))
    except (OSError, ValueError):
        return {}


def publish_batches(port: int, gateway: str, batches: int, tags: int, t0_s: int) -> set[tuple[str, int]]:
    """`batches` edge-gw batches of `tags` readings, each with a time of its own; (mac, time_ns) of all of them."""
    pub = Publisher(port)
    want = set()
    try:
        for b in range(batches):
            rs = [reading(tag, b, (t0_s + b) * S + tag * MS) for tag in range(tags)]
            want |= {(r.mac, r.time_ns) for r in rs}
            pub.publish([(f"edge-gw/{gateway}/batch", edge_batch(gateway, b + 1, rs))])
    finally:
        pub.close()
    return want


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for pw in (*USERS.values(), WRONG):
            assert pw not in text


# kafka.security_protocol and kafka.sasl_mechanism: every value cloud-ingest accepts (cloud/config.py), each on a
# listener of the module's broker that takes only it.
PROTOCOLS = [("sasl_ssl", "SCRAM-SHA-512"), ("ssl", ""), ("sasl_plaintext", "SCRAM-SHA-256"),
             ("sasl_plaintext", "PLAIN")]


def listener(kafka: Kafka, protocol: str) -> str:
    return {"sasl_ssl": kafka.secure_bootstrap, "ssl": kafka.ssl_bootstrap,
            "sasl_plaintext": kafka.sasl_plaintext_bootstrap}[protocol]


@pytest.mark.parametrize(("protocol", "mechanism"), PROTOCOLS)
def test_bridge_and_consumer_store_every_reading_exactly(mosquitto_factory: Any, secure_kafka: Kafka,
                                                         influxd: Influxd, pki: Pki, tmp_path: Path, protocol: str,
                                                         mechanism: str) -> None:
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    topic = f"sec.e2e.{protocol}.{mechanism or 'none'}"
    log = tmp_path / "bridge.log"
    sasl = protocol.startswith("sasl")
    ca = pki.ca if protocol.endswith("ssl") else None
    bridge = bridge_process(*bridge_args(
        mq.port, secure_kafka, tmp_path, topic, ca_file=ca, protocol=protocol, mechanism=mechanism,
        password_file=secret(tmp_path / "bridge.pw", USERS["bridge"]) if sasl else None,
        bootstrap=listener(secure_kafka, protocol)), log=log)
    auth = [f"kafka.sasl_mechanism={mechanism}", "kafka.username=ingest",
            f"kafka.password_file={secret(tmp_path / 'ingest.pw', USERS['ingest'])}"] if sasl else []
    consumer = start_consumer(
        secure_kafka, create_db(influxd), tmp_path / "consumer", "consumer-sec",
        f"kafka.topic={topic}", f"kafka.dlq_topic={topic}.dlq", f"kafka.group={topic}",
        f"kafka.security_protocol={protocol}", *auth, *([f"kafka.ca_file={ca}"] if ca else []),
        bootstrap=listener(secure_kafka, protocol))
    try:
        wait_until(lambda: b"subscribed to" in (log.read_bytes() if log.exists() else b""), 60, "bridge subscribed")
        want = publish_batches(mq.port, "gw-s", batches=20, tags=10, t0_s=int(time.time()) - 3600)
        assert len(want) == 200
        wait_until(lambda: status(tmp_path).get("written") == 200 and status(tmp_path).get("inflight_messages") == 0,
                   60, f"200 readings produced over {protocol} and acknowledged")
        wait_until(lambda: consumer.status().get("written") == 200, 60, "200 points written by the consumer")
        wait_until(lambda: [p["lag"] for p in consumer.status().get("kafka_partitions", {}).values()] == [0, 0, 0],
                   30, "lag 0 on the 3 partitions: every offset committed")
        st, cst = status(tmp_path), consumer.status()
    finally:
        stop(bridge, log)
        assert consumer.stop() == 0, consumer.log.read_text()[-3000:]
    rows = influx_rows(influxd)
    assert len(rows) == 200 and set(rows) == want  # exact: 0 lost, 0 twice
    assert st["dead_letters"] == 0 and cst["dead_letters"] == 0
    assert st["sink_counts"]["produce_errors"] == 0
    assert cst["received_readings"] == 200
    assert_no_password(log.read_text(), consumer.log.read_text(), json.dumps(st), json.dumps(cst))


def test_a_wrong_password_stops_the_bridge_naming_the_cause_and_acknowledges_nothing(
        mosquitto_factory: Any, secure_kafka: Kafka, pki: Pki, tmp_path: Path) -> None:
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    topic = "sec.wrongpw"
    right, wrong = secret(tmp_path / "right.pw", USERS["bridge"]), secret(tmp_path / "wrong.pw", WRONG)
    log = tmp_path / "bridge.log"
    # A first run makes the persistent session and its subscriptions: from then on the MQTT broker keeps the
    # gateway's messages for the bridge until it acknowledges them.
    bridge = bridge_process(*bridge_args(mq.port, secure_kafka, tmp_path, topic, password_file=right,
                                         ca_file=pki.ca), log=log)
    wait_until(lambda: b"subscribed to" in (log.read_bytes() if log.exists() else b""), 60, "bridge subscribed")
    stop(bridge, log)
    want = publish_batches(mq.port, "gw-w", batches=5, tags=4, t0_s=int(time.time()) - 600)

    bad_log = tmp_path / "bad.log"
    began = time.monotonic()
    bad = bridge_process(*bridge_args(mq.port, secure_kafka, tmp_path, topic, password_file=wrong, ca_file=pki.ca),
                         log=bad_log)
    assert bad.wait(60) == 1
    took = time.monotonic() - began
    out = bad_log.read_text()
    assert f"Error: Kafka at {secure_kafka.secure_bootstrap} refused the connection: _AUTHENTICATION: " in out, out
    assert "Authentication failed during authentication due to invalid credentials with SASL mechanism " \
           "SCRAM-SHA-512" in out, out
    assert took < 20, f"{took:.1f} s: the start waited for a timeout instead of failing on the refusal"
    assert b"subscribed to" not in bad_log.read_bytes()  # it never took a message from the MQTT broker
    assert "%3|" not in out  # librdkafka's lines come through Python logging, not raw on stderr
    assert_no_password(out)

    # The messages are still the MQTT broker's: the bridge with the right password produces every reading, once.
    bridge = bridge_process(*bridge_args(mq.port, secure_kafka, tmp_path, topic, password_file=right,
                                         ca_file=pki.ca), log=log)
    try:
        wait_until(lambda: status(tmp_path).get("inflight_messages") == 0 and status(tmp_path).get("written") == 20,
                   60, "every message produced and acknowledged")
        got = read_topic(secure_kafka.bootstrap, topic, until=1)  # records hold several readings (kafka.record)
    finally:
        stop(bridge, log)
    ids = readings(got)
    assert len(ids) == 20 and set(ids) == want
    assert_no_password(log.read_text())


def test_an_untrusted_ca_stops_the_bridge_naming_the_certificate_problem(mosquitto_factory: Any,
                                                                         secure_kafka: Kafka,
                                                                         tmp_path: Path) -> None:
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    other = make_pki(tmp_path / "other", "other")  # a CA that did not sign the broker's certificate
    log = tmp_path / "bridge.log"
    began = time.monotonic()
    bridge = bridge_process(*bridge_args(mq.port, secure_kafka, tmp_path, "sec.untrusted",
                                         password_file=secret(tmp_path / "bridge.pw", USERS["bridge"]),
                                         ca_file=other.ca), log=log)
    assert bridge.wait(60) == 1
    took = time.monotonic() - began
    out = log.read_text()
    assert f"Error: Kafka at {secure_kafka.secure_bootstrap} refused the connection: _SSL: " in out, out
    assert "certificate verify failed" in out, out
    assert took < 20, f"{took:.1f} s"
    assert "subscribed to" not in out
    assert_no_password(out)


def test_a_wrong_password_stops_the_consumer_naming_the_cause(secure_kafka: Kafka, influxd: Influxd, pki: Pki,
                                                              tmp_path: Path) -> None:
    """`run --kafka` does not retry credentials the broker refused for ever (librdkafka would log the failure twice a
    second): it exits 1 with the cause, as the bridge does and as it does on a 401 from InfluxDB."""
    began = time.monotonic()
    consumer = start_consumer(
        secure_kafka, create_db(influxd), tmp_path / "consumer", "consumer-wrongpw",
        "kafka.topic=sec.e2e", "kafka.dlq_topic=sec.e2e.dlq", "kafka.group=sec-wrongpw",
        "kafka.security_protocol=sasl_ssl", "kafka.username=ingest",
        f"kafka.password_file={secret(tmp_path / 'wrong.pw', WRONG)}", f"kafka.ca_file={pki.ca}",
        bootstrap=secure_kafka.secure_bootstrap)
    try:
        code = consumer.proc.wait(60)
    finally:
        if consumer.proc.poll() is None:
            consumer.proc.kill()
    took = time.monotonic() - began
    out = consumer.log.read_text()
    assert code == 1, out
    assert f"Error: Kafka at {secure_kafka.secure_bootstrap} refused the connection: _AUTHENTICATION: " in out, out
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in out, out
    assert took < 30, f"{took:.1f} s"
    assert_no_password(out)
