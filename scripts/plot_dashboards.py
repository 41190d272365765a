#!/usr/bin/env python3
"""Run every panel query of the Grafana dashboards in cloud/grafana/ and plot the answers with matplotlib.

Grafana cannot be installed here, so this is the stand-in for a screenshot: the same queries, expanded the way Grafana
expands them ($timeFilter, $__interval, $__interval_ms, $__rate_interval, template variables), against a real
InfluxDB 1.x (InfluxQL) and a Prometheus-compatible server (PromQL), one figure per dashboard.

Example:
    python scripts/plot_dashboards.py --influx http://127.0.0.1:8086 --prometheus http://127.0.0.1:8428 \\
        --var mac=c2:8d:4e:51:3b:2a --out docs/img

The tests (tests/grafana) import this module, so the queries they check are exactly the ones plotted.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "cloud" / "grafana"
DEFAULT_MAX_DATA_POINTS = 1000
# The datasources' timeInterval (cloud/grafana/provisioning/datasources): Grafana's lower bound for $__interval,
# and for Prometheus also the scrape interval $__rate_interval is built from.
MIN_INTERVAL_S = {"influxdb": 10.0, "prometheus": 15.0}

# Grafana's rounding of the raw interval (range / max data points) to a "nice" one: (upper bound, result), in ms.
# Same table as Grafana's rangeutil roundInterval.
_ROUND = [
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000), (32400000, 21600000),
    (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
]
_UNITS = [("y", 31536000000), ("w", 604800000), ("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000),
          ("ms", 1)]


class DashboardError(RuntimeError):
    pass


def round_interval_ms(ms: float) -> int:
    for bound, result in _ROUND:
        if ms < bound:
            return result
    return 31536000000


def interval_text(ms: int) -> str:
    """Grafana's rendering of an interval: the largest unit that divides it ("10s", "1m", "1h", "1d")."""
    for unit, size in _UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class TimeRange:
    """A relative range as Grafana's time picker gives it: now-<span> to now."""

    span: str  # e.g. "6h", "7d"

    @property
    def seconds(self) -> float:
        m = re.fullmatch(r"(\d+)([smhdw])", self.span)
        if not m:
            raise DashboardError(f"unsupported range {self.span!r}")
        return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]

    def influx_filter(self) -> str:
        # What the InfluxDB datasource renders for a relative range ending at now.
        return f"time >= now() - {self.span} and time <= now()"


@dataclass
class Query:
    dashboard: str
    panel: str
    ref: str
    kind: str  # "influxdb" or "prometheus"
    text: str
    alias: str = ""


def interval_ms(rng: TimeRange, kind: str, max_data_points: int = DEFAULT_MAX_DATA_POINTS) -> int:
    raw = rng.seconds * 1000 / max_data_points
    return max(round_interval_ms(raw), int(MIN_INTERVAL_S[kind] * 1000))


def expand(text: str, kind: str, rng: TimeRange, variables: dict[str, str],
           max_data_points: int = DEFAULT_MAX_DATA_POINTS) -> str:
    """Expand the macros and template variables the way Grafana does before it sends the query."""
    iv = interval_ms(rng, kind, max_data_points)
    scrape = int(MIN_INTERVAL_S["prometheus"] * 1000)
    macros = {
        "$__interval_ms": str(iv),
        "$__interval": interval_text(iv),
        # Grafana: max($__interval + scrape interval, 4 * scrape interval).
        "$__rate_interval": interval_text(max(iv + scrape, 4 * scrape)),
        "$timeFilter": rng.influx_filter(),
        "$__range_s": str(int(rng.seconds)),
    }
    for name in sorted(macros, key=len, reverse=True):  # $__interval_ms before $__interval
        text = text.replace(name, macros[name])
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    leftover = re.findall(r"\$\{?\w+", text)
    if leftover:
        raise DashboardError(f"unexpanded {leftover} in {text!r}")
    return text


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: load(p) for p in sorted(DASHBOARDS.glob("*.json"))}


def queries(dash: dict[str, Any]) -> list[Query]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            kind = (t.get("datasource") or p["datasource"])["type"]
            text = t["query"] if kind == "influxdb" else t["expr"]
            out.append(Query(dash["uid"], p["title"], t["refId"], kind, text, t.get("alias", "")))
    return out


def _get(url: str, params: dict[str, str], auth: tuple[str, str] | None = None) -> Any:
    req = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise DashboardError(f"{e.code} from {url}: {e.read()[:500]!r} for {params}") from None


@dataclass
class Series:
    name: str
    times: list[float] = field(default_factory=list)  # Unix seconds
    values: list[float | None] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def label(self, alias: str) -> str:
        """Grafana's alias patterns for InfluxDB: $tag_<key> becomes the tag's value."""
        if not alias:
            return self.name
        return re.sub(r"\$tag_(\w+)", lambda m: self.tags.get(m.group(1), m.group(0)), alias)


