"""The batches the uplink has sent and not yet finished with. Pure: the caller passes the monotonic time in.

A batch goes buffered → sent (published, waiting for the broker's PUBACK) → confirmed → deleted. In `cloud` mode
the PUBACK only moves it on to "awaiting confirmation", and the cloud's confirmation of its `seq`
(docs/wire-format.md, "Confirmation") is what lets the uplink delete its readings. In `broker` mode, for a receiver
that does not confirm, the PUBACK is enough. A confirmation may even arrive before the PUBACK on a busy link; the
batch is then done at once, and its PUBACK is only bookkeeping.

A batch that waits longer than the confirmation timeout after its PUBACK is handed back for a re-send (under a new
seq), and the timeout doubles while that keeps happening, up to `max_factor` times the setting: a receiver that is
down for an hour gets a re-send of the window every few minutes, not every minute. Any confirmation resets it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

ConfirmMode = Literal["cloud", "broker"]
CONFIRM_MODES: tuple[ConfirmMode, ...] = ("cloud", "broker")


@dataclass(slots=True, eq=False)
class SentBatch:
    seq: int
    ids: list[int]
    live: bool
    sent_mono: float
    sent_wall_ns: int
    acked_mono: float | None = None  # when the broker's PUBACK came
    done: bool = False  # confirmed (or, in broker mode, PUBACKed): its readings may go


class Outstanding:
    def __init__(self, mode: ConfirmMode, confirm_timeout_s: float, max_factor: int = 16) -> None:
        if mode not in CONFIRM_MODES:
            msg = f"confirm mode {mode!r}: expected 'cloud' or 'broker'"
            raise ValueError(msg)
        self.mode = mode
        self.base_timeout_s = confirm_timeout_s
        self.timeout_s = confirm_timeout_s
        self.max_factor = max_factor
        self.by_mid: dict[int, SentBatch] = {}  # waiting for the PUBACK
        self.by_seq: dict[int, SentBatch] = {}  # cloud mode: not yet confirmed, PUBACKed or not; in send order
        self.readings = 0  # readings in batches that are not done
        self.timeouts = 0  # timeouts in a row (reset by a confirmation)

    @property
    def unacked_batches(self) -> int:
        return len(self.by_mid)

    def unacked_readings(self) -> int:
        return sum(len(b.ids) for b in self.by_mid.values())

    def awaiting(self) -> list[SentBatch]:
        """Batches the broker acknowledged that wait for the cloud's confirmation."""
        return [b for b in self.by_seq.values() if b.acked_mono is not None]

    def oldest_unconfirmed_wall_ns(self) -> int | None:
        first = next(iter(self.by_seq.values()), None)
        return None if first is None else first.sent_wall_ns

    def sent(self, mid: int, batch: SentBatch) -> None:
        self.by_mid[mid] = batch
        if self.mode == "cloud":
            self.by_seq[batch.seq] = batch
        self.readings += len(batch.ids)

    def puback(self, mids: Iterable[int], now: float) -> list[SentBatch]:
        """Note the broker's PUBACKs; returns the batches whose readings may now be deleted (broker mode)."""
        done: list[SentBatch] = []
        for mid in mids:
            batch = self.by_mid.pop(mid, None)
            if batch is None or batch.done:
                continue
            if self.mode == "broker":
                batch.done = True
                self.readings -= len(batch.ids)
                done.append(batch)
            else:
                batch.acked_mono = now
        return done

    def confirm(self, ranges: list[tuple[int, int]]) -> list[SentBatch]:
        """Apply the cloud's confirmation; returns the batches whose readings may now be deleted. Seqs we do not know
        (a batch of an earlier process, or one already confirmed or re-sent) are ignored; ranges are never walked."""
        self.timeouts = 0
        self.timeout_s = self.base_timeout_s
        if not self.by_seq:
            return []
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        starts = [first for first, _ in merged]
        hits: list[SentBatch] = []
        for seq, batch in self.by_seq.items():
            i = bisect.bisect_right(starts, seq) - 1
            if i >= 0 and merged[i][1] >= seq:
                hits.append(batch)
        for batch in hits:
            del self.by_seq[batch.seq]
            batch.done = True
            self.readings -= len(batch.ids)
        return hits

    def timed_out(self, now: float) -> list[SentBatch]:
        """The PUBACKed batches whose confirmation is overdue, removed here for the caller to send again."""
        late = [b for b in self.by_seq.values() if b.acked_mono is not None and now - b.acked_mono >= self.timeout_s]
        for batch in late:
            del self.by_seq[batch.seq]
            self.readings -= len(batch.ids)
        if late:
            self.timeouts += 1
            self.timeout_s = min(self.timeout_s * 2, self.base_timeout_s * self.max_factor)
        return late

    def next_timeout_mono(self) -> float | None:
        acked = [b.acked_mono for b in self.by_seq.values() if b.acked_mono is not None]
        return min(acked) + self.timeout_s if acked else None

    def connection_lost(self) -> int:
        """Forget every batch: the next connection sends the whole buffer again. Returns the readings forgotten."""
        n = self.readings
        self.by_mid.clear()
        self.by_seq.clear()
        self.readings = 0
        return n
