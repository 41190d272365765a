"""Hourly and daily rollups, and keeping them right when readings arrive late.

Schema (InfluxDB 1.x): raw points in `<db>.<raw_rp>.<measurement>`; rollups in `<db>.<rollup_rp>.<measurement>_1h`
and `..._1d`, one row per interval and tag set (`GROUP BY time(..), *` keeps mac, gateway and data_format as tags),
with `mean_<f>`, `min_<f>`, `max_<f>`, `count_<f>` for every field (mean skips booleans) and `last_battery_voltage`.

A continuous query only covers the interval that has just ended, so a store-and-forward backlog arriving hours late is
never rolled up by it. `Rollups.after_write()` notes every finished interval that a write touched, and re-runs the
rollup query for those intervals (`SELECT ... INTO ... WHERE time >= a AND time < b GROUP BY time(..), *`).
InfluxDB overwrites a rollup row with the same tags and time, so a re-run simply replaces it with the full answer.
Re-runs are debounced (`settle_s`): a backlog drains in many batches, and recomputing an hour once per batch would
be quadratic. The cost of that: if the receiver dies within `settle_s` of a late write, those intervals keep their
partial rollup until the next late write touches them (or `cloud-ingest setup --backfill` recomputes them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cloud.model import Point
from cloud.sinks.base import SinkError, SinkOptions
from cloud.sinks.influx1 import Influx1Client, Target

log = logging.getLogger(__name__)

_NS = 1_000_000_000
INTERVALS: dict[str, int] = {"1h": 3600 * _NS, "1d": 86400 * _NS}
_PLAIN_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(slots=True, frozen=True)
class RollupConfig:
    measurement: str = "ruuvi"
    raw_rp: str = "raw"
    raw_duration: str = "90d"
    rollup_rp: str = "rollups"
    rollup_duration: str = "INF"  # kept forever
    intervals: tuple[str, ...] = ("1h", "1d")
    battery_field: str = "battery_voltage"
    # Optional `RESAMPLE ...` clause for the CQs, e.g. "RESAMPLE FOR 2h": the CQ itself then picks up late data.
    cq_resample: str = ""
    settle_s: float = 10.0
    late_margin_s: float = 60.0  # an interval is "finished" (its CQ ran) this long before its end, to be safe
    max_range_intervals: int = 48  # one re-run query covers at most this many intervals


def ident(name: str) -> str:
    """An InfluxQL identifier, quoted only when it needs it (so SHOW CONTINUOUS QUERIES prints what we created)."""
    if _PLAIN_IDENT.match(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rollup_measurement(cfg: RollupConfig, interval: str) -> str:
    return f"{cfg.measurement}_{interval}"


def select_into(cfg: RollupConfig, db: str, interval: str) -> str:
    """The rollup SELECT ... INTO ... FROM ..., without WHERE and GROUP BY."""
    battery = ident(cfg.battery_field)
    dst = f"{ident(db)}.{ident(cfg.rollup_rp)}.{ident(rollup_measurement(cfg, interval))}"
    src = f"{ident(db)}.{ident(cfg.raw_rp)}.{ident(cfg.measurement)}"
    return (
        f"SELECT mean(*), min(*), max(*), count(*), last({battery}) AS {ident('last_' + cfg.battery_field)} "
        f"INTO {dst} FROM {src}"
    )


def cq_name(cfg: RollupConfig, interval: str) -> str:
    return f"{cfg.measurement}_{interval}"


def create_cq(cfg: RollupConfig, db: str, interval: str) -> str:
    resample = f"{cfg.cq_resample.strip()} " if cfg.cq_resample.strip() else ""
    return (
        f"CREATE CONTINUOUS QUERY {ident(cq_name(cfg, interval))} ON {ident(db)} {resample}BEGIN "
        f"{select_into(cfg, db, interval)} GROUP BY time({interval}), * END"
    )


def rerun_query(cfg: RollupConfig, db: str, interval: str, start_ns: int, end_ns: int) -> str:
    return f"{select_into(cfg, db, interval)} WHERE time >= {start_ns} AND time < {end_ns} GROUP BY time({interval}), *"


def ranges(starts: Iterable[int], step: int, max_len: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of interval starts, each at most max_len intervals long."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(starts)):
        if out and out[-1][1] == s and (out[-1][1] - out[-1][0]) // step < max_len:
            out[-1] = (out[-1][0], s + step)
        else:
            out.append((s, s + step))
    return out


class Rollups:
    """Late-data re-runs for an InfluxDB 1.x target. Call `after_write()` after each successful write."""

    def __init__(
        self,
        client: Influx1Client,
        config: RollupConfig | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.client = client
        self.config = config or RollupConfig()
        self._clock = clock
        self._dirty: dict[str, set[int]] = {iv: set() for iv in self.config.intervals}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.reruns = 0  # queries run (for metrics and tests)
        self.last_error: str | None = None

    @classmethod
    def from_url(cls, url: str, config: RollupConfig | None = None, options: SinkOptions | None = None) -> Rollups:
        return cls(Influx1Client(Target.from_url(url), options or SinkOptions()), config)

    def mark(self, points: Sequence[Point]) -> int:
        """Note the finished intervals these points fall in; how many new ones."""
        if not points:
            return 0
        cutoff = self._clock() + int(self.config.late_margin_s * _NS)
        added = 0
        for iv in self.config.intervals:
            step = INTERVALS[iv]
            dirty = self._dirty[iv]
            before = len(dirty)
            for p in points:
                start = p.time_ns - p.time_ns % step
                if start + step <= cutoff:
                    dirty.add(start)
            added += len(dirty) - before
        return added

    async def after_write(self, points: Sequence[Point]) -> None:
        self.mark(points)
        if any(self._dirty.values()) and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        # Loops while re-runs fail (database down), so marked intervals are not left waiting for the next write.
        while any(self._dirty.values()):
            await asyncio.sleep(self.config.settle_s)
            await self.flush()

    async def flush(self) -> None:
        """Re-run the rollups of every interval marked so far. Failures stay marked for the next flush."""
        async with self._lock:
            todo, self._dirty = self._dirty, {iv: set() for iv in self.config.intervals}
            db = self.client.target.db
            for iv, starts in todo.items():
                for a, b in ranges(starts, INTERVALS[iv], self.config.max_range_intervals):
                    q = rerun_query(self.config, db, iv, a, b)
                    try:
                        await asyncio.to_thread(self.client.query, q, db=db)
                    except SinkError as e:
                        self.last_error = str(e)
                        log.warning("rollup re-run failed, will retry: %s", e)
                        self._dirty[iv].update(range(a, b, INTERVALS[iv]))
                    else:
                        self.reruns += 1

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.flush()
        self.client.close()
