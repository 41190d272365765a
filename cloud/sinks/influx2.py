"""InfluxDB 2.x/3.x through influxdb-client's synchronous write API (org, bucket, token).

`influx2://host:port?org=<org>&bucket=<bucket>` (`influx2s://` for https); the token comes from SinkOptions
(config file or environment), never from the URL. The same write algorithm as 1.x (cloud.sinks.base.BatchWriter) runs on
top: influxdb-client's ApiException carries the HTTP status and headers, which are classified exactly like 1.x's.
Tested against VictoriaMetrics' /api/v2/write (it accepts and ignores org/bucket/token); the downsampling tasks
that `setup` creates for 2.x can't be verified here (VictoriaMetrics has no tasks API).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Any

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from cloud.sinks.base import BatchWriter, Response, SinkConfigError, SinkOptions, TransportError, WriterSink


@dataclass(slots=True, frozen=True)
class Target2:
    url: str  # http(s)://host:port
    org: str
    bucket: str
    token: str

    @classmethod
    def from_url(cls, url: str, options: SinkOptions) -> Target2:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("influx2", "influx2s") or not u.hostname:
            raise SinkConfigError(f"InfluxDB 2.x URL {url!r} is not influx2://host:port?org=..&bucket=..")
        q = urllib.parse.parse_qs(u.query)
        org = options.org or q.get("org", [""])[0]
        bucket = options.bucket or q.get("bucket", [""])[0]
        if not org or not bucket:
            raise SinkConfigError(f"InfluxDB 2.x URL {url!r} needs org and bucket (in the URL or the options)")
        scheme = "https" if u.scheme == "influx2s" else "http"
        port = f":{u.port}" if u.port else ""
        return cls(f"{scheme}://{u.hostname}{port}", org, bucket, options.token or "")


class Influx2Sink(WriterSink):
    def __init__(self, url: str, options: SinkOptions) -> None:
        self.target = Target2.from_url(url, options)
        self.client = InfluxDBClient(
            url=self.target.url,
            token=self.target.token,
            org=self.target.org,
            timeout=int(options.timeout_s * 1000),
            enable_gzip=options.gzip,
        )
        self._api = self.client.write_api(write_options=SYNCHRONOUS)
        self._writer = BatchWriter(self._send, options, f"InfluxDB 2.x {self.target.url}")

    def _write_blocking(self, lines: list[str]) -> Response:
        try:
            self._api.write(
                bucket=self.target.bucket,
                org=self.target.org,
                record="\n".join(lines),  # write_precision defaults to ns
            )
        except ApiException as e:
            headers: Any = e.headers or {}
            body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else str(e.body or e.reason)
            return Response(int(e.status or 0), dict(headers), body)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise TransportError(f"{type(e).__name__}: {e}") from None
        return Response(204, {}, "")

    async def _send(self, lines: list[str]) -> Response:
        return await asyncio.to_thread(self._write_blocking, lines)

    async def close(self) -> None:
        self._writer.state = "closed"
        self.client.close()  # type: ignore[no-untyped-call]
