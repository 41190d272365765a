"""The Kafka path of cloud.yml (edge_gw_kafka_enabled): the kafka role's broker, and the cloud_ingest role's bridge
unit and consumer. The shared fixture (provision.py) turns it on when the controller has the jars (`make install`);
the broker is then started from its installed unit's ExecStart, as its own user, and answered from the host.

The templates' Kafka-off rendering is checked on the controller (seconds, no chroot)."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka_server import kafka_jars, pom_digest
from provision import KAFKA_USERS, SECRETS, Provisioned, kafka_jars_ready, owner
from servers import _wait_tcp, stop_pid
from target import ANSIBLE_DIR, ansible_env, ansible_playbook, render_templates

pytestmark = pytest.mark.timeout(900)
CLOUD_INGEST = ANSIBLE_DIR / "roles" / "cloud_ingest"
SILENT_UNITS = ("kafka.service", "cloud-ingest-bridge.service", "cloud-ingest.service")


@pytest.fixture
def kafka_on(provisioned: Provisioned) -> Provisioned:
    if not kafka_jars_ready():
        pytest.skip(f"no complete Kafka jar set in {kafka_jars()} on the controller: run `make install`")
    return provisioned


def test_broker_files_users_and_modes(kafka_on: Provisioned) -> None:
    p = kafka_on
    root, ports = p.root.path, p.ports
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert passwd["kafka"][5:] == ["/var/lib/kafka", "/usr/sbin/nologin"]
    assert int(passwd["kafka"][2]) < 1000
    assert owner(root / "etc/kafka", root) == ("root", "kafka", "0o750")
    for name in ("server.properties", "log4j2.properties", "tools-log4j2.properties"):
        assert owner(root / "etc/kafka" / name, root) == ("root", "kafka", "0o640")
    assert owner(root / "var/lib/kafka", root) == ("kafka", "kafka", "0o750")
    assert owner(root / "var/lib/kafka/data/meta.properties", root)[:2] == ("kafka", "kafka")
    assert "cluster.id=ZWRnZS1ndy1rYWZrYS0wMQ" in (root / "var/lib/kafka/data/meta.properties").read_text()
    props = (root / "etc/kafka/server.properties").read_text().splitlines()
    for line in ("process.roles=broker,controller", "node.id=1",
                 f"controller.quorum.voters=1@127.0.0.1:{ports['kafka_controller']}",
                 f"listeners=PLAINTEXT://127.0.0.1:{ports['kafka']},CONTROLLER://127.0.0.1:{ports['kafka_controller']},"
                 f"SASL_SSL://127.0.0.1:{ports['kafka_sasl_ssl']}",
                 f"advertised.listeners=PLAINTEXT://127.0.0.1:{ports['kafka']},"
                 f"SASL_SSL://127.0.0.1:{ports['kafka_sasl_ssl']}",
                 "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
                 "inter.broker.listener.name=PLAINTEXT", "controller.listener.names=CONTROLLER",
                 "log.dirs=/var/lib/kafka/data",
                 "auto.create.topics.enable=false", "broker.session.timeout.ms=3000",
                 "broker.heartbeat.interval.ms=1000", "offsets.topic.replication.factor=1"):
        assert line in props, line
    # The SASL_SSL listener: SCRAM-SHA-512 only, the PEM keystore, no client certificates; nothing else of SASL/SSL.
    assert [x for x in props if x.startswith(("listener.name.", "sasl.", "ssl."))] == [
        "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.ssl.keystore.type=PEM",
        "listener.name.sasl_ssl.ssl.keystore.location=/etc/kafka/sasl-ssl.pem",
        "listener.name.sasl_ssl.ssl.client.auth=none"]
    # The keystore: the key, then the certificate, readable by the broker's group and nobody else.
    keystore = root / "etc/kafka/sasl-ssl.pem"
    assert owner(keystore, root) == ("root", "kafka", "0o640")
    certs = p.workdir / "certs"
    assert keystore.read_text() == (certs / "server.key").read_text().strip() + "\n" + \
        (certs / "server.crt").read_text().strip() + "\n"
    assert sorted(x.name for x in (root / "etc/kafka").iterdir()) == [
        "log4j2.properties", "sasl-ssl.pem", "server.properties", "tools-log4j2.properties"]
    # No password of a SCRAM user in any file of the broker's (they live, salted and hashed, in the metadata log).
    for f in [*(root / "etc/kafka").iterdir(), *(root / "opt/kafka/bin").iterdir(),
              root / "etc/systemd/system/kafka.service"]:
        text = f.read_text()
        assert not [u for u, pw in KAFKA_USERS.items() if pw in text], f
    assert "rootLogger.level = WARN" in (root / "etc/kafka/log4j2.properties").read_text().splitlines()
    # The jar set: the controller's, once per pom digest, and libs points at it.
    digest = pom_digest()
    assert os.readlink(root / "opt/kafka/libs") == f"jars-{digest[:16]}"
    assert (root / f"opt/kafka/jars-{digest[:16]}/.pom-sha256").read_text() == digest + "\n"
    assert sorted(x.name for x in (root / "opt/kafka/libs").glob("*.jar")) == \
        sorted(x.name for x in kafka_jars().glob("*.jar"))
    assert [x.name for x in (root / "opt/kafka").iterdir() if x.name.startswith("jars-")] == [f"jars-{digest[:16]}"]
    assert owner(root / "opt/kafka/bin/kafka-server-start", root) == ("root", "root", "0o755")
    start = (root / "opt/kafka/bin/kafka-server-start").read_text()
    assert "-Xms256m -Xmx256m" in start and "kafka.Kafka /etc/kafka/server.properties" in start
    unit = (root / "etc/systemd/system/kafka.service").read_text().splitlines()
    for line in ("User=kafka", "ExecStart=/opt/kafka/bin/kafka-server-start", "SuccessExitStatus=143",
                 "Restart=on-failure", "ReadWritePaths=/var/lib/kafka", "ProtectSystem=strict"):
        assert line in unit, line
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for name in ("kafka.service", "cloud-ingest-bridge.service", "cloud-ingest.service"):
        assert os.readlink(wants / name) == f"/etc/systemd/system/{name}"


def test_the_runs_format_once_and_make_the_topics_once(kafka_on: Provisioned) -> None:
    first, second = kafka_on.outputs["cloud.yml first"], kafka_on.outputs["cloud.yml second"]

    def result(out: str, task: str) -> list[str]:
        seg = out.split(f"TASK [kafka : {task}]")[1].split("TASK [", maxsplit=1)[0]
        return re.findall(r"^(changed|ok|skipping): ", seg, re.M)

    assert result(first, "Format the storage (once).") == ["changed"]
    assert result(second, "Format the storage (once).") == ["ok"]
    assert result(first, "Create a missing topic.").count("changed") == 2  # one line per topic
    assert set(result(second, "Create a missing topic.")) == {"skipping"}
    assert result(first, "Unpack the jar set.") == ["changed"]
    assert result(second, "Unpack the jar set.") == ["skipping"]
    # The SCRAM users: made by the format in the first run (nothing to do through the broker then); in the second
    # each logs in over the SASL_SSL listener (always), is accepted, and nothing is set.
    for task in ("List the SCRAM users.", "Log in as each existing user (kafka_scram_update_password is always).",
                 "Create a missing SCRAM user, or set a refused password (always)."):
        assert set(result(first, task)) == {"skipping"}, task
    assert result(second, "List the SCRAM users.") == ["ok"]
    assert result(second, "Log in as each existing user (kafka_scram_update_password is always).") == ["ok"] * 2
    assert set(result(second, "Create a missing SCRAM user, or set a refused password (always).")) == {"skipping"}


def test_no_password_in_the_ansible_output(kafka_on: Provisioned) -> None:
    """Every run's output, whole: no SCRAM password, nor the salted keys the format prints, nor any other secret."""
    outputs = kafka_on.outputs
    assert sorted(outputs) == ["cloud.yml first", "cloud.yml second", "gateways.yml first", "gateways.yml second"]
    for name, out in outputs.items():
        assert "TASK [kafka : Format the storage (once).]" in out or name.startswith("gateways"), name
        for secret in (*KAFKA_USERS.values(), *SECRETS.values()):
            assert secret not in out, name
        assert "storedKey" not in out and "serverKey" not in out, name
        assert "BEGIN PRIVATE KEY" not in out, name


