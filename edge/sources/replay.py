"""`replay:FILE` and the recorder behind `edge-gw scan --record FILE`.

Capture format (JSON lines, UTF-8, one object per line):

    {"format": "edge-gw-capture", "version": 1, "started_ns": 1763913600123456789}
    {"t": 0.0, "mac": "cb:b8:33:4c:88:4f", "rssi": -71, "data": "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"}
    {"t": 0.412807, "mac": "d1:22:33:44:55:66", "rssi": null, "data": "0517..."}

The first line is the header; `started_ns` is the Unix time of the first advert (informational). Every other line is
one advert: `t` = seconds since the first advert (float, >= 0), `mac` = lower-case colon-separated address, `rssi` =
dBm or null, `data` = hex of the manufacturer data after company id 0x0499 (what `core.ruuvi.decode` takes). Blank
lines are ignored. A bad line is counted, logged with its number and skipped; replay goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from edge.model import Advert
from edge.sources.base import Emit, SourceError, SourceOptions

log = logging.getLogger(__name__)

FORMAT = "edge-gw-capture"
VERSION = 1
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_LOGGED_BAD_LINES = 20  # after this many, only the count grows (a corrupt file must not flood the log)
_FLUSH_S = 1.0


class Recorder:
    """Writes a capture. `t_s` is a receive time in seconds on any monotonic clock (e.g. `time.monotonic()`);
    the file stores it relative to the first advert written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.written = 0
        self._file: IO[bytes] | None = None
        self._t0: float | None = None
        self._flushed = time.monotonic()

    def __enter__(self) -> Recorder:
        self._file = self.path.open("wb")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def write(self, advert: Advert, t_s: float) -> None:
        if self._file is None:
            raise SourceError(f"recorder {self.path}: not open (use it as a context manager)")
        if self._t0 is None:
            self._t0 = t_s
            header = {"format": FORMAT, "version": VERSION, "started_ns": time.time_ns()}
            self._file.write(orjson.dumps(header) + b"\n")
        line = {"t": round(max(t_s - self._t0, 0.0), 6), "mac": advert.mac.lower(), "rssi": advert.rssi,
                "data": advert.payload.hex()}
        self._file.write(orjson.dumps(line) + b"\n")
        self.written += 1
        now = time.monotonic()
        if now - self._flushed >= _FLUSH_S:  # a killed `scan --record` keeps all but the last second
            self._file.flush()
            self._flushed = now

    def close(self) -> None:
        if self._file is not None:
            if self._t0 is None:  # an empty capture still gets its header, so replay accepts it
                header = {"format": FORMAT, "version": VERSION, "started_ns": time.time_ns()}
                self._file.write(orjson.dumps(header) + b"\n")
            self._file.close()
            self._file = None


def parse_line(line: bytes) -> tuple[float, Advert]:
    """One advert line -> (t, Advert). Raises ValueError saying what is wrong."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    t, mac, rssi, data = obj.get("t"), obj.get("mac"), obj.get("rssi"), obj.get("data")
    if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
        raise ValueError(f"'t' must be a number >= 0, got {t!r}")
    if not isinstance(mac, str) or not _MAC.match(mac.lower()):
        raise ValueError(f"'mac' must look like aa:bb:cc:dd:ee:ff, got {mac!r}")
    if rssi is not None and (isinstance(rssi, bool) or not isinstance(rssi, int)):
        raise ValueError(f"'rssi' must be an integer or null, got {rssi!r}")
    if not isinstance(data, str) or not data:
        raise ValueError(f"'data' must be a non-empty hex string, got {data!r}")
    try:
        payload = bytes.fromhex(data)
    except ValueError:
        raise ValueError(f"'data' is not hex: {data[:40]!r}") from None
    return float(t), Advert(mac.lower(), payload, rssi)


def check_header(line: bytes, path: Path) -> None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise SourceError(f"replay {path}: line 1 is not an edge-gw capture header "
                          f'(expected {{"format": "{FORMAT}", "version": {VERSION}, ...}})')
    if obj.get("version") != VERSION:
        raise SourceError(f"replay {path}: capture version {obj.get('version')!r} is not supported "
                          f"(this edge-gw reads version {VERSION})")


class ReplaySource:
    def __init__(self, path: str | Path, options: SourceOptions) -> None:
        self.path = Path(path)
        self.options = options
        self.emitted = 0
        self.bad_lines = 0
        self.last_error = ""
        self.finished = False
        try:
            with self.path.open("rb") as f:
                first = f.readline()
        except OSError as e:
            raise SourceError(f"replay {self.path}: cannot read the capture ({e.strerror or e})") from None
        check_header(first, self.path)

    def state(self) -> dict[str, Any]:
        return {"kind": "replay", "file": str(self.path), "realtime": self.options.realtime,
                "emitted": self.emitted, "bad_lines": self.bad_lines, "last_error": self.last_error,
                "finished": self.finished}

    def _bad(self, number: int, why: str) -> None:
        self.bad_lines += 1
        self.last_error = f"line {number}: {why}"
        if self.bad_lines <= _LOGGED_BAD_LINES:
            log.warning("replay %s: skipping line %d: %s", self.path, number, why)
        elif self.bad_lines == _LOGGED_BAD_LINES + 1:
            log.warning("replay %s: more bad lines; counting them without logging each", self.path)

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        count, realtime = self.options.count, self.options.realtime
        start = loop.time()
        try:
            with self.path.open("rb") as f:
                f.readline()  # the header, checked in __init__
                for number, line in enumerate(f, start=2):
                    if count is not None and self.emitted >= count:
                        return
                    if not line.strip():
                        continue
                    try:
                        t, advert = parse_line(line)
                    except ValueError as e:
                        self._bad(number, str(e))
                        continue
                    if realtime:
                        wait = start + t - loop.time()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    elif self.emitted % 1024 == 0:
                        await asyncio.sleep(0)  # stay cancellable
                    emit(advert)
                    self.emitted += 1
        except OSError as e:
            raise SourceError(f"replay {self.path}: read failed ({e.strerror or e})") from None
        finally:
            self.finished = True
        if self.bad_lines:
            log.warning("replay %s: %d bad line(s) skipped; last: %s", self.path, self.bad_lines, self.last_error)
