"""The Grafana dashboards and provisioning files: schema, macro expansion, and every panel query against real data."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jinja2
import plot_dashboards as pd
import pytest
import yaml
from pipeline import Filled

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "cloud" / "grafana"
ROLE_DEFAULTS = REPO / "ansible" / "roles" / "grafana" / "defaults" / "main.yml"
PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "bargauge", "text"}
DASHBOARDS = pd.dashboards()
SOURCES = {"raw": ('"raw"."ruuvi"', "6h"), "hourly": ('"rollups"."ruuvi_1h"', "3d"),
           "daily": ('"rollups"."ruuvi_1d"', "7d")}


def render(template: Path) -> dict[str, Any]:
    """A provisioning template rendered with the grafana role's defaults, as the role writes it."""
    variables = yaml.safe_load(ROLE_DEFAULTS.read_text())
    variables |= {"ansible_managed": "Ansible managed", "grafana_influxdb_password": "s3cret\"'"}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = __import__("json").dumps
    out = env.from_string(template.read_text()).render(**variables)
    data: dict[str, Any] = yaml.safe_load(out)
    return data


def datasource_uids() -> dict[str, str]:
    ds = render(GRAFANA / "provisioning/datasources/edge-gw.yaml.j2")["datasources"]
    return {d["uid"]: d["type"] for d in ds}


def test_datasource_provisioning_matches_grafanas_format() -> None:
    data = render(GRAFANA / "provisioning/datasources/edge-gw.yaml.j2")
    assert data["apiVersion"] == 1
    influx, prom = data["datasources"]
    assert influx == {
        "name": "edge-gw InfluxDB", "uid": "edge-gw-influxdb", "type": "influxdb", "access": "proxy",
        "url": "http://127.0.0.1:8086", "user": "grafana", "isDefault": True, "editable": False,
        "jsonData": {"dbName": "ruuvi", "httpMode": "GET", "timeInterval": "10s"},
        "secureJsonData": {"password": "s3cret\"'"},
    }
    assert prom == {
        "name": "edge-gw Prometheus", "uid": "edge-gw-prometheus", "type": "prometheus", "access": "proxy",
        "url": "http://127.0.0.1:9090", "isDefault": False, "editable": False, "jsonData": {"timeInterval": "15s"},
    }
    # The expansion below uses the same lower bounds as these timeIntervals.
    assert pd.MIN_INTERVAL_S == {"influxdb": 10.0, "prometheus": 15.0}