def test_the_bridge_and_the_consumer_units(kafka_on: Provisioned) -> None:
    root, ports = kafka_on.root.path, kafka_on.ports
    bootstrap = f"127.0.0.1:{ports['kafka_sasl_ssl']}"  # the SASL_SSL listener (host_vars), as a remote host's
    bridge = (root / "etc/systemd/system/cloud-ingest-bridge.service").read_text().splitlines()
    assert ("ExecStart=/opt/cloud-ingest/bin/cloud-ingest bridge --config /etc/cloud-ingest/cloud-ingest.toml "
            f"--kafka {bootstrap}") in bridge
    assert f"Environment=CLOUD_INGEST_METRICS_PORT={ports['bridge_metrics']}" in bridge
    assert "Environment=CLOUD_INGEST_STATUS_FILE=/var/lib/cloud-ingest/bridge-status.json" in bridge
    assert "User=cloud-ingest" in bridge and "ProtectSystem=strict" in bridge
    consumer = (root / "etc/systemd/system/cloud-ingest.service").read_text().splitlines()
    assert ("ExecStart=/opt/cloud-ingest/bin/cloud-ingest run --config /etc/cloud-ingest/cloud-ingest.toml "
            f"--kafka {bootstrap}") in consumer
    assert "Environment=CLOUD_INGEST_MQTT_CLIENT_ID=cloud-ingest-1-consumer" in consumer
    toml = (root / "etc/cloud-ingest/cloud-ingest.toml").read_text()
    kafka = toml.split("[kafka]\n")[1]
    assert 'topic = "ruuvi.readings"' in kafka and 'dlq_topic = "ruuvi.dlq"' in kafka
    assert "bootstrap" not in kafka.replace("# bootstrap", "")  # the units say which mode they run in
    # The client security settings, in the keys cloud/config.py reads; the password only in its own 0600 file.
    assert [x for x in kafka.splitlines() if x.startswith(("security_protocol", "sasl_", "username", "password",
                                                            "ca_file"))] == [
        'security_protocol = "sasl_ssl"', 'sasl_mechanism = "SCRAM-SHA-512"', 'username = "cloud-ingest"',
        'password_file = "/etc/cloud-ingest/kafka-password"', 'ca_file = "/etc/cloud-ingest/kafka-ca.crt"']
    assert KAFKA_USERS["cloud-ingest"] not in toml
    secret = root / "etc/cloud-ingest/kafka-password"
    assert owner(secret, root) == ("cloud-ingest", "cloud-ingest", "0o600")
    assert secret.read_text() == KAFKA_USERS["cloud-ingest"] + "\n"
    assert owner(root / "etc/cloud-ingest/kafka-ca.crt", root) == ("root", "cloud-ingest", "0o644")
    assert (root / "etc/cloud-ingest/kafka-ca.crt").read_text() == \
        (kafka_on.workdir / "certs/ca.crt").read_text().strip() + "\n"
    # The bridge keeps the receiver's MQTT client id, and so the broker's queued session.
    assert 'client_id = "cloud-ingest-1"' in toml


