"""The `cloud-ingest` command: a thin layer over the library. Library errors become one-line click errors."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cloud import __version__
from cloud.config import Config, check_runtime, check_secrets, kafka_client_config, load_config
from core.config import redact_url
from core.extras import run_with_extras
from core.settings import ConfigError, as_dict

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
EXIT_NOT_RUNNING = 3


def _load(config: Path | None, overrides: dict[str, object]) -> Config:
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None


def config_option(f: F) -> F:
    return click.option("--config", "-c", "config", type=click.Path(path_type=Path, dir_okay=False),
                        envvar="CLOUD_INGEST_CONFIG",
                        help="TOML config file (default: none; env CLOUD_INGEST_CONFIG).")(f)


def set_option(f: F) -> F:
    return click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
                        help="Override any setting, e.g. --set batch.max_points=1000 (repeatable).")(f)


def _overrides(settings: tuple[str, ...], named: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise click.BadParameter(f"{item!r} is not SECTION.KEY=VALUE", param_hint="--set")
        out[key.strip()] = value
    out.update({k: v for k, v in named.items() if v is not None})
    return out


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gmqtt").setLevel(max(logging.WARNING, logging.getLogger().level))


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="cloud-ingest")
def cli() -> None:
    """cloud-ingest: MQTT -> InfluxDB for edge-gw gateways, Ruuvi Gateways and flat sensor JSON.

    A message is acknowledged to the broker only after the batch holding it is written to the database (or it was
    dead-lettered), so a crash or a database outage loses nothing: the broker redelivers.
    """


@cli.command()
@config_option
@click.option("--mqtt", "mqtt_url", help="Broker URL: mqtt://[user[:pass]@]host[:port] or mqtts://... (mqtt.url).")
@click.option("--influx", "influx_url",
              help="Database URL: http://user:pass@host:8086/<db>[?rp=<rp>] for InfluxDB 1.x, or "
                   "influx2://host:port?org=<org>&bucket=<bucket> for 2.x/3.x (influx.url).")
@click.option("--kafka", "kafka_bootstrap", metavar="BOOTSTRAP",
              help="Consume from Kafka instead of MQTT: host:port[,host:port...] (kafka.bootstrap), in the consumer "
                   "group kafka.group.")
@click.option("--client-id", help="Fixed MQTT client id; it keeps the persistent session (mqtt.client_id).")
@click.option("--shared-group", help="Join a shared subscription group to split the load (mqtt.shared_group).")
@click.option("--metrics-port", type=int, help="Serve Prometheus /metrics on this port; 0 = off (metrics.port).")
@click.option("--status-file", help="Where to keep the status for `cloud-ingest status` (status.file).")
@click.option("--log-level", help="debug, info, warning or error (log.level).")
@set_option
def run(config: Path | None, mqtt_url: str | None, influx_url: str | None, kafka_bootstrap: str | None,
        client_id: str | None, shared_group: str | None, metrics_port: int | None, status_file: str | None,
        log_level: str | None, settings: tuple[str, ...]) -> None:
    """Receive from the broker and write to the database until SIGTERM/SIGINT (then write what is in memory).

    Exits non-zero if the database refuses the credentials (401/403): nothing more is acknowledged.

    With --kafka it is a member of a Kafka consumer group (kafka.topic, kafka.group) instead: offsets are committed
    only after the write, and poison records go to kafka.dlq_topic. Alerts, Home Assistant and the HTTP listener
    are MQTT-side features and refused there.

    \b
    Examples:
        cloud-ingest run --mqtt mqtt://127.0.0.1:1883 --influx http://ingest:secret@127.0.0.1:8086/ruuvi
        cloud-ingest run --kafka 127.0.0.1:9092 --influx http://ingest:secret@127.0.0.1:8086/ruuvi
    """
    cfg = _load(config, _overrides(settings, {
        "mqtt.url": mqtt_url, "influx.url": influx_url, "mqtt.client_id": client_id,
        "mqtt.shared_group": shared_group, "metrics.port": metrics_port, "status.file": status_file,
        "log.level": log_level, "kafka.bootstrap": kafka_bootstrap,
    }))
    try:
        check_runtime(cfg)
        if kafka_bootstrap is not None:
            from cloud.config import check_kafka_consumer, kafka_client_config

            check_kafka_consumer(cfg)
            kafka_client_config(cfg)
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None
    _setup_logging(cfg.log.level)
    from cloud.receiver import ReceiverError

    try:
        asyncio.run(_run(cfg, kafka=kafka_bootstrap is not None))
    except ReceiverError as e:
        raise click.ClickException(str(e)) from None


@cli.command()
@config_option
@click.option("--mqtt", "mqtt_url", help="Broker URL (mqtt.url).")
@click.option("--influx", "influx_url", help="Database URL (influx.url).")
@click.option("--client-id", help="The client id of the receiver to retire (mqtt.client_id).")
@click.option("--shared-group", help="Its shared subscription group (mqtt.shared_group).")
@click.option("--idle", type=float, default=3.0, show_default=True,
              help="Finish once nothing came for this many seconds.")
@set_option
def retire(config: Path | None, mqtt_url: str | None, influx_url: str | None, client_id: str | None,
           shared_group: str | None, idle: float, settings: tuple[str, ...]) -> None:
    """Take a receiver out of service for good: unsubscribe its session, write what the broker still holds for
    it, then end the session.

    Run it (with the retired receiver's client id) after stopping that receiver for the last time. Mosquitto keeps
    queueing a stopped member's share of a shared subscription until its session expires, so skipping this loses
    that share.

    \b
    Example:
        cloud-ingest retire --client-id cloud-ingest-3 --shared-group ingest
    """
    cfg = _load(config, _overrides(settings, {
        "mqtt.url": mqtt_url, "influx.url": influx_url, "mqtt.client_id": client_id,
        "mqtt.shared_group": shared_group, "metrics.port": "0", "status.file": "off",
    }))
    try:
        check_secrets(cfg)
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None
    _setup_logging(cfg.log.level)
    from cloud.receiver import ReceiverError

    try:
        written = asyncio.run(_run(cfg, retire=True, idle_s=idle))
    except ReceiverError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"retired {cfg.mqtt.client_id}: {written} points written, session ended", err=True)


def _tune_memory() -> None:
    """For the daemon processes only, not the library.

    Every reading allocates a few dicts and a Point, none of them in reference cycles. At the default threshold
    (700 allocations) the cyclic collector runs every ~250 readings; at 50,000 the receiver spends about 15 % less
    CPU per reading (measured: 9.8 -> 8.2 us with the null sink of bench work).

    With speedups/ installed, up to 64 empty 1 MiB object arenas are kept for reuse instead of being handed back
    to the kernel and faulted in again (edge_gw_speedups.keep_arenas; docs/benchmarks.md): the process keeps up to
    64 MiB more than it uses at the moment."""
    gc.set_threshold(50_000)
    gc.freeze()
    try:
        from edge_gw_speedups import keep_arenas
    except ImportError:
        return
    keep_arenas(64)


async def _run(cfg: Config, *, retire: bool = False, idle_s: float = 3.0, kafka: bool = False) -> int:
    _tune_memory()
    from cloud.config import (
        formats_config,
        homeassistant_settings,
        influx_url,
        kafka_settings,
        receiver_settings,
        sink_options,
    )
    from cloud.formats import Router
    from cloud.homeassistant import CloudHa
    from cloud.metrics import Metrics
    from cloud.receiver import Receiver
    from cloud.sinks import open_sink
    from cloud.sinks.base import SinkError

    try:
        sink = open_sink(influx_url(cfg), options=sink_options(cfg))
    except (SinkError, ConfigError) as e:
        raise click.ClickException(str(e)) from None
    try:
        rollups = _rollups(cfg)
    except (SinkError, ConfigError) as e:
        raise click.ClickException(str(e)) from None
    metrics = Metrics()
    if cfg.metrics.port:
        port = metrics.serve(cfg.metrics.port, cfg.metrics.addr)
        logging.getLogger("cloud").info("metrics on http://%s:%d/metrics", cfg.metrics.addr, port)
    try:
        settings = receiver_settings(cfg)
        if kafka:
            settings = dataclasses.replace(settings, kafka=kafka_settings(cfg), confirm=False)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    ha_settings = None if kafka else homeassistant_settings(cfg)
    receiver = Receiver(settings, sink=sink, router=Router(formats_config(cfg)), rollups=rollups, metrics=metrics,
                        status_file=Path(cfg.status.file) if cfg.status.file else None,
                        homeassistant=None if ha_settings is None else CloudHa(ha_settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if kafka:
        logging.getLogger("cloud").info("cloud-ingest %s: kafka %s (topic %s, group %s), database %s, client id %s",
                                        __version__, cfg.kafka.bootstrap, cfg.kafka.topic, cfg.kafka.group,
                                        redact_url(cfg.influx.url), cfg.mqtt.client_id)
    else:
        logging.getLogger("cloud").info("cloud-ingest %s: broker %s, database %s, client id %s%s", __version__,
                                        redact_url(cfg.mqtt.url), redact_url(cfg.influx.url), cfg.mqtt.client_id,
                                        f", shared group {cfg.mqtt.shared_group}" if cfg.mqtt.shared_group else "")
    try:
        await receiver.run(stop, retire=retire, idle_s=idle_s)
    finally:
        metrics.stop()
        if rollups is not None:
            await rollups.close()
    return receiver.counts.written


@cli.command()
@config_option
@click.option("--mqtt", "mqtt_url", help="Broker URL, as for `run` (mqtt.url).")
@click.option("--kafka", "kafka_bootstrap", help="Kafka bootstrap servers: host:port[,host:port...] (kafka.bootstrap).")
@click.option("--client-id", help="Fixed MQTT client id; not a receiver's id on the same broker (mqtt.client_id).")
@click.option("--shared-group", help="Join a shared subscription group to split the load (mqtt.shared_group).")
@click.option("--metrics-port", type=int, help="Serve Prometheus /metrics on this port; 0 = off (metrics.port).")
@click.option("--status-file", help="Where to keep the status for `cloud-ingest status` (status.file); not the file "
                                    "of a receiver on the same host.")
@click.option("--log-level", help="debug, info, warning or error (log.level).")
@set_option
def bridge(config: Path | None, mqtt_url: str | None, kafka_bootstrap: str | None, client_id: str | None,
           shared_group: str | None, metrics_port: int | None, status_file: str | None, log_level: str | None,
           settings: tuple[str, ...]) -> None:
    """Receive from the broker and produce to Kafka (kafka.topic, keyed by tag MAC) until SIGTERM/SIGINT.

    A message is acknowledged to the broker, and an edge-gw batch confirmed to its gateway, only once Kafka has
    acknowledged its records (acks=all). Malformed messages go to kafka.dlq_topic, the reason in the headers.

    \b
    Example:
        cloud-ingest bridge --mqtt mqtt://127.0.0.1:1883 --kafka 127.0.0.1:9092 --client-id bridge-1
    """
    cfg = _load(config, _overrides(settings, {
        "mqtt.url": mqtt_url, "kafka.bootstrap": kafka_bootstrap, "mqtt.client_id": client_id,
        "mqtt.shared_group": shared_group, "metrics.port": metrics_port, "status.file": status_file,
        "log.level": log_level,
    }))
    try:
        check_runtime(cfg)
        kafka_client_config(cfg)  # kafka.bootstrap set, kafka.password_file readable
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None
    _setup_logging(cfg.log.level)
    from cloud.kafka.bridge import prepare_topics
    from cloud.kafka.topics import TopicError
    from cloud.receiver import ReceiverError

    try:
        prepare_topics(cfg)
        asyncio.run(_bridge(cfg))
    except (TopicError, ReceiverError) as e:
        raise click.ClickException(str(e)) from None


async def _bridge(cfg: Config) -> None:
    _tune_memory()  # as in _run: the same per-reading allocations
    from cloud.kafka.bridge import bridge_receiver
    from cloud.metrics import Metrics

    metrics = Metrics()
    if cfg.metrics.port:
        port = metrics.serve(cfg.metrics.port, cfg.metrics.addr)
        logging.getLogger("cloud").info("metrics on http://%s:%d/metrics", cfg.metrics.addr, port)
    receiver = bridge_receiver(cfg, metrics=metrics, status_file=Path(cfg.status.file) if cfg.status.file else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    k = cfg.kafka
    logging.getLogger("cloud").info("cloud-ingest %s bridge: broker %s, Kafka %s topic %s (%s, one record per %s), "
                                    "client id %s", __version__, redact_url(cfg.mqtt.url), k.bootstrap, k.topic,
                                    k.encoding, k.record, cfg.mqtt.client_id)
    try:
        await receiver.run(stop)
    finally:
        metrics.stop()


def _rollups(cfg: Config) -> Any:
    """Late-data rollup re-runs, for InfluxDB 1.x targets (2.x tasks cover their own lookback)."""
    from urllib.parse import urlsplit

    from cloud.config import influx_url, rollup_config, sink_options
    from cloud.rollups import Rollups

    if not cfg.rollups.enabled or urlsplit(cfg.influx.url).scheme not in ("http", "https"):
        return None
    return Rollups.from_url(influx_url(cfg), rollup_config(cfg), sink_options(cfg))


@cli.command()
@config_option
@click.option("--influx", "influx_url", help="Database URL, as for `run` (influx.url).")
@click.option("--backfill", "backfill_hours", type=float,
              help="Also recompute the rollups of the last N hours from the raw data (InfluxDB 1.x).")
@set_option
def setup(config: Path | None, influx_url: str | None, backfill_hours: float | None, settings: tuple[str, ...]) -> None:
    """Create the database, retention policies (raw 90 days, rollups forever by default) and the hourly and daily
    rollup continuous queries (mean, min, max, count per field, last battery), then verify them.

    Idempotent: run it again after changing the [rollups] settings. Prints each statement it ran.

    \b
    Example:
        cloud-ingest setup --influx http://admin:secret@127.0.0.1:8086/ruuvi
    """
    cfg = _load(config, _overrides(settings, {"influx.url": influx_url}))
    _setup_logging(cfg.log.level)
    from cloud import schema as setup_mod
    from cloud.config import influx_url as make_url
    from cloud.config import rollup_config, sink_options
    from cloud.sinks.base import SinkError

    try:
        url = make_url(cfg)
        report = setup_mod.setup(url, rollup_config(cfg), sink_options(cfg))
        for action in report.actions:
            click.echo(action)
        if report.ok and backfill_hours:
            end = time.time_ns()
            n = setup_mod.backfill_influx1(url, end - int(backfill_hours * 3600e9), end, rollup_config(cfg),
                                           sink_options(cfg))
            click.echo(f"backfill: {n} rollup queries run", err=True)
    except (SinkError, ConfigError) as e:
        raise click.ClickException(f"setup: {e}") from None
    if not report.ok:
        raise click.ClickException("setup: " + "; ".join(report.problems))
    click.echo("setup ok" + ("" if report.actions else " (nothing to change)"), err=True)


@cli.command()
@config_option
@click.option("--status-file", help="The running receiver's status file (status.file).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(config: Path | None, status_file: str | None, as_json: bool) -> None:
    """Show queue depth, last write, per-gateway last seen and online/offline, and the dead-letter count.

    Reads the file the running receiver rewrites every status.interval; exits 3 if the receiver is not running
    (no file, or the file is stale).
    """
    from cloud import status as st

    cfg = _load(config, {"status.file": status_file})
    path = Path(cfg.status.file)
    try:
        current = st.read(path)
    except (OSError, ValueError) as e:
        raise click.ClickException(f"cannot read {path}: {e}") from None
    if current is None:
        click.echo(f"receiver: NOT RUNNING (no status file at {path})")
        sys.exit(EXIT_NOT_RUNNING)
    now = time.time_ns()
    if as_json:
        click.echo(current.to_json().decode())
    else:
        click.echo(st.render(current, interval_s=float(cfg.status.interval),
                             offline_after_s=float(cfg.status.gateway_offline_after), now_ns=now))
    if not st.running(current, float(cfg.status.interval), now):
        sys.exit(EXIT_NOT_RUNNING)


@cli.group("config")
def config_group() -> None:
    """Validate configuration."""


@config_group.command("check")
@config_option
@set_option
def config_check(config: Path | None, settings: tuple[str, ...]) -> None:
    """Validate the config (file, CLOUD_INGEST_* variables, --set) and print the effective settings, secrets hidden.

    Exits 1 with a one-line error naming the bad key.
    """
    cfg = _load(config, _overrides(settings, {}))
    try:
        check_secrets(cfg)
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None
    effective = as_dict(cfg)
    effective["mqtt"]["url"] = redact_url(cfg.mqtt.url)
    effective["influx"]["url"] = redact_url(cfg.influx.url)
    effective["mqtt"]["subscriptions"] = [
        (f"$share/{cfg.mqtt.shared_group}/" if cfg.mqtt.shared_group else "") + t for t in cfg.formats.topics()
    ]
    effective["batch"]["effective_max_messages"] = cfg.batch_max_messages()
    click.echo(json.dumps(effective, indent=2))
    click.echo("config ok", err=True)


def main() -> None:
    run_with_extras("cloud-ingest", lambda: cli(prog_name="cloud-ingest"))


if __name__ == "__main__":
    main()
