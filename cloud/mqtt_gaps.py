"""Packet ids the broker skipped: a QoS 1 message Mosquitto 2.0.11 holds back until the client reconnects.

Mosquitto numbers a client's QoS 1 messages (the packet id) as it queues them, one after the other, and sends them in
that order. Debian 12's Mosquitto 2.0.11 can hold one back for good. The trigger is a persistent session that
reconnects to a queue longer than its Receive Maximum when a QoS 0 message is queued beyond that point. Such a QoS 0
message is cloud-ingest's own `$SYS` subscription, or a Ruuvi Gateway's QoS 0 adverts, kept for an offline session by
the shipped `queue_qos0_messages true`.
- On the reconnect, `db__message_reconnect_reset_outgoing` promotes the QoS 0 message, but it dequeues the head of
  the queue instead: the first QoS 1 message past the window.
- That message lands among the in-flight messages without being marked to be sent, so it never is on this
  connection. Every later message is sent.
- tests/cloud/test_broker_held_back.py reproduces it: 30 queued, a QoS 0 one after them, Receive Maximum 10, and the
  11th never comes.

The receiver sees a packet id that was skipped: the ids after it arrive and it does not. When a skipped id is still
missing after `after_s`, the broker holds it. The input then reconnects, which resets Mosquitto's in-flight list and
sends the message. Redeliveries (DUP) are not tracked, since they come back out of order by design. A skipped id can
also be a message the broker dropped or let expire; then the reconnect finds nothing and costs only itself.

Pure: the clock is passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_ID = 65535  # ids run 1..65535, then 1 again (0 is not a packet id)
_HALF = MAX_ID // 2
MAX_TRACKED = 1024  # a larger jump is not a held-back message (a session the broker lost, another broker)


class SkippedIds:
    def __init__(self, after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after_s = after_s
        self._clock = clock
        self._next: int | None = None  # the id the broker numbers next, once one came on this connection
        self._missing: dict[int, float] = {}  # skipped id -> when it was first seen missing, oldest first

    def reset(self) -> None:
        """A new connection: ids it sends again start a new count."""
        self._next = None
        self._missing.clear()

    def seen(self, mid: int) -> None:
        """A QoS 1 delivery that is not a redelivery."""
        expected = self._next
        self._next = mid % MAX_ID + 1
        if expected is None or mid == expected:
            return  # the common case, once per message
        ahead = (mid - expected) % MAX_ID
        if ahead >= _HALF:
            self._next = expected  # an older id after all: it fills its gap, and the count stays where it was
            self._missing.pop(mid, None)
        elif ahead <= MAX_TRACKED and len(self._missing) < MAX_TRACKED:
            now = self._clock()
            for i in range(ahead):
                self._missing.setdefault((expected - 1 + i) % MAX_ID + 1, now)

    def held_back(self) -> int | None:
        """The oldest skipped id that has been missing for `after_s` or longer; None if there is none."""
        for mid, since in self._missing.items():
            return mid if self._clock() - since >= self.after_s else None
        return None

    @property
    def missing(self) -> int:
        return len(self._missing)