@pytest.mark.parametrize("unit", SILENT_UNITS)
def test_systemd_analyze_verify_is_silent(kafka_on: Provisioned, unit: str) -> None:
    p = kafka_on.root.verify_unit(unit)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_config_check_passes_with_the_kafka_section(kafka_on: Provisioned) -> None:
    r = kafka_on.root
    p = subprocess.run(r.chroot("/opt/cloud-ingest/bin/cloud-ingest", "config", "check", "--config",
                                "/etc/cloud-ingest/cloud-ingest.toml", "--set",
                                f"kafka.bootstrap=127.0.0.1:{kafka_on.ports['kafka_sasl_ssl']}", user="cloud-ingest"),
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    kafka = json.loads(p.stdout)["kafka"]
    assert {k: kafka[k] for k in ("security_protocol", "sasl_mechanism", "username", "password_file", "ca_file")} == {
        "security_protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512", "username": "cloud-ingest",
        "password_file": "/etc/cloud-ingest/kafka-password", "ca_file": "/etc/cloud-ingest/kafka-ca.crt"}
    assert KAFKA_USERS["cloud-ingest"] not in p.stdout + p.stderr
    # Not vacuous: the same file without its user is refused, naming the keys.
    p = subprocess.run(r.chroot("/opt/cloud-ingest/bin/cloud-ingest", "config", "check", "--config",
                                "/etc/cloud-ingest/cloud-ingest.toml", "--set",
                                f"kafka.bootstrap=127.0.0.1:{kafka_on.ports['kafka_sasl_ssl']}", "--set",
                                "kafka.username=", user="cloud-ingest"), capture_output=True, text=True, check=False)
    assert p.returncode == 1
    assert "kafka.security_protocol: sasl_ssl needs kafka.username and kafka.password_file" in p.stderr, p.stderr


def _produce(bootstrap: str, topic: str, values: range, timeout: float = 60,
             conf: dict[str, str] | None = None) -> float:
    """Produce with acks=all (idempotent); return the seconds until the last one was acknowledged."""
    from confluent_kafka import Producer

    errors: list[object] = []
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "message.timeout.ms": int(timeout * 1000), **(conf or {})})
    t0 = time.monotonic()
    for v in values:
        prod.produce(topic, key=f"k{v % 7}", value=str(v),
                     on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert prod.flush(timeout + 10) == 0
    assert errors == []
    return time.monotonic() - t0


def _start_broker(p: Provisioned, log: Path) -> subprocess.Popen[bytes]:
    """The installed kafka.service's ExecStart, as the kafka user, from the root; returns once both client listeners
    accept connections."""
    unit = p.root.file("etc/systemd/system/kafka.service").read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    with open(log, "ab") as out:
        proc = subprocess.Popen(p.root.chroot(*exec_start, user="kafka"), stdout=out, stderr=subprocess.STDOUT)
    _wait_tcp(p.ports["kafka"], proc, log, timeout=90)
    _wait_tcp(p.ports["kafka_sasl_ssl"], proc, log, timeout=30)
    return proc


def _scram(p: Provisioned, user: str, password: str) -> dict[str, str]:
    """A client of the SASL_SSL listener as a remote host's: SCRAM-SHA-512, the test CA, the name checked."""
    return {"bootstrap.servers": f"127.0.0.1:{p.ports['kafka_sasl_ssl']}", "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(p.workdir / "certs/ca.crt"), "ssl.endpoint.identification.algorithm": "https"}


def _refusal(conf: dict[str, str], timeout: float = 30) -> str:
    """'' when a client with `conf` gets the cluster's metadata, else librdkafka's first error."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    errors: list[KafkaError] = []
    prod = Producer({**conf, "error_cb": errors.append, "logger": logging.getLogger("kafka-role-test")})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        try:
            prod.list_topics(timeout=1)
            return ""
        except KafkaException:
            prod.poll(0.1)
    return errors[0].str() if errors else "neither metadata nor an error"


REFUSED = "SASL authentication error: Authentication failed during authentication due to invalid credentials with " \
          "SASL mechanism SCRAM-SHA-512"


def test_installed_broker_runs_from_its_unit_and_survives_a_sigkill(kafka_on: Provisioned) -> None:
    """ExecStart of the installed kafka.service, as the kafka user, from the root: the topics the role made are
    there, records survive a SIGKILL, and the restart after the crash costs about broker.session.timeout.ms. The
    SASL_SSL listener takes SCRAM-SHA-512 clients over TLS (the host's, and the installed cloud-ingest with its
    rendered config) and refuses a wrong password; no password in the broker's log."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource

    ports = kafka_on.ports
    log = kafka_on.workdir / "kafka.log"
    bootstrap = f"127.0.0.1:{ports['kafka']}"

    def start() -> subprocess.Popen[bytes]:
        return _start_broker(kafka_on, log)

    t0 = time.monotonic()
    proc = start()
    try:
        first_start = time.monotonic() - t0
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topics = admin.list_topics(timeout=60).topics
        assert len(topics["ruuvi.readings"].partitions) == 6
        assert len(topics["ruuvi.dlq"].partitions) == 1
        res = ConfigResource(ConfigResource.Type.TOPIC, "ruuvi.readings")
        configs = next(iter(admin.describe_configs([res]).values())).result(timeout=30)
        assert configs["retention.ms"].value == "604800000"
        del admin  # its connection would log every failed reconnect through the SIGKILL below

        _produce(bootstrap, "ruuvi.readings", range(100))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        t0 = time.monotonic()
        proc = start()
        listening = time.monotonic() - t0
        acked = _produce(bootstrap, "ruuvi.readings", range(100, 200))
        outage = time.monotonic() - t0
        print(f"\nkafka from its unit: first start {first_start:.1f} s; after SIGKILL: listening {listening:.1f} s, "
              f"first acks=all write acknowledged {outage:.1f} s after the restart (produce {acked:.1f} s)")
        assert outage < 45

        cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "role-test", "enable.auto.commit": False})
        cons.assign([TopicPartition("ruuvi.readings", n, 0) for n in range(6)])
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < 200 and time.monotonic() < deadline:
            for m in cons.consume(500, timeout=1):
                assert m.error() is None, m.error()
                seen.append(int(m.value()))
        cons.close()
        assert sorted(seen) == list(range(200))

        # The SASL_SSL listener from the host, as a remote bridge and consumer see it: TLS checked against the test
        # CA and the name, SCRAM-SHA-512 with the users the format made. One user writes, the other reads back
        # exactly what was written; a wrong password is refused with SCRAM's own reason.
        t0 = time.monotonic()
        ingest, remote = (_scram(kafka_on, u, pw) for u, pw in KAFKA_USERS.items())
        assert _refusal(ingest) == "" and _refusal(remote) == ""
        wrong = _refusal(_scram(kafka_on, "ruuvi-remote", "rr-wrong-Z1x9"))
        assert REFUSED in wrong, wrong
        assert "ruuvi-remote" not in wrong and "rr-wrong" not in wrong
        assert REFUSED in _refusal(_scram(kafka_on, "nobody", KAFKA_USERS["ruuvi-remote"]))
        cons = Consumer({**remote, "group.id": "role-test-sasl", "enable.auto.commit": False})
        _low, start_at = cons.get_watermark_offsets(TopicPartition("ruuvi.dlq", 0), timeout=30)
        _produce(ingest["bootstrap.servers"], "ruuvi.dlq", range(1000, 1050),
                 conf={k: v for k, v in ingest.items() if k != "bootstrap.servers"})
        # And the receiver's own client settings: the installed cloud-ingest reads the rendered [kafka] section, its
        # password file and CA (cloud.config.kafka_client_config), as its user, in the root, and writes one record.
        code = ("import sys; from pathlib import Path; from confluent_kafka import Producer; "
                "from cloud.config import kafka_client_config, load_config; "
                "cfg = load_config(Path('/etc/cloud-ingest/cloud-ingest.toml'), "
                f"{{'kafka.bootstrap': '127.0.0.1:{ports['kafka_sasl_ssl']}'}}); "
                "p = Producer({**kafka_client_config(cfg), 'acks': 'all'}); "
                "p.produce('ruuvi.dlq', b'from the rendered config'); sys.exit(p.flush(60))")
        run = subprocess.run(kafka_on.root.chroot("/opt/cloud-ingest/bin/python", "-c", code, user="cloud-ingest"),
                             capture_output=True, text=True, check=False, timeout=90)
        assert run.returncode == 0, run.stderr[-3000:]
        cons.assign([TopicPartition("ruuvi.dlq", 0, start_at)])
        got: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 60
        while len(got) < 51 and time.monotonic() < deadline:
            for m in cons.consume(100, timeout=1):
                assert m.error() is None, m.error()
                got.append((m.key(), m.value()))
        time.sleep(0.5)
        got += [(m.key(), m.value()) for m in cons.consume(100, timeout=0.5)]  # nothing more
        cons.close()
        # One partition: in order, each once.
        assert got == [(f"k{v % 7}".encode(), str(v).encode()) for v in range(1000, 1050)] + \
            [(None, b"from the rendered config")]
        print(f"SASL_SSL checks: {time.monotonic() - t0:.1f} s")

        stop_pid(proc, timeout=60)  # SIGTERM: a controlled shutdown
        assert proc.returncode in (0, 143), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert not [u for u, pw in KAFKA_USERS.items() if pw in text]
    assert "Kafka Server started" in text
    assert "SLF4J" not in text  # a binding is there (else: "Defaulting to no-operation (NOP) logger")
    assert not re.search(r"^INFO (?!.*\(kafka\.server\.KafkaRaftServer\))", text, re.M)  # WARN, and that one line