def test_dashboard_provider_matches_grafanas_format() -> None:
    data = render(GRAFANA / "provisioning/dashboards/edge-gw.yaml.j2")
    assert data == {"apiVersion": 1, "providers": [{
        "name": "edge-gw", "orgId": 1, "folder": "edge-gw", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "updateIntervalSeconds": 30,
        "options": {"path": "/var/lib/grafana/dashboards/edge-gw", "foldersFromFilesStructure": False}}]}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_has_the_fields_grafana_needs(name: str) -> None:
    d = DASHBOARDS[name]
    uids = datasource_uids()
    assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"])
    assert d["title"].startswith("edge-gw / ")
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["time"]["to"] == "now" and d["time"]["from"].startswith("now-")
    assert d["panels"], "no panels"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in d["templating"]["list"]}
    for v in variables.values():
        assert v["type"] in ("query", "custom")
        if v["type"] == "query":
            assert uids[v["datasource"]["uid"]] == v["datasource"]["type"]
            assert v["query"] == v["definition"]
        else:
            assert v["current"]["value"] in [o["value"] for o in v["options"]]
    for p in d["panels"]:
        assert p["type"] in PANEL_TYPES, p["title"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh") and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0
        assert uids[p["datasource"]["uid"]] == p["datasource"]["type"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert uids[t["datasource"]["uid"]] == t["datasource"]["type"]
            text = t["query"] if t["datasource"]["type"] == "influxdb" else t["expr"]
            if t["datasource"]["type"] == "influxdb":
                assert t["rawQuery"] is True and t["resultFormat"] in ("time_series", "table")
            for var in re.findall(r"\$(?!__|timeFilter|tag_)(\w+)", text + t.get("alias", "")):
                assert var in variables, f"{p['title']}: ${var} is not a template variable"


def test_macro_expansion_matches_grafana() -> None:
    six_hours = pd.TimeRange("6h")
    # 6 h / 1000 points = 21.6 s -> Grafana rounds to 20 s; the InfluxDB datasource's minimum is 10 s.
    assert pd.interval_ms(six_hours, "influxdb") == 20000
    assert pd.expand("GROUP BY time($__interval) / ($__interval_ms / 1000) WHERE $timeFilter", "influxdb", six_hours,
                     {}) == "GROUP BY time(20s) / (20000 / 1000) WHERE time >= now() - 6h and time <= now()"
    # 5 min / 1000 = 0.3 s -> 200 ms, raised to the minimum (10 s InfluxDB, 15 s Prometheus).
    assert pd.expand("$__interval", "influxdb", pd.TimeRange("5m"), {}) == "10s"
    assert pd.expand("$__interval $__rate_interval", "prometheus", pd.TimeRange("5m"), {}) == "15s 1m"
    assert pd.expand("$__interval", "influxdb", pd.TimeRange("7d"), {}) == "10m"
    # 30 d / 1000 = 43.2 min -> 30 min.
    assert pd.expand("$__interval", "influxdb", pd.TimeRange("30d"), {}) == "30m"
    assert pd.expand("\"mac\" = '$mac' FROM $source", "influxdb", six_hours,
                     {"mac": "aa:bb:cc:dd:ee:ff", "source": '"raw"."ruuvi"'}) == \
        "\"mac\" = 'aa:bb:cc:dd:ee:ff' FROM \"raw\".\"ruuvi\""
    with pytest.raises(pd.DashboardError, match="unexpanded"):
        pd.expand("WHERE mac = '$mac'", "influxdb", six_hours, {})


def _cases() -> list[tuple[str, pd.Query, str]]:
    cases = []
    for d in DASHBOARDS.values():
        for q in pd.queries(d):
            for source in (SOURCES if "$source" in q.text else ["raw"]):
                cases.append((d["uid"], q, source))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("uid", "query", "source"), CASES,
                         ids=[f"{u}:{q.panel}:{q.ref}:{s}" for u, q, s in CASES])
def test_every_panel_query_returns_data(filled: Filled, uid: str, query: pd.Query, source: str) -> None:
    value, span = SOURCES[source]
    mac = filled.air_mac if uid == "edge-gw-air" else filled.df5_mac
    rng = pd.TimeRange("10m") if query.kind == "prometheus" else pd.TimeRange(span)
    series = pd.run(query, filled.sources, rng, {"mac": mac, "source": value})
    assert pd.has_data(series), f"{query.panel} ({source}): no data from {query.text}"


def test_template_variable_queries_return_the_tags(filled: Filled) -> None:
    for uid, want in (("edge-gw-tag", 10), ("edge-gw-air", 1)):
        dash = next(d for d in DASHBOARDS.values() if d["uid"] == uid)
        var = next(v for v in dash["templating"]["list"] if v["name"] == "mac")
        rows = pd.run_influx(filled.sources.influx_url, "ruuvi", var["query"])
        macs = [v for s in rows if s.name.startswith("value") for v in s.values]
        assert len(macs) == want
        assert (filled.air_mac in macs) and (uid == "edge-gw-air" or filled.df5_mac in macs)


def test_fleet_numbers_are_exact(filled: Filled) -> None:
    fleet = next(d for d in DASHBOARDS.values() if d["uid"] == "edge-gw-fleet")
    by_title = {p["title"]: p for p in fleet["panels"]}

    def first(title: str, span: str = "6h") -> list[pd.Series]:
        q = pd.queries({"uid": "x", "panels": [by_title[title]]})[0]
        return pd.run(q, filled.sources, pd.TimeRange(span), {})

    # Only the live gateway delivered in the last 5 minutes (the history ends 15 minutes ago).
    assert first("Gateways reporting (last 5 min)")[0].values == [1]
    assert first("Tags reporting (last 5 min)")[0].values == [10]
    table = first("Readings per gateway (selected range)", "7d")
    readings = {s.name: s.values for s in table if s.name.startswith("readings")}
    assert readings["readings gateway=gw-history-1"] == [filled.history_readings]
    assert readings["readings gateway=gw-live-1"][0] > 0
    assert sorted(readings) == ["readings gateway=gw-history-1", "readings gateway=gw-live-1"]


def test_plot_script_draws_every_dashboard(filled: Filled, tmp_path: Path) -> None:
    out = REPO / "docs" / "img" if os.environ.get("EDGE_GW_WRITE_DOCS_IMG") else tmp_path
    made = []
    for d in DASHBOARDS.values():
        mac = filled.air_mac if d["uid"] == "edge-gw-air" else filled.df5_mac
        span = "3d" if d["uid"] != "edge-gw-fleet" else "1h"
        source = SOURCES["hourly"][0]
        made.append(pd.plot(d, filled.sources, pd.TimeRange(span), {"mac": mac, "source": source}, out))
    assert sorted(p.name for p in made) == ["edge-gw-air.png", "edge-gw-fleet.png", "edge-gw-tag.png"]
    import matplotlib.image

    for p, d in zip(made, DASHBOARDS.values(), strict=True):
        img = matplotlib.image.imread(p)
        height, width = img.shape[:2]
        rows = -(-len(d["panels"]) // 2)
        assert width == 1040 and height == 256 * rows, (p.name, img.shape)  # 13 in wide, 3.2 in per row, 80 dpi
        # Drawn, not blank: a real share of the pixels is ink, in several colours (one per series).
        ink = (img[..., :3] < 0.9).any(axis=-1).mean()
        colours = {tuple(c) for c in (img[..., :3].reshape(-1, 3) * 8).astype(int).tolist()}
        assert ink > 0.02 and len(colours) > 20, (p.name, ink, len(colours))
