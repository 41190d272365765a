"""StoreWriter: collects readings on the event loop and commits them in batches (every <= max_delay_s or max_rows)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from core.ratelog import RateLimitedLog
from edge.metrics import Counters
from edge.model import Reading
from edge.store.model import StoreError
from edge.store.store import Store

log = logging.getLogger(__name__)
# A dead disk fails every commit; say so every few seconds, not at the rate readings come in.
_failed = RateLimitedLog(log, 10.0)

RETRY_S = 1.0
MAX_PENDING_BATCHES = 100  # readings kept in memory while commits fail: 50k at 500 rows per batch
HIGH_WATER_BATCHES = 4  # past this many batches pending, put() commits inline: backpressure on the source


class StoreWriter:
    """Batches readings into store transactions.

    `put()` only appends to a list (call it from the event loop thread). `run()` commits a batch once it holds
    `max_rows` readings or its first reading has waited `max_delay_s`. `flush()` commits what is pending now.
    A reading counts as committed once the transaction holding it returns; `committed` is their running total.
    """

    def __init__(self, store: Store, counters: Counters, *, max_rows: int = 500, max_delay_s: float = 0.1) -> None:
        self.store = store
        self.counters = counters
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.committed = 0
        self.on_commit: Callable[[], None] | None = None  # told after each commit that stored rows (the uplink)
        self._pending: list[Reading] = []
        self._first_at = 0.0
        self._wake: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        # flush() may be called from another coroutine while run() commits in its worker thread.
        self._commit_lock = threading.Lock()

    def put(self, reading: Reading) -> None:
        pending = self._pending
        pending.append(reading)
        n = len(pending)
        if n == 1:
            self._first_at = time.monotonic()
            if self._wake is not None:
                self._wake.set()
        elif n >= self.max_rows:
            if self._full is not None:
                self._full.set()
            if n >= HIGH_WATER_BATCHES * self.max_rows:
                # A source faster than the disk (simulate or replay at full speed) would otherwise grow this list
                # without bound. Committing here blocks the event loop, which slows the source down to what
                # SQLite takes; a radio source never gets here (its adverts come in hundreds per second).
                self._commit_inline()

    @property
    def pending(self) -> int:
        """Readings in memory, not yet committed."""
        return len(self._pending)

    def _take(self, n: int) -> list[Reading]:
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    def _requeue(self, batch: list[Reading]) -> None:
        """Put a batch that failed to commit back in front, bounded: past MAX_PENDING_BATCHES batches in memory
        the oldest are dropped (and counted), so a dead disk does not also exhaust the memory."""
        self._pending[:0] = batch
        excess = len(self._pending) - MAX_PENDING_BATCHES * self.max_rows
        if excess > 0:
            del self._pending[:excess]
            self.counters.inc("readings_dropped_cap", excess)

    def _commit(self, batch: list[Reading]) -> int:
        with self._commit_lock:
            stored = self.store.add(batch)
            self.committed += stored
        if stored and self.on_commit is not None:
            self.on_commit()
        counters = self.counters
        counters.inc("readings_stored", stored)
        for name, n in self.store.take_counts().items():
            counters.inc(name, n)
        return stored

    def _commit_inline(self) -> None:
        while len(self._pending) > self.max_rows * HIGH_WATER_BATCHES // 2:
            batch = self._take(self.max_rows)
            try:
                self._commit(batch)
            except StoreError as e:
                _failed.error("store: commit of %d readings failed: %s", len(batch), e)
                self._requeue(batch)
                return

    def flush(self) -> int:
        """Commit everything pending now, in max_rows transactions; returns how many readings were stored.
        Raises StoreError if a transaction fails (what it held stays pending)."""
        stored = 0
        while self._pending:
            batch = self._take(self.max_rows)
            try:
                stored += self._commit(batch)
            except StoreError:
                self._requeue(batch)
                raise
        return stored

    async def run(self) -> None:
        """Commit batches until cancelled; on cancellation, what is pending stays for a final flush().

        A failed commit (disk full, I/O error) is logged and retried every RETRY_S with the readings kept."""
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            remaining = self._first_at + self.max_delay_s - time.monotonic()
            if remaining > 0 and len(self._pending) < self.max_rows:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._take(self.max_rows)
            try:
                # In a thread: SQLite releases the GIL while it writes, so decoding goes on meanwhile.
                await asyncio.to_thread(self._commit, batch)
            except StoreError as e:
                _failed.error("store: commit of %d readings failed, retrying in %g s: %s", len(batch), RETRY_S, e)
                self._requeue(batch)
                await asyncio.sleep(RETRY_S)