def test_scram_users_added_later_and_a_password_rotated(kafka_on: Provisioned) -> None:
    """The kafka role on the formatted storage with a changed list (its temporary broker in the chroot, started for
    the users alone: no topics this time): a new user is created and a changed password set (always), through the
    broker, and the unchanged user is left alone; then the installed broker takes the new credentials and refuses
    the replaced password. Nothing secret in the output."""
    root = kafka_on.root.path
    later, rotated = "rl-secret-T6nB3v", "rr-rotated-M3vW7q"
    users = [{"name": "cloud-ingest", "password": KAFKA_USERS["cloud-ingest"]},
             {"name": "ruuvi-remote", "password": rotated}, {"name": "ruuvi-later", "password": later}]
    book = kafka_on.workdir / "kafka-only.yml"
    book.write_text(json.dumps([{"name": "Kafka only.", "hosts": "cloud", "become": True, "roles": ["kafka"]}]))
    meta = (root / "var/lib/kafka/data/meta.properties").stat().st_ino
    t0 = time.monotonic()
    recap, out = ansible_playbook(book, kafka_on.inventory, ansible_env(kafka_on.workdir, kafka_on.collections),
                                  extra_vars={"kafka_scram_users": users, "kafka_create_topics": False})
    took = time.monotonic() - t0
    assert recap["failed"] == 0, out[-4000:]

    def result(task: str) -> list[str]:
        seg = out.split(f"TASK [kafka : {task}]")[1].split("TASK [", maxsplit=1)[0]
        return re.findall(r"^(changed|ok|skipping): ", seg, re.M)

    assert result("Format the storage (once).") == ["ok"]
    assert (root / "var/lib/kafka/data/meta.properties").stat().st_ino == meta
    # Both existing users log in; the broker refuses ruuvi-remote's new password (not a failure: the answer sought).
    assert result("Log in as each existing user (kafka_scram_update_password is always).") == ["ok", "ok"]
    # One line per user, in the list's order: left alone, password set, created.
    assert result("Create a missing SCRAM user, or set a refused password (always).") == \
        ["skipping", "changed", "changed"]
    assert recap["changed"] == 1, out[-4000:]  # that one task (tasks are counted, not items)
    for secret in (*KAFKA_USERS.values(), later, rotated):
        assert secret not in out

    log = kafka_on.workdir / "kafka-rotated.log"
    proc = _start_broker(kafka_on, log)
    try:
        assert _refusal(_scram(kafka_on, "ruuvi-later", later)) == ""
        assert _refusal(_scram(kafka_on, "ruuvi-remote", rotated)) == ""
        assert _refusal(_scram(kafka_on, "cloud-ingest", KAFKA_USERS["cloud-ingest"])) == ""
        old = _refusal(_scram(kafka_on, "ruuvi-remote", KAFKA_USERS["ruuvi-remote"]))
        assert REFUSED in old, old
        stop_pid(proc, timeout=60)
        assert proc.returncode in (0, 143), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nkafka role with a new and a rotated SCRAM user: {took:.1f} s")


