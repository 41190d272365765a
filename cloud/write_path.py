"""The write path: a batch of (message, points) pairs in, every message acknowledged once its points are stored.

For each batch, in this order:
1. dedup: drop copies of points already written (cross-gateway, and redelivered or re-sent copies);
2. sink: write the rest; the database may refuse single points (a field type conflict, ...);
3. journal: remember what was written, so that dedup survives a restart. After the write, never before: a journaled
   point counts as written, so its redelivered copy would be dropped;
4. dead letters: the messages that failed to parse, the readings refused one by one (a timestamp out of bounds,
   `Message.refused`) and the points the database refused go to the dead-letter topic, one record each, and the path
   waits for each one's PUBACK: a message is acknowledged only once its dead letters are safe;
5. confirmations: per gateway, the `seq`s of its edge-gw batches in this batch (docs/wire-format.md "Confirmation");
   published, not waited for: a lost confirmation only makes the gateway send again, and step 1 drops the copies;
6. acknowledgement, in the order the batches came in, whatever order several writers finish them in.

Nothing here knows MQTT: an input hands over Message objects that know their topic, their gateway and edge-gw
`seq`, and how to acknowledge themselves, and a `publish(topic, payload)` for dead letters and confirmations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import msgspec

from cloud import dlq
from cloud.batcher import Batch
from cloud.dedup import Dedup, Entry
from cloud.dedup_journal import DedupJournal, JournalError
from cloud.model import Point, Refused
from cloud.monitor import Monitor
from cloud.sinks.base import Sink, SinkAuthError
from core.wire import WireError, confirm_topic, encode_confirms

log = logging.getLogger("cloud.receiver")


@dataclass(slots=True)
class ParseFailure:
    """Why a message could not be parsed; it goes to the dead-letter topic as it came."""

    payload: bytes
    reason: str
    time_ns: int


class Message(msgspec.Struct, eq=False):
    """One input message of a batch. Inputs subclass it with how to acknowledge it.

    A msgspec Struct, not a dataclass: one is made per message, 2,200 instructions against 4,000 (callgrind).
    eq=False: each message is itself (identity equality and hash: inputs keep them in sets)."""

    topic: str
    gateway: str | None = None
    seq: int | None = None  # an edge-gw batch's seq: confirmed to `gateway` once the message is handled
    failure: ParseFailure | None = None
    refused: list[Refused] = msgspec.field(default_factory=list)  # dead-lettered on their own; the rest is written

    def acknowledge(self) -> None:
        raise NotImplementedError


class Publish(Protocol):
    """QoS 1 publish: returns once the message is sent, with an awaitable that completes on its PUBACK."""

    def __call__(self, topic: str, payload: bytes) -> Awaitable[Awaitable[None]]: ...


class DeadLetter(Protocol):
    """Sends one dead letter: returns once it is sent, with an awaitable that completes once it is safe (its PUBACK,
    or Kafka's acknowledgement). The default (WritePath.mqtt_dead_letter) wraps it in a JSON record (cloud/dlq.py)
    for the MQTT dead-letter topic; the Kafka path sends the payload as it came, the reason in headers."""

    def __call__(self, topic: str, payload: bytes, reason: str, stage: str,
                 time_ns: int) -> Awaitable[Awaitable[None]]: ...


class AfterWrite(Protocol):
    async def after_write(self, points: Sequence[Point]) -> None: ...


@dataclass(frozen=True, slots=True)
class WritePathSettings:
    receiver: str  # the client id, in every dead-letter record
    dlq_topic: str = "edge-gw/dlq"
    dlq_max_payload: int = 65536
    confirm: bool = True


def confirmations(batch: Sequence[Message]) -> list[tuple[str, bytes]]:
    """(topic, payload) of the confirmations for these messages: per gateway, its seqs merged into ranges
    (core.wire.encode_confirms), to `<prefix>/<gateway>/confirm` where `<prefix>` is the batch topic without its last
    two levels."""
    seqs: dict[tuple[str, str], list[int]] = {}
    for msg in batch:
        if msg.seq is not None and msg.gateway is not None:
            prefix = msg.topic.rsplit("/", 2)[0]
            seqs.setdefault((prefix, msg.gateway), []).append(msg.seq)
    out: list[tuple[str, bytes]] = []
    for (prefix, gateway), gw_seqs in seqs.items():
        try:
            topic = confirm_topic(prefix, gateway)
            out.extend((topic, payload) for payload in encode_confirms(gateway, gw_seqs))
        except WireError as e:
            # A topic the wire format does not allow (the formats config accepts any filter): nobody can be told.
            log.warning("cannot confirm to gateway %r under %r: %s", gateway, prefix, e)
    return out


class WritePath:
    def __init__(self, settings: WritePathSettings, *, sink: Sink, publish: Publish, monitor: Monitor,
                 dedup: Dedup | None = None, journal: DedupJournal | None = None,
                 rollups: AfterWrite | None = None, alerts: AfterWrite | None = None,
                 dead_letter: DeadLetter | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.sink = sink
        self.publish = publish
        self.monitor = monitor
        self.dedup = dedup
        self.journal = journal
        self.rollups = rollups
        self.alerts = alerts  # alerts on the data (cloud/alert_hook.py): sees what was stored
        self.send_dead_letter: DeadLetter = dead_letter or self.mqtt_dead_letter
        self._clock = clock
        self._journal_failed = False
        # One thread of its own: SQLite's commit (and now and then a WAL checkpoint) waits for the disk, which must
        # not hold up the event loop; one thread keeps the journal's writes in order and its connection single-user.
        self._journal_thread = ThreadPoolExecutor(1, "dedup-journal") if journal is not None else None
        self._next_ticket = 0  # batches in the order write() was called
        self._next_ack = 0
        self._done: dict[int, Batch[Message]] = {}
        # For tests: when set, ("confirm", topic, payload) and ("ack", topic) events in the order they happened.
        self.trace: list[tuple[str, ...]] | None = None

    async def write(self, batch: Batch[Message]) -> None:
        """Handle the batch up to its acknowledgement (which waits for the batches handed over before it). Raises
        SinkAuthError or a bug's exception: then nothing of the batch is acknowledged."""
        ticket = self._next_ticket
        self._next_ticket += 1
        await self._handle(batch)
        self._done[ticket] = batch
        self._acknowledge_in_order()

    async def _handle(self, batch: Batch[Message]) -> None:
        t0 = time.monotonic()
        items = batch.items
        # Comprehensions, not a loop of extend() calls: a batch of one-reading messages has 10,000 of them.
        points = [p for _, pts in items for p in pts]
        owners: list[Message] | None = None  # the message of each point, worked out only if a point is dropped
        entries: list[Entry | None] | None = None  # the journal's, per point (None: not worked out)
        if self.dedup is not None and points:
            result = self.dedup.filter(points)
            if len(result.kept) != len(points):  # else the same points: the same owners
                owners = _owners_of(result.kept, points, [m for m, pts in items for _ in pts])
            points = result.kept
            entries = result.entries
            self.monitor.duplicates(result.duplicates, result.redeliveries)
        dead: list[Awaitable[None]] = []
        for msg in [m for m, _ in items if m.failure is not None or m.refused]:
            if msg.failure is not None:
                f = msg.failure
                dead.append(await self._dead_letter(msg.topic, f.payload, f.reason, "parse", f.time_ns))
            for refused in msg.refused:
                dead.append(await self._dead_letter(msg.topic, refused.payload, refused.reason, "reading",
                                                    self._clock()))
                self.monitor.refused(refused.kind)
        if points:
            outcome = await self.sink.write(points)
            written = points
            if outcome.rejects:
                now_ns = self._clock()
                if owners is None:
                    owners = [m for m, pts in items for _ in pts]
                for r in outcome.rejects:
                    line = (r.line if r.line is not None else repr(r.point)).encode()
                    dead.append(await self._dead_letter(owners[r.index].topic, line, r.reason, "write", now_ns))
                bad = {r.index for r in outcome.rejects}
                written = [p for i, p in enumerate(points) if i not in bad]
                if entries is not None:
                    entries = [e for i, e in enumerate(entries) if i not in bad]
            if self.journal is not None and written:
                await self._journal(written, entries)
            if self.rollups is not None and outcome.written:
                try:
                    await self.rollups.after_write(written)
                except SinkAuthError:
                    raise
                except Exception:
                    # The raw points are stored; a failed late-data rollup is logged, not worth a redelivery.
                    log.exception("re-running the rollups for late data failed")
            if self.alerts is not None and written:
                try:
                    await self.alerts.after_write(written)
                except Exception:
                    log.exception("evaluating alerts failed")  # the points are stored; alerts must not block them
            self.monitor.written(outcome.written, max([p.time_ns for p in points]), self._clock())
        if dead:
            await asyncio.gather(*dead)
        if self.settings.confirm:
            await self._confirm([m for m, _ in items if m.seq is not None])
        self.monitor.batch_written(batch, len(points), time.monotonic() - t0)

    async def _dead_letter(self, topic: str, payload: bytes, reason: str, stage: str,
                           time_ns: int) -> Awaitable[None]:
        acked = await self.send_dead_letter(topic, payload, reason, stage, time_ns)
        self.monitor.dead_letter(stage, topic, reason)
        return acked

    async def mqtt_dead_letter(self, topic: str, payload: bytes, reason: str, stage: str,
                               time_ns: int) -> Awaitable[None]:
        s = self.settings
        record = dlq.record(topic=topic, payload=payload, reason=reason, stage=stage, time_ns=time_ns,
                            receiver=s.receiver, max_payload=s.dlq_max_payload)
        return await self.publish(s.dlq_topic, record)

    async def _confirm(self, messages: list[Message]) -> None:
        out = confirmations(messages)
        for topic, payload in out:
            await self.publish(topic, payload)
            if self.trace is not None:
                self.trace.append(("confirm", topic, payload.decode()))
        if out:
            seqs = {(m.topic.rsplit("/", 2)[0], m.gateway, m.seq) for m in messages if m.seq is not None and m.gateway}
            self.monitor.confirmed(len(out), len(seqs))

    def close(self) -> None:
        """Wait for the journal write in flight (a cancelled writer leaves it running), so the journal can close."""
        if self._journal_thread is not None:
            self._journal_thread.shutdown(wait=True)

    async def _journal(self, written: list[Point], entries: list[Entry | None] | None) -> None:
        journal, thread = self.journal, self._journal_thread
        assert journal is not None and thread is not None
        loop = asyncio.get_running_loop()
        try:
            if entries is None:
                await loop.run_in_executor(thread, journal.record, written)
            else:
                await loop.run_in_executor(thread, journal.record_entries, [e for e in entries if e is not None])
        except JournalError as e:
            # The memory in this process is still right; only a restart could now write a copy twice.
            if not self._journal_failed:
                log.error("cannot record written points for dedup (a restart may write copies again): %s", e)
            self._journal_failed = True
        else:
            if self._journal_failed:
                log.info("dedup state file writable again")
            self._journal_failed = False

    def _acknowledge_in_order(self) -> None:
        # Several writers may finish out of order; acknowledging strictly in order keeps the rule "a redelivered
        # copy is acknowledged only after the first copy was written" (cloud/receiver.py).
        while self._next_ack in self._done:
            batch = self._done.pop(self._next_ack)
            self._next_ack += 1
            trace = self.trace
            for msg, _ in batch.items:
                if trace is not None:
                    trace.append(("ack", msg.topic))
                msg.acknowledge()


def _owners_of(kept: list[Point], points: list[Point], owners: list[Message]) -> list[Message]:
    """The messages of `kept`, a subsequence of `points` in their order (what Dedup.filter returns)."""
    out: list[Message] = []
    j, n = 0, len(kept)
    for p, owner in zip(points, owners, strict=True):
        if j < n and kept[j] is p:
            out.append(owner)
            j += 1
    return out
