"""Fill a gap from the tag's own memory: read a RuuviTag's log over GATT (Nordic UART service) after an outage.

Protocol (docs.ruuvi.com, communication/bluetooth-connection/nordic-uart-service-nus/log-read): the central writes
0x3A 3A 11 + now (u32 BE, s) + since (u32 BE, s) to the NUS RX characteristic; the tag notifies on TX, for each
logged time >= since, 0x3A 30 10 (temperature, i32 0.01 C), 0x3A 31 10 (humidity, u32 0.01 %RH) and 0x3A 32 10
(pressure, u32 Pa), each + time (u32 BE) + value (BE), then 0x3A 3A 10 FF*8. A header with type 0xF0 is an error.
The log always runs to its end: there is no upper bound to ask for.

Why not ruuvitag-sensor's `get_history_async` (4.1.0): it decodes the value as the low 16 bits unsigned (a negative
temperature comes out near 655 C, pressure above 65535 Pa wraps), it takes "now" from the host clock with no say
for the caller, it cannot pick the adapter nor take a known BLEDevice (so it always discovers on its own, which
BlueZ refuses while the gateway scans: InProgress), and when the notifications stop (a dropped link) it logs and
ends the stream as if the log were complete, so a cut-off download could not be told from a finished one.

What wins: a reading heard live is kept; history fills only the open interval between the last live reading
before the gap and the first one after it, so a measurement is never stored from both paths (a live advert carries
more: sequence number, battery, acceleration, RSSI). History readings carry data_format HISTORY_FORMAT (0x3A = 58),
fields {data_format, temperature, humidity, pressure} and the tag's own timestamps; they reach InfluxDB as points
with the tag data_format="58" (docs/history.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.model import HISTORY_FORMAT, Reading

log = logging.getLogger("edge.history")

NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
_ENV = 0x3A
_READ = 0x11
_WRITE = 0x10
_ERROR = 0xF0
_FIELDS = {0x30: "temperature", 0x31: "humidity", 0x32: "pressure"}


class HistoryError(Exception):
    """A download that did not reach the end of the log (timeout, dropped link, error reply)."""


class NoHistory(HistoryError):
    """The tag has no Nordic UART service: no log to read (firmware before 3.30, or another device)."""


def read_command(now_s: int, since_s: int) -> bytes:
    return bytes([_ENV, _ENV, _READ]) + now_s.to_bytes(4, "big") + max(0, since_s).to_bytes(4, "big")


@dataclass(slots=True)
class Record:
    """One logged measurement: all three values at one tag time."""

    time_s: int
    temperature: float
    humidity: float
    pressure: int
    raw: bytes


class LogParser:
    """Assembles notifications into Records. A record is complete when its three values are in (a partial one,
    cut by a new time or the end marker, is dropped). `done` once the end marker came."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.done = False
        self.error = ""
        self._time: int | None = None
        self._values: dict[str, int] = {}
        self._raw = b""

    def feed(self, data: bytes) -> None:
        if len(data) < 3 or self.done:
            return
        if data[2] == _ERROR:
            self.error = f"the tag reported an error: {data.hex()}"
            self.done = True
            return
        if len(data) != 11 or data[2] != _WRITE:
            return  # heartbeats and other NUS traffic
        if data[1] == _ENV and data[3:] == b"\xff" * 8:
            self._complete()
            self.done = True
            return
        name = _FIELDS.get(data[1])
        if name is None:
            return
        t = int.from_bytes(data[3:7], "big")
        if t != self._time:
            self._complete()
            self._time = t
        self._values[name] = int.from_bytes(data[7:11], "big", signed=name == "temperature")
        self._raw += data
        if len(self._values) == 3:
            self._complete()  # all three values in: hand it over now, a dropped link cannot lose it

    def _complete(self) -> None:
        v = self._values
        if self._time is not None and len(v) == 3:
            self.records.append(Record(self._time, v["temperature"] / 100, v["humidity"] / 100, v["pressure"],
                                       self._raw))
        self._time, self._values, self._raw = None, {}, b""


