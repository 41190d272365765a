"""Every escaping rule of cloud.lineproto, written to the real influxd 1.6.7 and read back."""

from __future__ import annotations

from servers import Influxd, series_values

from cloud.lineproto import encode_line
from cloud.model import Point
from cloud.sinks.base import SinkOptions
from cloud.sinks.influx1 import Influx1Client, Target


def test_escaped_names_and_values_read_back(influxd: Influxd) -> None:
    influxd.query("CREATE DATABASE t", method="POST")
    cases = {
        # tag value sent -> what InfluxDB stores
        "plain": "plain",
        "a,b c=d": "a,b c=d",
        "line\nbreak": "line\\nbreak",
        "cr\r": "cr\\r",
        "back\\slash": "back\\slash",
        "trailing\\": "trailing",
        "b4\\,comma": "b4\\\\,comma",  # the one lossy corner: InfluxDB keeps the doubled backslash
        "ünï ‐ cödé": "ünï ‐ cödé",
        'quote"s': 'quote"s',
    }
    points = [
        Point("m x,y", {"gateway": sent, "n": str(i)}, {"f k=,": i, "s": 'a "q" \\ b'}, 1000 + i)
        for i, sent in enumerate(cases)
    ]
    client = Influx1Client(Target.from_url(f"{influxd.url}/t"), SinkOptions())
    resp = client.write_lines([encode_line(p) for p in points])
    assert (resp.status, resp.text) == (204, "")
    got = client.query('SELECT "f k=,", "s", "gateway" FROM "m x,y"', db="t")
    rows = got[0]["series"][0]["values"]
    assert [r[1] for r in rows] == list(range(len(cases)))
    assert [r[2] for r in rows] == ['a "q" \\ b'] * len(cases)
    assert [r[3] for r in rows] == list(cases.values())
    assert series_values(influxd.query("SHOW MEASUREMENTS", "t")) == [["m x,y"]]
    client.close()
