"""The `edge-gw` command: a thin layer over the library. Library errors become one-line click errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core import ruuvi
from core.config import redact_url
from core.extras import run_with_extras
from core.settings import ConfigError, as_dict, ensure_dir
from edge import __version__
from edge.config import Config, load_config

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class BadInput(click.ClickException):
    """A one-line error with exit status 2 (bad input), as `edge-gw decode` promises."""

    exit_code = 2


def _load(config: Path | None, overrides: dict[str, object]) -> Config:
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None


def _check_secrets(cfg: Config) -> None:
    """Read the credential file now: a missing one, or one others can read, is a one-line error before anything
    starts (not a traceback at the first connect)."""
    try:
        cfg.mqtt.credentials()
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None


def config_option(f: F) -> F:
    return click.option("--config", "-c", "config", type=click.Path(path_type=Path, dir_okay=False),
                        envvar="EDGE_GW_CONFIG", help="TOML config file (default: none; env EDGE_GW_CONFIG).")(f)


def db_option(f: F) -> F:
    return click.option("--db", type=click.Path(path_type=Path, dir_okay=False),
                        help="SQLite buffer file (gateway.db).")(f)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="edge-gw")
def cli() -> None:
    """edge-gw: RuuviTag gateway. Decodes BLE adverts, buffers them in SQLite and forwards them over MQTT.

    Nothing committed to the buffer is lost: readings are deleted only after the broker acknowledged them.
    """


@cli.command()
@config_option
@db_option
@click.option("--mqtt", "mqtt_url", help="Broker URL: mqtt://[user[:pass]@]host[:port] or mqtts://... (mqtt.url).")
@click.option("--gateway-id", help="This gateway's id; also its MQTT username under the ACL (gateway.id).")
@click.option("--source", help="bleak (default), simulate, or replay:FILE (source.kind).")
@click.option("--adapter", help="Bluetooth adapter for bleak, e.g. hci1 (source.adapter).")
@click.option("--tags", type=int, help="simulate: number of virtual tags (source.tags).")
@click.option("--rate", type=float, help="simulate: adverts per second in total (source.rate).")
@click.option("--count", type=int, help="simulate/replay: stop after this many adverts, once committed (source.count).")
@click.option("--seed", type=int, help="simulate: random seed (source.seed).")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port; 0 = off (metrics.port).")
@click.option("--assume-synced", is_flag=True, default=None,
              help="Trust the system clock even if the kernel does not report NTP sync (clock.assume_synced).")
@click.option("--drain", "drain_timeout", type=float,
              help="After --count: wait up to this many seconds until the buffer is forwarded.")
@click.option("--log-level", help="debug, info, warning or error (log.level).")
def run(config: Path | None, db: Path | None, mqtt_url: str | None, gateway_id: str | None, source: str | None,
        adapter: str | None, tags: int | None, rate: float | None, count: int | None, seed: int | None,
        metrics_port: int | None, assume_synced: bool | None, drain_timeout: float | None,
        log_level: str | None) -> None:
    """Run the gateway: scan (or simulate/replay), decode, dedup, buffer, forward.

    \b
    Example:
        edge-gw run --gateway-id pi-kitchen --mqtt mqtt://127.0.0.1:1883
        edge-gw run --source simulate --tags 20 --rate 50 --gateway-id demo
    """
    cfg = _load(config, {
        "gateway.db": str(db) if db else None, "mqtt.url": mqtt_url, "gateway.id": gateway_id,
        "source.kind": source, "source.adapter": adapter, "source.tags": tags, "source.rate": rate,
        "source.count": count, "source.seed": seed, "metrics.port": metrics_port,
        "clock.assume_synced": "true" if assume_synced else None, "log.level": log_level,
    })
    if not cfg.gateway.id:
        raise click.ClickException("config: gateway.id is required (--gateway-id or [gateway] id)")
    _check_secrets(cfg)
    _setup_logging(cfg.log.level)
    from edge.clock import SystemClock
    from edge.gateway import Gateway, run_forever
    from edge.metrics import Counters, serve
    from edge.sources import SourceError
    from edge.store import StoreError

    try:
        ensure_dir("gateway.db", Path(cfg.gateway.db).parent)
    except ConfigError as e:
        raise click.ClickException(f"config: {e}") from None
    counters = Counters()
    try:
        gateway = Gateway(cfg, SystemClock(assume_synced=cfg.clock.assume_synced), counters)
    except (SourceError, StoreError) as e:
        raise click.ClickException(str(e)) from None
    if cfg.metrics.port:
        serve(counters, cfg.metrics.port, cfg.metrics.addr)
    logging.getLogger("edge").info("gateway %s: source %s, broker %s, buffer %s", cfg.gateway.id,
                                   cfg.source.kind, redact_url(cfg.mqtt.url), cfg.gateway.db)
    try:
        result = run_forever(gateway, drain_timeout=drain_timeout)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"adverts={result.adverts} committed={result.committed}"
               + ("" if result.drained is None else f" drained={'yes' if result.drained else 'no'}"), err=True)
    if result.drained is False:
        sys.exit(1)


@cli.command()
@config_option
@db_option
@click.option("--mqtt", "mqtt_url", help="Broker URL (mqtt.url).")
@click.option("--gateway-id", help="Gateway id (gateway.id).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Give up after this many seconds.")
def flush(config: Path | None, db: Path | None, mqtt_url: str | None, gateway_id: str | None, timeout: float) -> None:
    """Forward everything buffered now, with a progress bar; exit 0 only once the cloud confirmed every reading.

    With uplink.confirm = "broker", the broker's acknowledgement is enough. Exits 1, saying how many readings wait
    and for what, on a timeout or while readings are held for clock sync. Refuses to run while the daemon forwards
    the same buffer.
    """
    cfg = _load(config, {"gateway.db": str(db) if db else None, "mqtt.url": mqtt_url, "gateway.id": gateway_id})
    if not cfg.gateway.id:
        raise click.ClickException("config: gateway.id is required (--gateway-id or [gateway] id)")
    _check_secrets(cfg)
    from edge.store import Store, StoreError
    from edge.store.lock import BufferLock

    path = Path(cfg.gateway.db)
    if not path.exists():
        raise click.ClickException(f"no buffer at {path}")
    lock = BufferLock(path)  # held while flushing: a daemon started meanwhile refuses this buffer
    try:
        lock.acquire()
    except StoreError as e:
        raise click.ClickException(f"{e} and forwards it itself") from None
    try:
        store = Store(path)
        stats = store.stats()
        store.close()
        total = stats.rows
        if total == 0 and stats.held_rows == 0:
            click.echo("buffer is empty")
            return
        if total:
            _forward(cfg, path, total, timeout)
    finally:
        lock.release()
    if stats.held_rows:
        raise click.ClickException(
            f"{stats.held_rows} readings are held until the clock is synchronised (their time is corrected then); "
            "check `timedatectl`, or run with --assume-synced on a host whose clock is right without NTP")


def _forward(cfg: Config, path: Path, total: int, timeout: float) -> None:
    from edge.clock import SystemClock
    from edge.gateway import mqtt_settings, store_limits, uplink_settings
    from edge.metrics import Counters
    from edge.uplink import Uplink

    counters = Counters()
    # flush drains as fast as the broker acknowledges: there is no live data to protect.
    settings = dataclasses.replace(uplink_settings(cfg), backfill_rate=math.inf)
    uplink = Uplink(path, cfg.gateway.id, mqtt_settings(cfg), settings, counters,
                    SystemClock(assume_synced=cfg.clock.assume_synced), limits=store_limits(cfg))
    uplink.start()
    done = 0
    waiting: dict[str, Any] = {}
    try:
        with click.progressbar(length=total, label="forwarding", show_eta=True, show_pos=True,
                               file=sys.stderr) as bar:
            def progress(remaining: int) -> None:
                nonlocal done
                now = max(0, total - remaining)
                if now > done:
                    bar.update(now - done)
                    done = now

            ok = uplink.wait_drained(timeout, progress)
            waiting = uplink.state()  # before stop() forgets what is in flight
    finally:
        uplink.stop()
    by = "the cloud confirmed" if settings.confirm == "cloud" else "the broker acknowledged"
    if ok:
        click.echo(f"forwarded {total} readings and {by} every one; buffer empty")
        return
    left = total - done
    awaiting = int(waiting.get("awaiting_confirm") or 0)
    unsent = max(0, left - int(waiting.get("unconfirmed") or 0))
    why = [f"{unsent} not yet sent (uplink {waiting.get('state')}"
           + (f": {waiting['last_error']})" if waiting.get("last_error") else ")")]
    if awaiting:
        why.append(f"{awaiting} sent and acknowledged by the broker but not confirmed by the cloud (is cloud-ingest "
                   "running and subscribed? for a receiver that does not confirm, set uplink.confirm = \"broker\")")
    raise click.ClickException(f"timed out after {timeout:g}s: {left} of {total} readings still wait: "
                               + "; ".join(why))


@cli.command()
@config_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print stable JSON instead of the screen.")
def status(config: Path | None, db: Path | None, as_json: bool) -> None:
    """Show buffer, counters, uplink, clock, scanner and per-tag state, whether or not the daemon runs."""
    cfg = _load(config, {"gateway.db": str(db) if db else None})
    path = Path(cfg.gateway.db)
    if not path.exists():
        raise click.ClickException(f"no buffer at {path} (use --db)")
    from edge.status import load, render
    from edge.store import StoreError

    try:
        report = load(path)
    except StoreError as e:
        raise click.ClickException(f"{e}; `edge-gw run` salvages what it can read when it starts") from None
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(render(report, now_ns=time.time_ns()))
    if report["integrity"] not in (None, "ok"):
        raise click.ClickException(f"buffer {path} is damaged: {report['integrity']}; `edge-gw run` salvages what "
                                   "it can read when it starts")


@cli.command()
@config_option
@click.option("--source", help="bleak (default), simulate or replay:FILE.")
@click.option("--adapter", help="Bluetooth adapter, e.g. hci1.")
@click.option(
    "--record", type=click.Path(path_type=Path, dir_okay=False), help="Write a capture for --source replay:FILE."
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--count", type=int, help="Stop after this many adverts.")
def scan(config: Path | None, source: str | None, adapter: str | None, record: Path | None,
         duration: float | None, count: int | None) -> None:
    """Print decoded Ruuvi adverts as JSON lines (no buffering, no MQTT), optionally recording them.

    \b
    Example:
        edge-gw scan --duration 30 --record kitchen.jsonl
        edge-gw run --source replay:kitchen.jsonl --gateway-id test
    """
    cfg = _load(config, {"source.kind": source, "source.adapter": adapter, "source.count": count})
    from edge.gateway import source_options
    from edge.metrics import Counters
    from edge.scan import scan as do_scan
    from edge.sources import SourceError

    try:
        n = do_scan(cfg.source.kind, source_options(cfg), Counters(), record=record, duration=duration,
                    out=click.echo)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{n} adverts", err=True)


@cli.command()
@click.argument("hex_payload", metavar="HEX")
@click.option("--derived", is_flag=True, help="Add dew point, absolute humidity, air density and total acceleration.")
def decode(hex_payload: str, derived: bool) -> None:
    """Decode one Ruuvi payload and print it as one JSON object.

    HEX is the manufacturer data after company id 0x0499 (starting with the format byte), case-insensitive;
    a leading 9904 or a whole advertisement (AD structures, as Ruuvi Gateway's `data`) is accepted too.
    Bad input exits with status 2 and a one-line error.

    \b
    Example:
        edge-gw decode 0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F
    """
    try:
        fields = ruuvi.decode(ruuvi.payload_from_hex(hex_payload))
    except ruuvi.DecodeError as e:
        raise BadInput(str(e)) from None
    if derived:
        fields.update(ruuvi.derived(fields))
    click.echo(json.dumps(fields, separators=(",", ":"), ensure_ascii=False))


@cli.group("config")
def config_group() -> None:
    """Validate configuration."""


@config_group.command("check")
@config_option
@click.option("--connect", is_flag=True, help="Also connect to the broker with these settings.")
def config_check(config: Path | None, connect: bool) -> None:
    """Validate the config (file, EDGE_GW_* variables) and print the effective settings, secrets hidden."""
    cfg = _load(config, {})
    _check_secrets(cfg)
    effective = as_dict(cfg)
    effective["mqtt"]["url"] = redact_url(cfg.mqtt.url)
    click.echo(json.dumps(effective, indent=2))
    if connect:
        from edge.gateway import mqtt_settings
        from edge.mqtt import Session, UplinkError

        try:
            session = Session(mqtt_settings(cfg), f"edge-gw-check-{cfg.gateway.id or 'config'}")
            session.open()
            session.close(graceful=True)
        except UplinkError as e:
            raise click.ClickException(f"broker: {e}") from None
        click.echo("broker: connected", err=True)
    click.echo("config ok", err=True)


@cli.group("mpy")
def mpy_group() -> None:
    """Build and deploy the MicroPython (ESP32) gateway."""


@mpy_group.command("build")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("build/micropython"),
              show_default=True, help="Output folder for the .mpy files.")
@click.option("--march", default="xtensawin", show_default=True, help="mpy-cross -march (xtensawin = ESP32/S3).")
def mpy_build(out: Path, march: str) -> None:
    """Compile every board module with mpy-cross."""
    from edge import mpy

    try:
        files = mpy.build(out, march=march)
    except mpy.MpyError as e:
        raise click.ClickException(str(e)) from None
    for f in files:
        click.echo(str(f))


@mpy_group.command("deploy")
@click.option("--port", required=True, help="Serial port or mpremote device, e.g. /dev/ttyUSB0.")
@click.option("--config", "board_config", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The board's config.json.")
@click.option("--build-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("build/micropython"),
              show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the mpremote commands instead of running them.")
def mpy_deploy(port: str, board_config: Path, build_dir: Path, dry_run: bool) -> None:
    """Copy the build and config.json to the board with mpremote, then reset it."""
    from edge import mpy

    try:
        if dry_run:
            for cmd in mpy.deploy_command(port, board_config, build_dir):
                click.echo(" ".join(cmd))
            return
        mpy.deploy(port, board_config, build_dir)
    except mpy.MpyError as e:
        raise click.ClickException(str(e)) from None


def main() -> None:
    run_with_extras("edge-gw", lambda: cli(prog_name="edge-gw"))


if __name__ == "__main__":
    main()
