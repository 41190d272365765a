"""edge-gw's configuration: one TOML file (see edge-gw.example.toml), then `EDGE_GW_<SECTION>_<KEY>` variables,
then flags."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from core.config import HomeAssistantSection as CoreHomeAssistantSection
from core.config import LogSection, MetricsSection, MqttConnection
from core.settings import ConfigError, Duration, Size, check_private, load, state_dir
from core.wire import WireError, check_gateway_id, check_prefix

ENV_PREFIX = "EDGE_GW"


def _valid_id(gateway_id: str) -> bool:
    try:
        check_gateway_id(gateway_id)
    except WireError:
        return False
    return True


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class GatewaySection:
    id: str = ""
    db: str = ""  # "" = buffer.db in the state folder (core.settings.state_dir), resolved by load_config

    def __post_init__(self) -> None:
        _check(
            self.id == "" or _valid_id(self.id),
            f"gateway.id: {self.id!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (and not 'dlq')",
        )


@dataclass
class SourceSection:
    kind: str = "bleak"
    adapter: str = ""
    passive: bool = True
    watchdog: Duration = Duration(60.0)
    tags: int = 10
    rate: float = 20.0
    count: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        _check(
            self.kind in ("bleak", "simulate") or self.kind.startswith("replay:"),
            f"source.kind: expected bleak, simulate or replay:FILE, got {self.kind!r}",
        )
        _check(self.tags >= 1, f"source.tags: must be at least 1, got {self.tags}")
        _check(self.rate >= 0, f"source.rate: must be 0 (as fast as possible) or positive, got {self.rate}")
        _check(self.count >= 0, f"source.count: must be 0 (endless) or more, got {self.count}")
        _check(self.watchdog >= 1, f"source.watchdog: must be at least 1 s, got {self.watchdog}")


@dataclass
class DecodeSection:
    derived: bool = False


@dataclass
class DedupSection:
    window: Duration = Duration(10.0)
    max_entries: int = 20_000

    def __post_init__(self) -> None:
        _check(self.max_entries >= 1, f"dedup.max_entries: must be at least 1, got {self.max_entries}")


@dataclass
class StoreSection:
    max_bytes: Size = Size(512 * 2**20)
    max_age: Duration = Duration(30 * 86400.0)
    policy: str = "drop-oldest"
    commit_rows: int = 500
    commit_interval: Duration = Duration(0.1)

    def __post_init__(self) -> None:
        _check(
            self.policy in ("drop-oldest", "drop-newest"),
            f"store.policy: expected drop-oldest or drop-newest, got {self.policy!r}",
        )
        _check(self.max_bytes >= 1 << 20, f"store.max_bytes: must be at least 1MiB, got {int(self.max_bytes)}")
        _check(1 <= self.commit_rows <= 100_000, f"store.commit_rows: must be 1..100000, got {self.commit_rows}")
        _check(
            0 < self.commit_interval <= 10, f"store.commit_interval: must be in (0, 10] s, got {self.commit_interval}"
        )


@dataclass
class MqttSection(MqttConnection):
    client_id: str = ""
    topic_prefix: str = "edge-gw"

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            check_prefix(self.topic_prefix)  # the wire format's own rule, so `config check` and `run` agree
        except WireError as e:
            raise ConfigError(f"mqtt.topic_prefix: {e}") from None


@dataclass
class UplinkSection:
    batch_max_readings: int = 500
    inflight: int = 16
    backfill_rate: float = 60_000.0
    backoff_min: Duration = Duration(0.5)
    backoff_max: Duration = Duration(60.0)
    confirm: str = "cloud"
    confirm_timeout: Duration = Duration(60.0)
    max_unconfirmed: int = 20_000

    def __post_init__(self) -> None:
        _check(
            self.confirm in ("cloud", "broker"),
            f"uplink.confirm: expected \"cloud\" or \"broker\", got {self.confirm!r}",
        )
        _check(self.confirm_timeout > 0, f"uplink.confirm_timeout: must be positive, got {self.confirm_timeout}")
        _check(
            self.batch_max_readings <= self.max_unconfirmed <= 10_000_000,
            f"uplink.max_unconfirmed: must be uplink.batch_max_readings ({self.batch_max_readings}) .. 10000000, "
            f"got {self.max_unconfirmed}",
        )
        _check(
            1 <= self.batch_max_readings <= 5000,
            f"uplink.batch_max_readings: must be 1..5000, got {self.batch_max_readings}",
        )
        _check(1 <= self.inflight <= 1000, f"uplink.inflight: must be 1..1000, got {self.inflight}")
        _check(
            self.backfill_rate >= 0, f"uplink.backfill_rate: must be 0 (no cap) or positive, got {self.backfill_rate}"
        )
        _check(
            0 < self.backoff_min <= self.backoff_max,
            f"uplink.backoff_min ({self.backoff_min}) must be positive and <= uplink.backoff_max ({self.backoff_max})",
        )


@dataclass
class ClockSection:
    assume_synced: bool = False


@dataclass
class HistorySection:
    """[history]: fill gaps from the tags' own logs over GATT (docs/history.md)."""

    enabled: bool = False
    gap_threshold: Duration = Duration(600.0)  # a tag silent this long (or across a restart) has a gap to fill
    max_interval: Duration = Duration(10 * 86400.0)  # never ask for more than this much of a log (the tag keeps ~10 d)
    timeout: Duration = Duration(120.0)  # one download, connect to end marker
    backoff_min: Duration = Duration(60.0)  # per tag, doubling after each failure in a row
    backoff_max: Duration = Duration(3600.0)
    include: list[str] = field(default_factory=list)  # tag MACs; empty = every tag
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.gap_threshold >= 10, f"history.gap_threshold: must be at least 10 s, got {self.gap_threshold}")
        _check(self.max_interval >= self.gap_threshold,
               f"history.max_interval: must be at least history.gap_threshold, got {self.max_interval}")
        _check(self.timeout >= 1, f"history.timeout: must be at least 1 s, got {self.timeout}")
        _check(0 < self.backoff_min <= self.backoff_max,
               f"history.backoff_min ({self.backoff_min}) must be positive and <= history.backoff_max "
               f"({self.backoff_max})")
        for key in ("include", "exclude"):
            macs = getattr(self, key)
            bad = [m for m in macs if not _is_mac(m)]
            _check(not bad, f"history.{key}: expected MACs like \"aa:bb:cc:dd:ee:ff\", got {bad}")
            setattr(self, key, [m.lower() for m in macs])


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