def _render(work: Path, overrides: dict[str, object]) -> dict[str, str]:
    """The cloud_ingest role's unit and config templates, rendered on localhost with its defaults and `overrides`."""
    names = ("cloud-ingest.service", "cloud-ingest-bridge.service", "cloud-ingest.toml")
    render_templates(work, CLOUD_INGEST, {f"Render {n}.": (f"{n}.j2", work / n, "0644") for n in names}, overrides)
    return {n: (work / n).read_text() for n in names}


@pytest.mark.skipif(
    shutil.which("ansible-playbook", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}") is None,
    reason="needs ansible-playbook")
def test_kafka_off_leaves_the_receiver_as_it_was(tmp_path: Path) -> None:
    off = _render(tmp_path / "off", {})
    on = _render(tmp_path / "on", {"cloud_ingest_kafka_enabled": True, "cloud_ingest_kafka_bootstrap": "k1:9092"})
    assert "kafka" not in off["cloud-ingest.service"].lower()
    assert "ExecStart=/opt/cloud-ingest/bin/cloud-ingest run --config /etc/cloud-ingest/cloud-ingest.toml\n" \
        in off["cloud-ingest.service"]
    assert "[kafka]" not in off["cloud-ingest.toml"]
    assert "After=network-online.target mosquitto.service influxdb.service" in off["cloud-ingest.service"]
    # The hardening is shared: both units have the same [Service] sandbox lines.
    def sandbox(text: str) -> list[str]:
        return [x for x in text.splitlines() if x.startswith(("Protect", "Restrict", "NoNewPriv", "Capab", "UMask"))]

    assert sandbox(off["cloud-ingest.service"]) == sandbox(on["cloud-ingest-bridge.service"])
    assert len(sandbox(off["cloud-ingest.service"])) == 15
    assert "--kafka k1:9092" in on["cloud-ingest.service"] and "--kafka k1:9092" in on["cloud-ingest-bridge.service"]
    # The default client security is today's: plaintext to the local broker, no SASL keys, no CA.
    kafka = on["cloud-ingest.toml"].split("[kafka]\n")[1]
    assert 'security_protocol = "plaintext"' in kafka.splitlines()
    assert not re.search(r"^(sasl_mechanism|username|password_file|ca_file) ", kafka, re.M), kafka
    assert "\n\n[Install]" in on["cloud-ingest-bridge.service"]


