"""The Kafka path of cloud.yml (edge_gw_kafka_enabled): the kafka role's broker, and the cloud_ingest role's bridge
unit and consumer. The shared fixture (provision.py) turns it on when the controller has the jars (`make install`);
the broker is then started from its installed unit's ExecStart, as its own user, and answered from the host.

The templates' Kafka-off rendering is checked on the controller (seconds, no chroot)."""

from __future__ import annotations

import json
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
from provision import Provisioned, kafka_jars_ready, owner
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
                 f"listeners=PLAINTEXT://127.0.0.1:{ports['kafka']},CONTROLLER://127.0.0.1:{ports['kafka_controller']}",
                 f"advertised.listeners=PLAINTEXT://127.0.0.1:{ports['kafka']}", "log.dirs=/var/lib/kafka/data",
                 "auto.create.topics.enable=false", "broker.session.timeout.ms=3000",
                 "broker.heartbeat.interval.ms=1000", "offsets.topic.replication.factor=1"):
        assert line in props, line
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


def test_the_bridge_and_the_consumer_units(kafka_on: Provisioned) -> None:
    root, ports = kafka_on.root.path, kafka_on.ports
    bootstrap = f"127.0.0.1:{ports['kafka']}"
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
                                f"kafka.bootstrap=127.0.0.1:{kafka_on.ports['kafka']}", user="cloud-ingest"),
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def _produce(bootstrap: str, topic: str, values: range, timeout: float = 60) -> float:
    """Produce with acks=all (idempotent); return the seconds until the last one was acknowledged."""
    from confluent_kafka import Producer

    errors: list[object] = []
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "message.timeout.ms": int(timeout * 1000)})
    t0 = time.monotonic()
    for v in values:
        prod.produce(topic, key=f"k{v % 7}", value=str(v),
                     on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert prod.flush(timeout + 10) == 0
    assert errors == []
    return time.monotonic() - t0


def test_installed_broker_runs_from_its_unit_and_survives_a_sigkill(kafka_on: Provisioned) -> None:
    """ExecStart of the installed kafka.service, as the kafka user, from the root: the topics the role made are
    there, records survive a SIGKILL, and the restart after the crash costs about broker.session.timeout.ms."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource

    r, ports = kafka_on.root, kafka_on.ports
    unit = r.file("etc/systemd/system/kafka.service").read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    log = kafka_on.workdir / "kafka.log"
    bootstrap = f"127.0.0.1:{ports['kafka']}"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(r.chroot(*exec_start, user="kafka"), stdout=out, stderr=subprocess.STDOUT)
        _wait_tcp(ports["kafka"], proc, log, timeout=90)
        return proc

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

        stop_pid(proc, timeout=60)  # SIGTERM: a controlled shutdown
        assert proc.returncode in (0, 143), proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert "Kafka Server started" in text
    assert "SLF4J" not in text  # a binding is there (else: "Defaulting to no-operation (NOP) logger")
    assert not re.search(r"^INFO (?!.*\(kafka\.server\.KafkaRaftServer\))", text, re.M)  # WARN, and that one line


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

    recap, out = ansible_playbook(book, kafka_on.inventory, env,
                                  extra_vars={"kafka_jars_dir": str(jars), "kafka_create_topics": False})
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

    recap, out = ansible_playbook(book, kafka_on.inventory, env, extra_vars={"kafka_create_topics": False})
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
    assert (root / "var/lib/kafka/data/meta.properties").is_file()