async def read_log(mac: str, since_s: int, now_s: int, *, adapter: str | None, timeout_s: float,
                   on_record: Callable[[Record], None], device: Any = None) -> int:
    """Connect, ask for the log since `since_s`, hand each complete record over as it comes, disconnect.

    Returns the number of records. Raises NoHistory when the tag has no NUS, HistoryError when the log did not end
    (records handed over before that stay valid: resume after the last one)."""
    from bleak import BleakClient, BleakScanner
    from bleak.exc import BleakError

    kwargs: dict[str, Any] = {"bluez": {"adapter": adapter}} if adapter else {}
    parser = LogParser()
    handed = 0
    ended = asyncio.Event()
    dropped = asyncio.Event()

    def pass_on() -> None:
        nonlocal handed
        while handed < len(parser.records):
            on_record(parser.records[handed])
            handed += 1

    def notified(_: Any, data: bytearray) -> None:
        parser.feed(bytes(data))
        pass_on()
        if parser.done:
            ended.set()

    try:
        async with asyncio.timeout(timeout_s):
            if device is None:
                # No scanner of ours knows it: find it with a discovery of our own (the gateway's bleak source
                # hands over its BLEDevice instead; see edge/sources/ble.py BleakSource.devices).
                device = await BleakScanner.find_device_by_address(mac, timeout=timeout_s, **kwargs)
            if device is None:
                raise HistoryError(f"{mac}: not found")
            async with BleakClient(device, disconnected_callback=lambda _: dropped.set(), timeout=timeout_s,
                                   **kwargs) as client:
                service = client.services.get_service(NUS_SERVICE)
                if service is None or service.get_characteristic(NUS_TX) is None:
                    raise NoHistory(f"{mac}: no Nordic UART service")
                await client.start_notify(NUS_TX, notified)
                await client.write_gatt_char(NUS_RX, read_command(now_s, since_s), response=False)
                waits = {asyncio.create_task(ended.wait()), asyncio.create_task(dropped.wait())}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
    except TimeoutError:
        raise HistoryError(f"{mac}: timed out after {timeout_s:g} s with {handed} records") from None
    except BleakError as e:
        raise HistoryError(f"{mac}: {e}") from None
    if parser.error:
        raise HistoryError(f"{mac}: {parser.error}")
    if not parser.done:
        raise HistoryError(f"{mac}: the link dropped after {handed} records")
    return handed


# ---- the scheduler ------------------------------------------------------------------------------------------------

@dataclass
class HistorySettings:
    enabled: bool = False
    gap_threshold_s: float = 300.0
    max_interval_s: float = 10 * 86400.0
    timeout_s: float = 120.0
    backoff_min_s: float = 60.0
    backoff_max_s: float = 3600.0
    include: list[str] = field(default_factory=list)  # empty: every tag
    exclude: list[str] = field(default_factory=list)
    adapter: str | None = None


@dataclass
class TagHistory:
    """What `edge-gw status` shows for one tag (JSON-safe)."""

    state: str = "idle"  # idle, pending, running, unsupported
    # The open intervals [from_s, to_s] still to fetch, oldest first: (last live reading before a gap, first one
    # after it). Apart, not merged: live readings lie between two gaps, and those win.
    gaps: list[list[int]] = field(default_factory=list)
    records: int = 0
    downloads: int = 0
    failures: int = 0
    last_error: str = ""
    retry_at: float = 0.0  # monotonic s; not shown
    in_a_row: int = 0  # failures since the last complete read, for the backoff; not shown


