"""Groups parsed messages into write batches. Pure: the caller passes the time in.

A batch closes on whichever comes first:
- `max_points` points (5000 by default);
- `max_interval_s` since its first message (10 s by default);
- `max_messages` messages: the MQTT in-flight window. The receiver acknowledges a message only after the batch
  holding it is written, and the broker sends at most Receive Maximum unacknowledged messages. A batch that waited
  for 5000 points of one-reading-per-message traffic would wait for messages the broker will never send, so the
  window closes it too (reason "window").

A message is never split across batches: its acknowledgement covers all of its points. A message with no points (a
gateway status) still joins the batch, so that its acknowledgement keeps its place in the order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cloud.model import Point

T = TypeVar("T")


@dataclass(slots=True)
class Batch(Generic[T]):
    """(message, points) pairs in arrival order: whoever writes the batch knows which message carried which point."""

    opened_at: float
    items: list[tuple[T, list[Point]]] = field(default_factory=list)
    n_points: int = 0
    reason: str = ""  # why it closed: "size", "window", "time" or "drain"
    closed_at: float = 0.0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[T, list[Point]]]:
        return iter(self.items)

    @property
    def messages(self) -> list[T]:
        return [m for m, _ in self.items]

    def points(self) -> list[Point]:
        return [p for _, pts in self.items for p in pts]

    def drop(self, unwanted: Callable[[T], bool]) -> list[T]:
        """Remove the messages (with their points) that `unwanted` picks; return them."""
        dropped = [m for m, _ in self.items if unwanted(m)]
        if dropped:
            self.items = [(m, pts) for m, pts in self.items if not unwanted(m)]
            self.n_points = sum(len(pts) for _, pts in self.items)
        return dropped


class Batcher(Generic[T]):
    def __init__(self, *, max_points: int = 5000, max_interval_s: float = 10.0, max_messages: int = 1000) -> None:
        if max_points < 1 or max_messages < 1 or max_interval_s <= 0:
            raise ValueError("max_points and max_messages must be >= 1 and max_interval_s > 0")
        self.max_points = max_points
        self.max_interval_s = max_interval_s
        self.max_messages = max_messages
        self.open_batch: Batch[T] | None = None  # read-only outside: add() and close() change it

    @property
    def open_points(self) -> int:
        return self.open_batch.n_points if self.open_batch else 0

    @property
    def open_messages(self) -> int:
        return len(self.open_batch.items) if self.open_batch else 0

    def add(self, points: Sequence[Point], token: T, now: float) -> Batch[T] | None:
        """Add one message's points; return the batch this closed, if any. A list of points is kept as it is (the
        caller gives it up), anything else is copied."""
        batch = self.open_batch
        if batch is None:
            batch = self.open_batch = Batch(opened_at=now)
        batch.items.append((token, points if type(points) is list else list(points)))
        batch.n_points += len(points)
        if batch.n_points >= self.max_points:
            return self.close("size", now)
        if len(batch.items) >= self.max_messages:
            return self.close("window", now)
        return None

    def deadline(self) -> float | None:
        """When the open batch must close on time, or None if there is none."""
        return None if self.open_batch is None else self.open_batch.opened_at + self.max_interval_s

    def due(self, now: float) -> Batch[T] | None:
        """Close and return the open batch if its time is up."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self.close("time", now)
        return None

    def close(self, reason: str, now: float) -> Batch[T] | None:
        batch, self.open_batch = self.open_batch, None
        if batch is not None:
            batch.reason = reason
            batch.closed_at = now
        return batch
