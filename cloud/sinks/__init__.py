"""The sinks that write points: InfluxDB 1.x over its /write API (influx1.py) and 2.x/3.x through influxdb-client
(influx2.py), on the common base (base.py: the writer, retries, error classes). open_sink() picks one by the URL;
it lives here, above all three, so that they form no import circle."""

from __future__ import annotations

import urllib.parse

from cloud.sinks.base import Sink, SinkConfigError, SinkOptions


def open_sink(url: str, *, options: SinkOptions | None = None) -> Sink:
    """`http(s)://[user:pass@]host:port/<db>[?rp=<rp>]` for InfluxDB 1.x,
    `influx2://host:port?org=<org>&bucket=<bucket>` (or `influx2s://` for https) for 2.x/3.x."""
    opts = options or SinkOptions()
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("http", "https"):
        from cloud.sinks.influx1 import Influx1Sink  # lazily: influxdb-client costs RSS, and 1.x needs none of it

        return Influx1Sink(url, opts)
    if scheme in ("influx2", "influx2s"):
        from cloud.sinks.influx2 import Influx2Sink

        return Influx2Sink(url, opts)
    raise SinkConfigError(f"--influx URL scheme {scheme!r} is not http, https, influx2 or influx2s")
