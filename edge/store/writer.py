"""StoreWriter: collects readings on the event loop and commits them in batches (every <= max_delay_s or max_rows)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from edge.metrics import Counters
from edge.model import Reading
from edge.store.store import Store


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
        elif n >= self.max_rows and self._full is not None:
            self._full.set()

    def _take(self) -> list[Reading]:
        batch, self._pending = self._pending, []
        return batch

    def _commit(self, batch: list[Reading]) -> int:
        with self._commit_lock:
            stored = 0
            for start in range(0, len(batch), self.max_rows):
                stored += self.store.add(batch[start:start + self.max_rows])
            self.committed += stored
        counters = self.counters
        counters.inc("readings_stored", stored)
        for name, n in self.store.take_counts().items():
            counters.inc(name, n)
        return stored

    def flush(self) -> int:
        """Commit everything pending now; returns how many readings were stored."""
        batch = self._take()
        if not batch:
            return 0
        return self._commit(batch)

    async def run(self) -> None:
        """Commit batches until cancelled; on cancellation, what is pending stays for a final flush()."""
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        if self._pending:
            self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            remaining = self._first_at + self.max_delay_s - time.monotonic()
            if remaining > 0 and len(self._pending) < self.max_rows:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._take()
            # The commit runs in a thread: SQLite releases the GIL while it writes, so decoding goes on meanwhile.
            await asyncio.to_thread(self._commit, batch)
