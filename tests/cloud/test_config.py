"""Config: TOML < CLOUD_INGEST_* < flags, checked at start-up with errors that name the key; the shipped sample."""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from pathlib import Path

import pytest

from cloud.config import (
    Config,
    formats_config,
    influx_url,
    kafka_settings,
    load_config,
    receiver_settings,
    sink_options,
)
from cloud.formats import Router
from cloud.receiver import Receiver
from cloud.sinks import open_sink
from core.settings import ConfigError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "cloud" / "cloud-ingest.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_sample_documents_every_setting_with_its_default() -> None:
    data = tomllib.loads(SAMPLE.read_text())
    cfg = load_config(SAMPLE, environ={})
    default = Config()
    assert cfg == load_config(None, environ={})  # the state folder resolved the same way for both
    for section in dataclasses.fields(Config):
        keys = {f.name for f in dataclasses.fields(getattr(default, section.name))}
        assert set(data[section.name]) == keys, section.name


@pytest.mark.parametrize(("toml", "message"), [
    ("[batch]\nmax_points = 'ten'\n", "batch.max_points: expected an integer, got a string 'ten'"),
    ("[batch]\nmax_points = 0\n", "batch.max_points: must be 1..1000000, got 0"),
    ("[batch]\nmax_interval = 'soon'\n", "batch.max_interval: expected a duration"),
    ("[mqtt]\nrecieve_maximum = 10\n", "mqtt.recieve_maximum: unknown key"),
    ("[mqqt]\nurl = 'x'\n", "mqqt: unknown section"),
    ("[mqtt]\nurl = 'http://broker'\n", "mqtt.url: expected mqtt://"),
    ("[mqtt]\nreceive_maximum = 1\n", "mqtt.receive_maximum: must be 2..65535, got 1"),
    ("[mqtt]\nsession_expiry = 0\n", "mqtt.session_expiry: must be at least 60 s"),
    ("[mqtt]\nclient_id = 'has space'\n", "mqtt.client_id: 'has space' must be"),
    ("[mqtt]\nshared_group = 'a/b'\n", "mqtt.shared_group: 'a/b' must not contain"),
    ("[mqtt]\nqos = 2\n", "mqtt.qos: must be 1"),
    ("[mqtt]\ndlq_topic = 'sensors/+'\n", "mqtt.dlq_topic: 'sensors/+' must be a plain topic name"),
    ("[mqtt]\ndlq_topic = 'sensors/x'\n[formats]\nflat = ['sensors/x']\n", "mqtt.dlq_topic: 'sensors/x' is also"),
    ("[influx]\nurl = 'http://127.0.0.1:8086'\n", "influx.url: 'http://127.0.0.1:8086' names no database"),
    ("[influx]\nurl = 'postgres://x/y'\n", "influx.url: expected http://"),
    ("[formats]\nedge = ['edge-gw/#/batch']\n", "formats.edge[0]: 'edge-gw/#/batch' is not a valid MQTT topic filter"),
    ("[formats]\nedge = []\nruuvi_gateway = []\nflat = []\n", "formats: no topic filter configured at all"),
    ("[dedup]\nwindow = 0\n", "dedup.window: must be positive"),
    ("[metrics]\nport = 70000\n", "metrics.port: must be 0 (off) or a TCP port, got 70000"),
    ("[log]\nlevel = 'loud'\n", "log.level: expected debug, info, warning or error, got 'loud'"),
    ("[influx]\ngzip = 'sometimes'\n", "influx.gzip: expected true, false or \"auto\", got 'sometimes'"),
    ("[influx]\ngzip = 1\n", "influx.gzip: expected true, false or \"auto\", got 1"),
    ("[kafka]\nbridge_batch_points = 0\n", "kafka.bridge_batch_points: must be 1..1000000, got 0"),
])
def test_errors_name_the_bad_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, toml), environ={})
    assert message in str(e.value)


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, "[batch]\nmax_points = 100\nmax_interval = '2s'\n[mqtt]\nshared_group = 'file'\n")
    env = {"CLOUD_INGEST_BATCH_MAX_POINTS": "200", "CLOUD_INGEST_MQTT_SHARED_GROUP": "env"}
    cfg = load_config(path, {"mqtt.shared_group": "flag"}, environ=env)
    assert (cfg.batch.max_points, cfg.batch.max_interval, cfg.mqtt.shared_group) == (200, 2.0, "flag")


def test_environment_and_flag_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"batch.max_points \(from \$CLOUD_INGEST_BATCH_MAX_POINTS\): expected an "
                                          r"integer, got 'lots'"):
        load_config(None, environ={"CLOUD_INGEST_BATCH_MAX_POINTS": "lots"})
    with pytest.raises(ConfigError, match=r"dedup.enabled \(from the command line\): expected true or false"):
        load_config(None, {"dedup.enabled": "perhaps"}, environ={})
    with pytest.raises(ConfigError, match=r"batch.max_pionts: unknown setting"):
        load_config(None, {"batch.max_pionts": "1"}, environ={})


