"""Writing points to InfluxDB: one write algorithm, two transports (1.x HTTP /write, 2.x influxdb-client).

`write()` returns only when every point is written or rejected. Errors are classified the way Telegraf does it:
- 2xx: written.
- 400 / 422 (a partial write, a parse error, a field-type conflict, points outside the retention policy): when the
  answer says every point of the request was dropped (InfluxDB's `partial write: ... dropped=N` with N = the points
  sent), all of them are rejected at once with that message. Otherwise the batch is bisected until the bad points are
  isolated (each half is classified the same way); they are rejected with the server's message (dead-letter
  candidates) and the rest is written. InfluxDB 1.x has already stored the good points of a partial write; writing
  them again overwrites them with the same values, so bisecting is safe.
- 413: the batch is split in halves; a single point that is still too large is rejected.
- 401 / 403: SinkAuthError, fatal (the receiver stops acking and exits).
- 404 (database or bucket not found), 429, 5xx, timeouts, connection errors: retried forever with capped, jittered
  exponential backoff; a Retry-After header sets the delay instead. Cancelling the task stops the retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from cloud.lineproto import EncodeError, Encoder
from cloud.model import Point


class SinkError(Exception):
    """A problem with the sink itself (not with one point)."""


class SinkAuthError(SinkError):
    """401/403: the credentials are wrong or lack write permission. Fatal: retrying can't fix it."""


class SinkConfigError(SinkError):
    """The --influx URL or the options can't describe a target."""


class TransportError(SinkError):
    """The request did not get an HTTP answer (connection refused/reset, timeout). Writes retry it forever."""


@dataclass(slots=True)
class Rejected:
    """One point the database refused."""

    index: int  # its position in the points given to write()
    point: Point
    reason: str
    line: str | None  # the line protocol that was sent; None when the point did not encode


@dataclass(slots=True)
class WriteOutcome:
    written: int
    rejects: list[Rejected] = field(default_factory=list)

    @property
    def rejected(self) -> list[tuple[Point, str]]:
        return [(r.point, r.reason) for r in self.rejects]


@dataclass(slots=True, frozen=True)
class SinkOptions:
    timeout_s: float = 10.0
    gzip: bool = True
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = (
        600.0  # a Retry-After larger than this is capped (a typo'd header must not stall us for days)
    )
    # 2.x targets (also settable in the URL query: ?org=..&bucket=..; token only here or via the config/env).
    token: str | None = None
    org: str | None = None
    bucket: str | None = None