def test_a_new_jar_set_replaces_the_old_one_and_restarts_the_broker(kafka_on: Provisioned, tmp_path: Path) -> None:
    """A changed pom (another digest in the controller's folder): the new set is unpacked beside the old one, `libs`
    is switched, the broker's restart handler runs, and only then is the old set removed. The data is not touched.
    The kafka role alone, without the topic step (no broker start), and then back to the real set."""
    root = kafka_on.root.path
    jars = tmp_path / "jars"
    shutil.copytree(kafka_jars(), jars)
    (jars / ".pom-sha256").write_text("f" * 64 + "\n")
    book = tmp_path / "kafka.yml"
    book.write_text(json.dumps([{"name": "Kafka only.", "hosts": "cloud", "become": True, "roles": ["kafka"]}]))
    env = ansible_env(kafka_on.workdir, kafka_on.collections)
    meta = (root / "var/lib/kafka/data/meta.properties").stat().st_ino

    def jar_sets() -> list[str]:
        return sorted(x.name for x in (root / "opt/kafka").iterdir() if x.name.startswith("jars-"))

    # No topics and no SCRAM users to manage: no broker is started (an empty list leaves the users as they are).
    recap, out = ansible_playbook(book, kafka_on.inventory, env,
                                  extra_vars={"kafka_jars_dir": str(jars), "kafka_create_topics": False,
                                              "kafka_scram_users": []})
    assert recap["failed"] == 0, out[-4000:]
    assert os.readlink(root / "opt/kafka/libs") == "jars-ffffffffffffffff"
    assert jar_sets() == ["jars-ffffffffffffffff"]
    assert len(list((root / "opt/kafka/libs").glob("*.jar"))) == len(list(kafka_jars().glob("*.jar")))
    assert "RUNNING HANDLER [kafka : Restart kafka.]" in out  # skipped in the chroot, run on a real host
    handler, removal = out.index("RUNNING HANDLER [kafka : Restart kafka.]"), out.index("TASK [kafka : Remove jar sets")
    assert handler < removal
    assert (root / "var/lib/kafka/data/meta.properties").stat().st_ino == meta
    formatted = out.split("TASK [kafka : Format the storage (once).]")[1].split("TASK [")[0]
    assert re.findall(r"^(changed|ok|skipping): ", formatted, re.M) == ["ok"]  # not formatted again

    recap, out = ansible_playbook(book, kafka_on.inventory, env,
                                  extra_vars={"kafka_create_topics": False, "kafka_scram_users": []})
    assert recap["failed"] == 0, out[-4000:]
    assert jar_sets() == [f"jars-{pom_digest()[:16]}"]
    assert os.readlink(root / "opt/kafka/libs") == f"jars-{pom_digest()[:16]}"


