"""InfluxDB 1.x over plain HTTP: `POST /write?db=&rp=&precision=ns` and `POST /query`.

Blocking urllib3 (already a dependency of influxdb-client) runs in a worker thread, so the event loop never waits
on the network, gzip or the encoder. One keep-alive connection pool per sink.
Credentials in the URL are sent as HTTP basic auth, which InfluxDB 1.x accepts like `u=`/`p=`, without putting
the password in the request line (and so in proxy logs).
"""

from __future__ import annotations

import asyncio
import gzip
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3

from cloud.sinks.base import (
    BatchWriter,
    Response,
    SinkAuthError,
    SinkConfigError,
    SinkError,
    SinkOptions,
    TransportError,
    WriterSink,
)


@dataclass(slots=True, frozen=True)
class Target:
    base: str  # scheme://host:port
    db: str
    rp: str | None
    user: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> Target:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SinkConfigError(f"InfluxDB 1.x URL {url!r} is not http(s)://[user:pass@]host:port/<db>")
        db = urllib.parse.unquote(u.path.strip("/"))
        if not db or "/" in db:
            raise SinkConfigError(f"InfluxDB 1.x URL {url!r} must name exactly one database in its path")
        q = urllib.parse.parse_qs(u.query)
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        port = f":{u.port}" if u.port else ""
        return cls(
            base=f"{u.scheme}://{host}{port}",
            db=db,
            rp=q.get("rp", [None])[0],
            user=urllib.parse.unquote(u.username) if u.username else None,
            password=urllib.parse.unquote(u.password) if u.password else None,
        )


class Influx1Client:
    """Blocking HTTP to one InfluxDB 1.x server; use from a worker thread (or from setup, which is blocking)."""

    def __init__(self, target: Target, options: SinkOptions) -> None:
        self.target = target
        self.options = options
        headers = {}
        if target.user is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{target.user}:{target.password or ''}"))
        self._headers = headers
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=4,
            retries=False,
            timeout=urllib3.Timeout(connect=min(5.0, options.timeout_s), read=options.timeout_s),
        )

    def post(self, path: str, params: dict[str, str], body: bytes, headers: dict[str, str]) -> Response:
        url = f"{self.target.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            r = self._pool.request("POST", url, body=body, headers={**self._headers, **headers})
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from None
        return Response(r.status, dict(r.headers), r.data.decode("utf-8", "replace"))

    def write_lines(self, lines: Sequence[str]) -> Response:
        body = ("\n".join(lines) + "\n").encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.options.gzip:
            # Level 1: on loopback/LAN the CPU is dearer than the bytes; line protocol still shrinks about 5x.
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        params = {"db": self.target.db, "precision": "ns"}
        if self.target.rp:
            params["rp"] = self.target.rp
        return self.post("/write", params, body, headers)

    def query(self, q: str, *, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL (POST, so that SELECT INTO and DDL are allowed); the `results` list. Raises on any error."""
        params = {"q": q}
        if db:
            params["db"] = db
        body = urllib.parse.urlencode(params).encode()
        resp = self.post("/query", {}, body, {"Content-Type": "application/x-www-form-urlencoded"})
        if resp.status in (401, 403):
            raise SinkAuthError(f"HTTP {resp.status}: {resp.text.strip()[:300]}")
        if resp.status != 200:
            raise SinkError(f"query failed with HTTP {resp.status}: {resp.text.strip()[:300]}")
        try:
            results: list[dict[str, Any]] = orjson.loads(resp.text).get("results", [])
        except (orjson.JSONDecodeError, AttributeError):
            raise SinkError(f"query answer is not InfluxDB JSON: {resp.text.strip()[:200]!r}") from None
        for r in results:
            if "error" in r:
                raise SinkError(f"InfluxQL error: {r['error']} (in {q[:200]!r})")
        return results

    def close(self) -> None:
        self._pool.clear()


class Influx1Sink(WriterSink):
    """The Sink for InfluxDB 1.x (and anything that speaks its /write, e.g. VictoriaMetrics)."""

    def __init__(self, url: str, options: SinkOptions) -> None:
        self.client = Influx1Client(Target.from_url(url), options)
        self._writer = BatchWriter(self._send, options, f"InfluxDB {self.client.target.base}")

    async def _send(self, lines: list[str]) -> Response:
        return await asyncio.to_thread(self.client.write_lines, lines)

    async def close(self) -> None:
        self._writer.state = "closed"
        self.client.close()