@dataclass(slots=True, frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    text: str


Transport = Callable[[bytes], Awaitable[Response]]

# InfluxDB's PartialWriteError ends in `dropped=N` (1.x in {"error": ...}, 2.x in {"message": ...}).
_DROPPED = re.compile(r"dropped=(\d+)$")


class Sink(Protocol):
    @property
    def state(self) -> str:
        """ "idle", "ok", "retrying", "auth_failed" or "closed"."""

    @property
    def last_error(self) -> str | None: ...

    @property
    def last_write_ns(self) -> int | None: ...

    @property
    def failed_attempts(self) -> int:
        """Write attempts that failed and were retried, since the sink opened (a counter, for metrics)."""

    async def write(self, points: Sequence[Point]) -> WriteOutcome: ...

    async def close(self) -> None: ...


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def dropped_all(text: str, sent: int) -> bool:
    """Whether the answer to a refused write says that none of the `sent` points was stored. InfluxDB 1.x counts
    the points one shard refused, or those beyond the retention policy; both are at most the points sent, so a
    count equal to `sent` means that all went to one shard and all were refused, or all were beyond the retention."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    message = body.get("error", body.get("message")) if isinstance(body, dict) else None
    m = _DROPPED.search(message.strip()) if isinstance(message, str) else None
    return m is not None and int(m.group(1)) == sent


class BatchWriter:
    """The write algorithm, independent of the wire: `send(lines)` posts newline-joined lines and answers a Response."""

    def __init__(self, send: Callable[[list[str]], Awaitable[Response]], options: SinkOptions, name: str) -> None:
        self._send = send
        self.options = options
        self.name = name
        self.encoder = Encoder()
        self.state = "idle"
        self.last_error: str | None = None
        self.last_write_ns: int | None = None
        self.attempts_failed = 0  # failed attempts, retried (for metrics)

    async def write(self, points: Sequence[Point]) -> WriteOutcome:
        if self.state == "closed":
            raise SinkError(f"{self.name}: write after close")
        # Encoding 5000 points takes ~15 ms: off the event loop, like the HTTP call.
        lines, index, rejected = await asyncio.to_thread(self._encode, points)
        written = await self._write_lines(points, lines, index, rejected) if lines else 0
        rejected.sort(key=lambda r: r.index)
        return WriteOutcome(written, rejected)

    def _encode(self, points: Sequence[Point]) -> tuple[list[str], Sequence[int], list[Rejected]]:
        """The lines of the points that encode, the index of each line's point, and those that do not encode."""
        line = self.encoder.line
        try:
            # Nearly always: every point encodes. One pass, no per-point bookkeeping (it was ~10 % of the encoding).
            lines = list(map(line, points))
            return lines, range(len(points)), []  # a range slices into ranges: no list of indices
        except EncodeError:
            pass
        lines, index, rejected = [], [], []
        for i, p in enumerate(points):
            try:
                lines.append(line(p))
                index.append(i)
            except EncodeError as e:
                rejected.append(Rejected(i, p, f"not encodable: {e}", None))
        return lines, index, rejected

    async def _write_lines(self, points: Sequence[Point], lines: list[str], index: Sequence[int],
                           rejected: list[Rejected]) -> int:
        """Write `lines` (of points[index[k]]); on a per-point problem, bisect to find and reject those points."""
        resp = await self._send_retrying(lines)
        if 200 <= resp.status < 300:
            return len(lines)
        reason = f"HTTP {resp.status}: {' '.join(resp.text.split())[:500]}"
        if len(lines) == 1 or dropped_all(resp.text, len(lines)):
            # One cause for all of them (the same type conflict, or all beyond the retention policy): bisecting
            # would cost about two requests per point to learn nothing more.
            rejected.extend(Rejected(i, points[i], reason, text) for i, text in zip(index, lines, strict=True))
            return 0
        mid = len(lines) // 2
        return (await self._write_lines(points, lines[:mid], index[:mid], rejected)
                + await self._write_lines(points, lines[mid:], index[mid:], rejected))

    async def _send_retrying(self, lines: list[str]) -> Response:
        """The answer once it is a success or a per-point problem (400/413/422/other 4xx); retries the rest."""
        attempt = 0
        while True:
            try:
                resp = await self._send(lines)
            except TransportError as e:
                delay, error = self._backoff(attempt), str(e)
            else:
                status = resp.status
                if 200 <= status < 300:
                    self.state, self.last_write_ns = "ok", time.time_ns()
                    return resp
                if status in (401, 403):
                    self.state = "auth_failed"
                    self.last_error = f"HTTP {status}: {resp.text.strip()[:300]}"
                    raise SinkAuthError(f"{self.name}: {self.last_error}")
                if status not in (404, 408, 429) and status < 500:
                    return resp
                error = f"HTTP {status}: {' '.join(resp.text.split())[:300]}"
                hinted = retry_after_s(resp.headers.get("Retry-After") or resp.headers.get("retry-after"))
                if hinted is None:
                    delay = self._backoff(attempt)
                else:  # honoured, within bounds: "Retry-After: 0" must not become a busy loop
                    delay = max(0.05, min(hinted, self.options.retry_after_max_s))
            self.state, self.last_error = "retrying", error
            self.attempts_failed += 1
            attempt += 1
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        o = self.options
        ceiling = min(o.backoff_max_s, o.backoff_initial_s * (2 ** min(attempt, 30)))
        # Jitter spreads the retries of several receivers that failed at the same moment.
        return random.uniform(ceiling / 2, ceiling)


class WriterSink:
    """What the 1.x and 2.x sinks share: the Sink protocol on top of a BatchWriter (set as `_writer`)."""

    _writer: BatchWriter

    @property
    def state(self) -> str:
        return self._writer.state

    @property
    def last_error(self) -> str | None:
        return self._writer.last_error

    @property
    def last_write_ns(self) -> int | None:
        return self._writer.last_write_ns

    @property
    def failed_attempts(self) -> int:
        return self._writer.attempts_failed

    async def write(self, points: Sequence[Point]) -> WriteOutcome:
        return await self._writer.write(points)
