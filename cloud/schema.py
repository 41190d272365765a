"""`cloud-ingest setup`: create (or correct) the database, retention policies and rollup CQs, then verify them.

Idempotent: every object is read first and only created or changed when it differs from the config, so a second
run reports no actions. InfluxDB 1.x is the verified target. For 2.x (`influx2://`) the buckets and the equivalent
downsampling tasks are created through influxdb-client; that path cannot be verified here (the only 2.x-compatible
server available, VictoriaMetrics, has no buckets or tasks API).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from cloud.formats._common import FLOAT_FIELDS, INT_FIELDS
from cloud.influx_duration import duration_ns
from cloud.rollups import INTERVALS, RollupConfig, cq_name, create_cq, ident, ranges, rerun_query
from cloud.sinks.base import SinkConfigError, SinkError, SinkOptions
from cloud.sinks.influx1 import Influx1Client, Target

_NS = 1_000_000_000


@dataclass(slots=True)
class SetupReport:
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(results: list[dict[str, Any]]) -> list[tuple[str | None, list[str], list[list[Any]]]]:
    return [(s.get("name"), s["columns"], s.get("values", [])) for s in results[0].get("series", [])]


def _retention_policies(client: Influx1Client, db: str) -> dict[str, tuple[int, bool]]:
    out: dict[str, tuple[int, bool]] = {}
    for _, cols, values in _rows(client.query(f"SHOW RETENTION POLICIES ON {ident(db)}")):
        for v in values:
            row = dict(zip(cols, v, strict=True))
            out[row["name"]] = (duration_ns(row["duration"]), bool(row["default"]))
    return out


def _continuous_queries(client: Influx1Client, db: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, _, values in _rows(client.query("SHOW CONTINUOUS QUERIES")):
        if name == db:
            out.update({v[0]: v[1] for v in values})
    return out


def setup_influx1(url: str, config: RollupConfig | None = None, options: SinkOptions | None = None) -> SetupReport:
    cfg = config or RollupConfig()
    client = Influx1Client(Target.from_url(url), options or SinkOptions())
    db = client.target.db
    report = SetupReport()
    try:

        def run(q: str) -> None:
            client.query(q, db=db)
            report.actions.append(q)

        dbs = [v[0] for _, _, values in _rows(client.query("SHOW DATABASES")) for v in values]
        if db not in dbs:
            run(f"CREATE DATABASE {ident(db)}")
        rps = _retention_policies(client, db)
        for name, duration, default in (
            (cfg.raw_rp, cfg.raw_duration, True),
            (cfg.rollup_rp, cfg.rollup_duration, False),
        ):
            want = duration_ns(duration)
            d = " DEFAULT" if default else ""
            if name not in rps:
                run(f"CREATE RETENTION POLICY {ident(name)} ON {ident(db)} DURATION {duration} REPLICATION 1{d}")
            elif rps[name][0] != want or (default and not rps[name][1]):
                run(f"ALTER RETENTION POLICY {ident(name)} ON {ident(db)} DURATION {duration}{d}")
        cqs = _continuous_queries(client, db)
        for iv in cfg.intervals:
            name, want_q = cq_name(cfg, iv), create_cq(cfg, db, iv)
            if cqs.get(name) == want_q:
                continue
            if name in cqs:  # CQs can't be altered: replace
                run(f"DROP CONTINUOUS QUERY {ident(name)} ON {ident(db)}")
            run(want_q)
        report.problems = verify_influx1(client, cfg)
    except SinkError as e:
        report.problems.append(str(e))
    finally:
        client.close()
    return report


def verify_influx1(client: Influx1Client, cfg: RollupConfig) -> list[str]:
    """What differs from the config (empty when all is as it should be)."""
    db = client.target.db
    problems: list[str] = []
    if client.target.rp and client.target.rp != cfg.raw_rp:
        # The CQs and late-data re-runs read the raw RP: points written elsewhere would never be rolled up.
        problems.append(f"the URL writes to retention policy {client.target.rp!r}, the rollups read {cfg.raw_rp!r}")
    rps = _retention_policies(client, db)
    for name, duration, default in ((cfg.raw_rp, cfg.raw_duration, True), (cfg.rollup_rp, cfg.rollup_duration, False)):
        if name not in rps:
            problems.append(f"retention policy {name!r} is missing")
            continue
        got_ns, got_default = rps[name]
        if got_ns != duration_ns(duration):
            problems.append(f"retention policy {name!r} keeps {got_ns // _NS} s, not {duration}")
        if default and not got_default:
            problems.append(f"retention policy {name!r} is not the default")
    cqs = _continuous_queries(client, db)
    for iv in cfg.intervals:
        name = cq_name(cfg, iv)
        if cqs.get(name) != create_cq(cfg, db, iv):
            problems.append(f"continuous query {name!r} is missing or differs: {cqs.get(name)!r}")
    return problems


def backfill_influx1(
    url: str, start_ns: int, end_ns: int, config: RollupConfig | None = None, options: SinkOptions | None = None
) -> int:
    """Recompute every rollup interval overlapping [start_ns, end_ns); the number of queries run."""
    cfg = config or RollupConfig()
    client = Influx1Client(Target.from_url(url), options or SinkOptions())
    n = 0
    try:
        for iv in cfg.intervals:
            step = INTERVALS[iv]
            starts = range(start_ns - start_ns % step, end_ns, step)
            for a, b in ranges(starts, step, cfg.max_range_intervals):
                client.query(rerun_query(cfg, client.target.db, iv, a, b), db=client.target.db)
                n += 1
    finally:
        client.close()
    return n


# ---- InfluxDB 2.x (not verifiable here) -------------------------------------------------------------------------


def flux_task(cfg: RollupConfig, bucket: str, rollup_bucket: str, interval: str, lookback: str) -> str:
    """The body of a 2.x downsampling task (influxdb-client adds the `option task` line).

    It recomputes the whole `lookback` window on every run, the 2.x equivalent of `RESAMPLE FOR`, so late data
    within that window is rolled up; 2.x overwrites points with the same series and time, like 1.x.
    """
    numeric = sorted(FLOAT_FIELDS | INT_FIELDS)
    fields = ", ".join(f'"{f}"' for f in numeric)
    m, out = cfg.measurement, f"{cfg.measurement}_{interval}"
    lines = [
        f"fields = [{fields}]",
        f'data = from(bucket: "{bucket}") |> range(start: -{lookback})',
        f'  |> filter(fn: (r) => r._measurement == "{m}" and contains(value: r._field, set: fields))',
        "rollup = (tables=<-, fn, name) => tables",
        f"  |> aggregateWindow(every: {interval}, fn: fn, createEmpty: false)",
        f'  |> map(fn: (r) => ({{r with _measurement: "{out}", _field: name + "_" + r._field}}))',
        f'  |> to(bucket: "{rollup_bucket}")',
        'data |> rollup(fn: mean, name: "mean")',
        'data |> rollup(fn: min, name: "min")',
        'data |> rollup(fn: max, name: "max")',
        'data |> rollup(fn: count, name: "count")',
        f'data |> filter(fn: (r) => r._field == "{cfg.battery_field}") |> rollup(fn: last, name: "last")',
    ]
    return "\n".join(lines) + "\n"


def setup_influx2(
    url: str, config: RollupConfig | None = None, options: SinkOptions | None = None, lookback: str = "2d"
) -> SetupReport:
    """Buckets (raw with the raw retention, `<bucket>_rollups` kept forever) and one task per interval."""
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

    from cloud.sinks.influx2 import Target2

    cfg = config or RollupConfig()
    opts = options or SinkOptions()
    t = Target2.from_url(url, opts)
    report = SetupReport()
    client = InfluxDBClient(url=t.url, token=t.token, org=t.org, timeout=int(opts.timeout_s * 1000))
    try:
        buckets = client.buckets_api()
        rollup_bucket = f"{t.bucket}_rollups"
        for name, duration in ((t.bucket, cfg.raw_duration), (rollup_bucket, cfg.rollup_duration)):
            if buckets.find_bucket_by_name(name) is None:  # type: ignore[no-untyped-call]
                seconds = duration_ns(duration) // _NS
                rule = BucketRetentionRules(type="expire", every_seconds=seconds)  # type: ignore[no-untyped-call]
                rules = [rule] if seconds else []
                buckets.create_bucket(bucket_name=name, retention_rules=rules, org=t.org)
                report.actions.append(f"create bucket {name} ({duration})")
        tasks = client.tasks_api()
        for iv in cfg.intervals:
            name = cq_name(cfg, iv)
            flux = flux_task(cfg, t.bucket, rollup_bucket, iv, lookback)
            existing = tasks.find_tasks(name=name)  # type: ignore[no-untyped-call]
            if existing and all(urllib.parse.unquote(x.flux or "").endswith(flux) for x in existing):
                continue
            for x in existing:
                tasks.delete_task(x.id)
            tasks.create_task_every(name, flux, iv, t.org)
            report.actions.append(f"create task {name}")
    except Exception as e:  # influxdb-client raises ApiException, urllib3 errors, ...: report, don't crash setup
        report.problems.append(f"{type(e).__name__}: {' '.join(str(e).split())[:500]}")
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return report


def setup(url: str, config: RollupConfig | None = None, options: SinkOptions | None = None) -> SetupReport:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("http", "https"):
        return setup_influx1(url, config, options)
    if scheme in ("influx2", "influx2s"):
        return setup_influx2(url, config, options)
    raise SinkConfigError(f"--influx URL scheme {scheme!r} is not http, https, influx2 or influx2s")