@dataclass
class HomeAssistantSection(CoreHomeAssistantSection):
    """[homeassistant]: "" state_prefix = <mqtt.topic_prefix>/<gateway id>/ha."""


@dataclass
class Config:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    source: SourceSection = field(default_factory=SourceSection)
    decode: DecodeSection = field(default_factory=DecodeSection)
    dedup: DedupSection = field(default_factory=DedupSection)
    store: StoreSection = field(default_factory=StoreSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    uplink: UplinkSection = field(default_factory=UplinkSection)
    clock: ClockSection = field(default_factory=ClockSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    homeassistant: HomeAssistantSection = field(default_factory=HomeAssistantSection)
    history: HistorySection = field(default_factory=HistorySection)


def load_config(
    path: Path | None, overrides: dict[str, object] | None = None, environ: dict[str, str] | None = None
) -> Config:
    """Load and validate; raise ConfigError naming the bad key. A daemon also needs gateway.id (its caller checks)."""
    cfg = load(Config, path, env_prefix=ENV_PREFIX, environ=environ, overrides=overrides)
    if not cfg.gateway.db:
        cfg.gateway.db = str(state_dir("edge-gw", environ) / "buffer.db")
    if path is not None:
        with open(path, "rb") as f:
            mqtt = tomllib.load(f).get("mqtt", {})
        if mqtt.get("password") or urlsplit(str(mqtt.get("url", ""))).password:
            check_private("mqtt.password", path)
    return cfg