class HistoryFiller:
    """Finds gaps in each tag's live stream and fetches them, one download at a time.

    `observe` sees every live reading (on the advert path: a dict lookup and a compare). A gap is the time between
    two live readings of a tag longer than the threshold, or between the tag's last reading in the buffer (from
    before a restart, `last_seen`) and its first one now. `put` takes the history readings (the buffer's writer).
    One read serves all of a tag's open gaps: the log always runs to its end, so it starts at the oldest gap and
    each record is kept only if it falls strictly inside one.
    """

    def __init__(self, settings: HistorySettings, put: Callable[[Reading], None],
                 last_seen: dict[str, int] | None = None, *,
                 mono: Callable[[], float] = time.monotonic, wall_s: Callable[[], int] = lambda: int(time.time()),
                 reader: Callable[..., Any] = read_log, device_for: Callable[[str], Any] | None = None) -> None:
        self.settings = settings
        self.put = put
        self.mono = mono
        self.wall_s = wall_s
        self.reader = reader
        self.device_for = device_for
        self.tags: dict[str, TagHistory] = {}
        self.counts = {"history_downloads": 0, "history_records": 0, "history_failures": 0}
        self._last_ns: dict[str, int] = dict(last_seen or {})
        self._wake = asyncio.Event()
        self._include = {m.lower() for m in settings.include}
        self._exclude = {m.lower() for m in settings.exclude}

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Take over what an earlier run saved (`report()`, kept in the buffer's status): a tag found without
        history is not asked again, and a gap still open is fetched, even though this run's first live reading
        has already moved the tag's last seen past it."""
        for mac, t in saved.items():
            state = t.get("state")
            gaps = [[int(a), int(b)] for a, b in t.get("gaps") or [] if int(a) < int(b) - 1]
            if state == "unsupported":
                self.tags[mac] = TagHistory(state="unsupported", last_error=str(t.get("last_error", "")))
            elif gaps:
                self.tags[mac] = TagHistory(state="pending", gaps=gaps, records=int(t.get("records", 0)),
                                            last_error=str(t.get("last_error", "")))
        if self.tags:
            self._wake.set()

    def wanted(self, mac: str) -> bool:
        return (not self._include or mac in self._include) and mac not in self._exclude

    def observe(self, reading: Reading) -> None:
        if not reading.clock_synced:
            return  # its time is corrected later; a gap measured with it would be wrong, and so would the read
        mac, now_ns = reading.mac, reading.time_ns
        last = self._last_ns.get(mac)
        self._last_ns[mac] = now_ns
        if last is None or now_ns - last <= self.settings.gap_threshold_s * 1e9 or not self.wanted(mac):
            return
        tag = self.tags.setdefault(mac, TagHistory())
        if tag.state == "unsupported":
            return  # asked once; its answer does not change without a firmware update
        # Whole seconds, as the log's times: the gap is the open interval between the two live readings.
        start = max(last // 1_000_000_000, now_ns // 1_000_000_000 - int(self.settings.max_interval_s))
        tag.gaps.append([start, -(-now_ns // 1_000_000_000)])
        if tag.state != "running":
            tag.state = "pending"
        self._wake.set()

    def _next(self) -> tuple[str, TagHistory] | None:
        now = self.mono()
        due = [(t.retry_at, mac, t) for mac, t in self.tags.items() if t.state == "pending" and t.retry_at <= now]
        return min(due)[1:] if due else None

    async def run(self) -> None:
        while True:
            nxt = self._next()
            if nxt is None:
                self._wake.clear()
                retry = [t.retry_at for t in self.tags.values() if t.state == "pending"]
                delay = max(0.05, min(retry) - self.mono()) if retry else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            await self.fetch(*nxt)

    async def fetch(self, mac: str, tag: TagHistory) -> None:
        tag.state = "running"
        tag.downloads += 1
        self.counts["history_downloads"] += 1
        asked = len(tag.gaps)  # gaps found during the read may end after the log it sends

        def on_record(r: Record) -> None:
            for gap in tag.gaps:
                if r.time_s <= gap[0]:
                    return  # before this gap (live readings cover it) or already handed over
                if r.time_s < gap[1]:
                    # Inside: keep it, and move the gap's start past it, so a resumed read hands over nothing
                    # twice. The live readings at the gap's ends win over records at the same second.
                    gap[0] = r.time_s
                    self._keep(mac, tag, r)
                    return
                gap[0] = gap[1]  # the log has passed this gap's end: it is complete

        try:
            device = None if self.device_for is None else self.device_for(mac)
            await self.reader(mac, tag.gaps[0][0] + 1, self.wall_s(), adapter=self.settings.adapter,
                              timeout_s=self.settings.timeout_s, on_record=on_record, device=device)
        except NoHistory as e:
            tag.state, tag.last_error, tag.gaps = "unsupported", str(e), []
            log.info("%s: no history over GATT; not asked again", mac)
            return
        except HistoryError as e:
            tag.failures += 1
            tag.in_a_row += 1
            self.counts["history_failures"] += 1
            tag.last_error = str(e)
            backoff = min(self.settings.backoff_max_s, self.settings.backoff_min_s * 2 ** (tag.in_a_row - 1))
            tag.retry_at = self.mono() + backoff
            self._drop_closed(tag)
            tag.state = "pending" if tag.gaps else "idle"
            log.warning("history download failed (retry in %.0f s): %s", backoff, e)
            return
        # The log was read to its end marker: the gaps asked for are complete (their ends are live readings heard
        # before the read began); one found during the read may end after what the tag sent, and stays.
        for gap in tag.gaps[:asked]:
            gap[0] = gap[1]
        self._drop_closed(tag)
        tag.state = "pending" if tag.gaps else "idle"
        tag.in_a_row = 0
        tag.retry_at = 0.0

    @staticmethod
    def _drop_closed(tag: TagHistory) -> None:
        tag.gaps = [g for g in tag.gaps if g[0] < g[1] - 1]  # (a, a + 1) holds no whole second

    def _keep(self, mac: str, tag: TagHistory, r: Record) -> None:
        tag.records += 1
        self.counts["history_records"] += 1
        # The wire format's canonical key order (docs/wire-format.md); no sequence number, so the cloud's
        # cross-gateway dedup passes it and the point identity (gateway, mac, time) absorbs re-sends.
        fields: dict[str, Any] = {"data_format": HISTORY_FORMAT, "temperature": r.temperature,
                                  "humidity": r.humidity, "pressure": r.pressure}
        self.put(Reading(mac, r.time_s * 1_000_000_000, time.monotonic_ns(), True, None, HISTORY_FORMAT, r.raw,
                         fields))

    def report(self) -> dict[str, dict[str, Any]]:
        hidden = ("retry_at", "in_a_row")
        return {mac: {k: v for k, v in vars(t).items() if k not in hidden} for mac, t in sorted(self.tags.items())}