def test_inline_secret_needs_a_private_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[influx]\nurl = 'http://u:secret@127.0.0.1:8086/ruuvi'\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"influx.password is set inline in .* chmod 600"):
        load_config(path, environ={})


def test_derived_settings(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss/word\n")
    secret.chmod(0o600)
    cfg = load_config(None, {"influx.url": "http://ingest@127.0.0.1:8086/iot?rp=raw",
                             "influx.password_file": str(secret), "mqtt.receive_maximum": "300",
                             "influx.measurement": "m"}, environ={})
    assert influx_url(cfg) == "http://ingest:p%40ss%2Fword@127.0.0.1:8086/iot?rp=raw"
    assert cfg.batch_max_messages() == 150
    assert load_config(None, {"batch.max_messages": "5000", "mqtt.receive_maximum": "300"}, environ={}) \
        .batch_max_messages() == 300
    f = formats_config(cfg)
    assert (f.measurement, f.edge, f.max_payload_bytes) == ("m", ("edge-gw/+/batch", "edge-gw/+/status"), 1 << 20)
    assert sink_options(cfg).timeout_s == 10.0
    assert cfg.formats.topics() == ["edge-gw/+/batch", "edge-gw/+/status", "ruuvi/+/+", "sensors/+"]


@pytest.mark.parametrize(("url", "gzip", "compressed"), [
    ("http://127.0.0.1:8086/ruuvi", None, False),  # the default, "auto": not on loopback
    ("http://127.8.0.1:8086/ruuvi", None, False),
    ("http://localhost:8086/ruuvi", None, False),
    ("http://[::1]:8086/ruuvi", None, False),
    ("influx2://127.0.0.1:8086?org=o&bucket=b", None, False),
    ("http://10.0.0.5:8086/ruuvi", None, True),
    ("http://influx.example.net:8086/ruuvi", None, True),
    ("https://u@[2001:db8::1]:8086/ruuvi", None, True),
    ("http://127.0.0.1:8086/ruuvi", "true", True),  # as a flag or an environment variable
    ("http://10.0.0.5:8086/ruuvi", "false", False),
    ("http://10.0.0.5:8086/ruuvi", "auto", True),
])
def test_gzip_auto_compresses_writes_to_a_remote_influxdb_only(url: str, gzip: str | None, compressed: bool) -> None:
    flags = {"influx.url": url} | ({"influx.gzip": gzip} if gzip is not None else {})
    assert sink_options(load_config(None, flags, environ={})).gzip is compressed


def test_gzip_takes_a_toml_boolean(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[influx]\ngzip = true\n"), environ={})
    assert sink_options(cfg).gzip is True
    assert sink_options(load_config(write(tmp_path, "[influx]\ngzip = false\n"), environ={})).gzip is False


def test_a_percent_escaped_password_in_the_url_is_decoded() -> None:
    cfg = load_config(None, {"mqtt.url": "mqtt://cloud%2Dingest:s%40cret%3A%25@broker:1883"}, environ={})
    assert cfg.mqtt.credentials() == ("cloud-ingest", "s@cret:%")


def test_kafka_settings_carry_the_credentials_and_the_delivery_timeout_to_run_kafkas_dead_letters(
        tmp_path: Path) -> None:
    pw = tmp_path / "kafka.pw"
    pw.write_text("s3cret-kafka\n")
    pw.chmod(0o600)
    cfg = load_config(None, {"kafka.bootstrap": "127.0.0.1:9", "kafka.delivery_timeout": "7s",
                             "kafka.security_protocol": "sasl_ssl", "kafka.username": "ingest",
                             "kafka.password_file": str(pw)}, environ={})
    s = kafka_settings(cfg)
    assert s.client == {"bootstrap.servers": "127.0.0.1:9", "security.protocol": "sasl_ssl",
                        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "ingest", "sasl.password": "s3cret-kafka"}
    assert s.delivery_timeout_s == 7.0
    # The consumer's dead-letter producer times a record out like the bridge's producer (kafka.delivery_timeout),
    # not after librdkafka's or our default. Nothing connects: 127.0.0.1:9 is only tried in the background.
    receiver = Receiver(dataclasses.replace(receiver_settings(cfg), kafka=s, dedup=False),
                        sink=open_sink(influx_url(cfg)), router=Router(formats_config(cfg)))
    assert receiver.kafka_dlq is not None
    try:
        assert receiver.kafka_dlq.settings.message_timeout_ms == 7000
    finally:
        asyncio.run(receiver.kafka_dlq.close(0.1))