def test_switching_kafka_off_removes_the_bridge(kafka_on: Provisioned) -> None:
    """cloud.yml with edge_gw_kafka_enabled false: the bridge unit goes, the receiver is the MQTT receiver again.
    The broker stays installed with its data (the kafka role is not applied; nothing is uninstalled)."""
    root = kafka_on.root.path
    recap, out = ansible_playbook(ANSIBLE_DIR / "playbooks" / "cloud.yml", kafka_on.inventory,
                                  ansible_env(kafka_on.workdir, kafka_on.collections),
                                  extra_vars={"edge_gw_kafka_enabled": False})
    assert recap["failed"] == 0, out[-4000:]
    # The role is not applied: every one of its tasks is skipped.
    kafka_tasks = [seg.split("TASK [")[0] for seg in out.split("TASK [kafka : ")[1:]]
    assert kafka_tasks and all(set(re.findall(r"^(changed|ok|skipping): ", seg, re.M)) == {"skipping"}
                               for seg in kafka_tasks), out[-4000:]
    assert not (root / "etc/systemd/system/cloud-ingest-bridge.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/cloud-ingest-bridge.service").is_symlink()
    unit = (root / "etc/systemd/system/cloud-ingest.service").read_text()
    assert "--kafka" not in unit and "[kafka]" not in (root / "etc/cloud-ingest/cloud-ingest.toml").read_text()
    assert sorted(x.name for x in (root / "etc/cloud-ingest").iterdir()) == [
        "cloud-ingest.toml", "influx-password", "mqtt-password"]  # kafka-password and kafka-ca.crt removed
    assert (root / "var/lib/kafka/data/meta.properties").is_file()