def run_influx(url: str, db: str, query: str, auth: tuple[str, str] | None = None) -> list[Series]:
    """One InfluxQL query, as Grafana's datasource sends it (GET /query, epoch=ms)."""
    body = _get(f"{url}/query", {"db": db, "q": query, "epoch": "ms"}, auth)
    result = body["results"][0]
    if "error" in result:
        raise DashboardError(f"{result['error']}: {query}")
    out = []
    for s in result.get("series", []):
        tags = ",".join(f"{k}={v}" for k, v in sorted((s.get("tags") or {}).items()))
        timed = s["columns"][0] == "time"  # SHOW ... answers have no time column
        for col in range(1 if timed else 0, len(s["columns"])):
            series = Series(f"{s['columns'][col]}{' ' + tags if tags else ''}", tags=dict(s.get("tags") or {}))
            for i, row in enumerate(s["values"]):
                series.times.append(row[0] / 1000 if timed else float(i))
                series.values.append(row[col])
            out.append(series)
    return out


def run_prometheus(url: str, query: str, rng: TimeRange, step_s: float) -> list[Series]:
    """One PromQL range query (/api/v1/query_range), as Grafana's Prometheus datasource sends it."""
    end = time.time()
    body = _get(f"{url}/api/v1/query_range",
                {"query": query, "start": f"{end - rng.seconds:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"})
    if body.get("status") != "success":
        raise DashboardError(f"{body}: {query}")
    out = []
    for r in body["data"]["result"]:
        name = ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())) or query
        s = Series(name, tags={k: v for k, v in r["metric"].items() if k != "__name__"})
        for t, v in r["values"]:
            s.times.append(float(t))
            s.values.append(float(v))
        out.append(s)
    return out


@dataclass
class Sources:
    influx_url: str
    prometheus_url: str
    db: str = "ruuvi"
    influx_auth: tuple[str, str] | None = None


def run(q: Query, src: Sources, rng: TimeRange, variables: dict[str, str]) -> list[Series]:
    text = expand(q.text, q.kind, rng, variables)
    if q.kind == "influxdb":
        return run_influx(src.influx_url, src.db, text, src.influx_auth)
    if q.kind == "prometheus":
        return run_prometheus(src.prometheus_url, text, rng, interval_ms(rng, q.kind) / 1000)
    raise DashboardError(f"unknown datasource type {q.kind}")


def has_data(series: list[Series]) -> bool:
    return any(v is not None and not (isinstance(v, float) and math.isnan(v)) for s in series for v in s.values)


def plot(dash: dict[str, Any], src: Sources, rng: TimeRange, variables: dict[str, str], out: Path) -> Path:
    """One PNG per dashboard: a grid with one subplot per panel, every target's series drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = dash["panels"]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.2 * rows), squeeze=False)
    for ax, p in zip(axes.flat, panels, strict=False):
        ax.set_title(p["title"], fontsize=10)
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        texts: list[str] = []
        for q in queries({"uid": dash["uid"], "panels": [p]}):
            for s in run(q, src, rng, variables):
                pts = [(t, v) for t, v in zip(s.times, s.values, strict=True) if v is not None]
                if not pts:
                    continue
                if len(pts) == 1 or p["type"] in ("stat", "table"):
                    texts.append(f"{s.label(q.alias) if p['type'] == 'table' else ''} {pts[-1][1]:.4g} {unit}".strip())
                    continue
                xs = [dt.datetime.fromtimestamp(t, tz=dt.UTC) for t, _ in pts]
                ax.plot(xs, [v for _, v in pts], label=s.label(q.alias)[:40], linewidth=1)
                ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %H:%M"))  # type: ignore[no-untyped-call]
        if texts:
            ax.text(0.5, 0.5, "\n".join(texts), ha="center", va="center", fontsize=16 if len(texts) == 1 else 10,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{dash['title']}  (last {rng.span}; {', '.join(f'{k}={v}' for k, v in variables.items())})")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dash['uid']}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--influx", required=True, help="InfluxDB 1.x base URL, e.g. http://127.0.0.1:8086")
    ap.add_argument("--prometheus", required=True, help="Prometheus-compatible base URL (PromQL)")
    ap.add_argument("--db", default="ruuvi")
    ap.add_argument("--range", dest="span", default="6h", help="relative range: now-<range> to now")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="template variable value")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    variables = dict(v.split("=", 1) for v in args.var)
    src = Sources(args.influx, args.prometheus, args.db)
    for dash in dashboards().values():
        print(plot(dash, src, TimeRange(args.span), variables, args.out))


if __name__ == "__main__":
    main()
