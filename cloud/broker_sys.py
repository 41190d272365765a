"""The broker's own count of the messages it dropped, read from Mosquitto's `$SYS` tree (issue 17, item 6).

Mosquitto drops a message for a session whose queue is full (`max_queued_messages`, `max_queued_bytes`), without an
error to anyone: the publisher got its PUBACK. It counts every such drop in one broker-wide counter,
`$SYS/broker/publish/messages/dropped` (one per subscriber copy, for every client, not only cloud-ingest), published
retained every `sys_interval` (10 s by default) when it changed, and reset to 0 when the broker restarts. Checked on
Mosquitto 2.0.11: 30 QoS 1 messages to an offline session with `max_queued_messages 10` made it 20.

The receiver turns that into its own lifetime count (the status file's `broker_dropped`), which survives restarts of
both the broker and the receiver:
- it remembers the broker's counter and uptime at its last look (status file, so also across its own restarts);
- a broker restart shows as a counter below the last one, or an uptime shorter than the last one plus the time
  since (less RESTART_SLACK_S: a retained uptime can be `sys_interval` old); then the whole new counter is new drops;
- otherwise the new drops are the counter's increase. The first counter this receiver ever sees counts in full.
If the receiver dies between seeing drops and writing its status file, it counts them again: at least, not exact.

A broker whose ACL does not let the receiver read `$SYS` grants the subscription and sends nothing (Mosquitto 2.0.11),
as does a broker with `sys_interval 0` or one that is not Mosquitto. So silence for SILENT_AFTER_S after the
subscription is logged once, and the count stays where it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cloud import status

log = logging.getLogger("cloud.receiver")

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
UPTIME_TOPIC = "$SYS/broker/uptime"
TOPICS = (DROPPED_TOPIC, UPTIME_TOPIC)
SILENT_AFTER_S = 30.0
RESTART_SLACK_S = 60.0


class BrokerDrops:
    """Fed by the MQTT input with the `$SYS` messages; keeps its state in `counts` (the status file's totals)."""

    topics: tuple[str, ...] = TOPICS

    def __init__(self, counts: status.Status, *, on_drops: Callable[[int], None],
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.counts = counts
        self._on_drops = on_drops
        self._clock = clock
        self._subscribed_ns = 0
        self._uptime_s: int | None = None  # this connection's latest; a broker cannot restart within one connection
        self._pending: int | None = None  # a counter that came before this connection's first uptime
        self._baseline = False  # the counts' raw counter and uptime describe this connection's broker
        self._warned = False
        self._warned_payload = False
        counts.broker_sys = "unknown"

    def subscribed(self) -> None:
        """A new connection subscribed: wait for this broker's counters again (its ACL may have changed)."""
        self.counts.broker_sys = "unknown"
        self._subscribed_ns = self._clock()
        self._uptime_s = None
        self._pending = None
        self._baseline = False

    def refused(self, codes: list[int]) -> None:
        self._unavailable(f"the broker refused the subscription (reason codes {codes})")

    def message(self, topic: str, payload: bytes) -> None:
        now = self._clock()
        try:
            value = int(payload.split()[0]) if payload else -1
        except ValueError:
            value = -1
        if value < 0:
            if not self._warned_payload:  # once: the broker repeats it every sys_interval
                self._warned_payload = True
                log.warning("unexpected %s payload %r; ignored", topic, payload[:40])
            return
        if topic == UPTIME_TOPIC:
            self._uptime_s = value
            if self._pending is not None:
                self._count(self._pending, value, now)
                self._pending = None
            elif self._baseline:
                self.counts.broker_uptime_s, self.counts.broker_seen_ns = value, now
        elif topic == DROPPED_TOPIC:
            if self._uptime_s is None:
                self._pending = value
            else:
                self._count(value, self._uptime_s, now)

    def check(self) -> None:
        """Called every status interval: log once if the broker has sent nothing since the subscription."""
        c = self.counts
        if self._subscribed_ns and c.broker_sys == "unknown" and \
                (self._clock() - self._subscribed_ns) / 1e9 >= SILENT_AFTER_S:
            self._unavailable(f"no {DROPPED_TOPIC} within {SILENT_AFTER_S:.0f} s of subscribing")

    def _unavailable(self, why: str) -> None:
        self.counts.broker_sys = "unavailable"
        if not self._warned:
            self._warned = True
            log.warning("cannot count the messages the broker drops: %s. If it is Mosquitto, let the receiver's "
                        "user read them (ACL: `topic read %s` and `topic read %s`) and keep sys_interval above 0",
                        why, DROPPED_TOPIC, UPTIME_TOPIC)

    def _count(self, raw: int, uptime_s: int, now_ns: int) -> None:
        c = self.counts
        if c.broker_dropped_raw < 0:
            new = raw  # never looked before: everything since the broker started
        elif raw < c.broker_dropped_raw or self._restarted(uptime_s, now_ns):
            new = raw
        else:
            new = raw - c.broker_dropped_raw
        c.broker_dropped_raw, c.broker_uptime_s, c.broker_seen_ns = raw, uptime_s, now_ns
        c.broker_sys = "ok"
        self._baseline = True
        if new > 0:
            c.broker_dropped += new
            c.broker_last_drop_ns = now_ns
            log.warning("the broker dropped %d messages (%d since it started); a full session queue: see "
                        "max_queued_messages and max_queued_bytes", new, raw)
            self._on_drops(new)

    def _restarted(self, uptime_s: int, now_ns: int) -> bool:
        c = self.counts
        if self._baseline:
            return False  # same connection, same broker
        elapsed = max(0.0, (now_ns - c.broker_seen_ns) / 1e9)
        return uptime_s < c.broker_uptime_s + elapsed - RESTART_SLACK_S
