"""The alert evaluator (cloud/alerts.py) hooked into the receiver: written points in, events out to MQTT (retained,
`<topic_prefix>/<rule>/<mac>`, through the receiver's flow-controlled publisher) and optionally to an
Alertmanager-compatible webhook.

Called by the write path after a batch is stored (and journaled), before it is acknowledged. Nothing is sent twice:
the evaluator remembers which state it last sent per alert, and that is saved (a JSON file next to the status file)
together with the events not yet PUBACKed, before they are published. After a crash those are published again at the
next start (retained, same payload: a subscriber may see one copy twice, the retained state is the same). The rest of
the state (newest readings, pending conditions) is saved every `check_interval` and at a clean stop; a crash can lose
that much of it, which only delays a pending alert by as much. The webhook is best effort: a bounded queue, retries,
then dropped and counted; it is not kept across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from cloud.alerts import Evaluator, Event, Rule
from cloud.metrics import Metrics
from cloud.model import Point
from core.backoff import Backoff

log = logging.getLogger("cloud.alerts")


class RetainedPublish(Protocol):
    def __call__(self, topic: str, payload: bytes, *, retain: bool = ...) -> Awaitable[Awaitable[None]]: ...


@dataclass(frozen=True, slots=True)
class AlertSettings:
    rules: tuple[Rule, ...]
    topic_prefix: str = "edge-gw/alerts"
    horizon_s: float = 600.0
    check_interval_s: float = 10.0
    state_file: Path | None = None
    webhook_url: str = ""
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 5
    webhook_queue: int = 1000


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mqtt_payload(e: Event) -> bytes:
    return orjson.dumps({"v": 1, **e.to_json()})


def alertmanager_alert(e: Event, receiver: str) -> dict[str, Any]:
    """One alert of Alertmanager's POST /api/v2/alerts body (postableAlert: labels, annotations, startsAt, endsAt)."""
    alert: dict[str, Any] = {
        "labels": {"alertname": e.rule, "mac": e.mac, "severity": e.severity, "kind": e.kind,
                   "source": "cloud-ingest", "receiver": receiver},
        "annotations": {"summary": f"{e.rule} on {e.mac}: {e.state}",
                        "value": "" if e.value is None else repr(e.value), "late": str(e.late).lower()},
        "startsAt": rfc3339(e.starts_ns),
    }
    if e.state == "resolved":
        alert["endsAt"] = rfc3339(e.ends_ns)
    return alert


class AlertHook:
    def __init__(self, settings: AlertSettings, *, publish: RetainedPublish, metrics: Metrics, receiver: str,
                 on_firing: Callable[[list[dict[str, Any]]], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.publish = publish
        self.metrics = metrics
        self.receiver = receiver
        self._on_firing = on_firing
        self._clock = clock
        self.evaluator = Evaluator(settings.rules, horizon_s=settings.horizon_s)
        self._outbox: dict[int, Event] = {}  # published (or to be), not yet PUBACKed
        self._next_id = 0
        self._acks: set[asyncio.Future[None]] = set()
        self._webhook: deque[Event] = deque(maxlen=settings.webhook_queue)
        self._webhook_wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.sent: list[Event] = []  # for tests: every event published, in order
        self._load()

    # ---- state file -------------------------------------------------------------------------------------------

    def _load(self) -> None:
        path = self.settings.state_file
        if path is None or not path.exists():
            return
        try:
            data = orjson.loads(path.read_bytes())
            self.evaluator.load(data["evaluator"])
            for raw in data.get("outbox", []):
                self._outbox[self._new_id()] = Event(**raw)
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Starting over is safe: at worst an alert still firing is sent once more.
            aside = path.with_name(path.name + ".bad")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error("alert state %s unreadable (%s); set aside as %s, starting with no alert state", path, e, aside)
            return
        log.info("alerts: %d firing, %d events to send again, from %s", len(self.evaluator.firing()),
                 len(self._outbox), path)

    def save(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        data = {"evaluator": self.evaluator.to_json(),
                "outbox": [_event_dict(e) for e in self._outbox.values()]}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            log.error("cannot save the alert state to %s: %s", path, e)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ---- the hook ---------------------------------------------------------------------------------------------

    async def after_write(self, points: Sequence[Point]) -> None:
        async with self._lock:
            await self._emit(self.evaluator.observe(points, self._clock()))

    async def _emit(self, events: list[Event]) -> None:
        if not events:
            return
        ids = []
        for e in events:
            i = self._new_id()
            self._outbox[i] = e
            ids.append(i)
        self.save()  # "sent" is on disk before anything goes out: a restart does not send these again
        for i in ids:
            await self._publish(i, self._outbox[i])
        self._update_firing()

    async def _publish(self, i: int, e: Event) -> None:
        topic = f"{self.settings.topic_prefix}/{e.rule}/{e.mac}"
        acked = await self.publish(topic, mqtt_payload(e), retain=True)
        self.sent.append(e)
        self.metrics.alert_events.labels(e.rule, e.state).inc()
        log.info("alert %s %s on %s (value %s%s)", e.rule, e.state, e.mac, e.value, ", late" if e.late else "")
        if self.settings.webhook_url:
            if len(self._webhook) == self._webhook.maxlen:
                self.metrics.alert_webhook.labels("dropped").inc()
            self._webhook.append(e)
            self._webhook_wake.set()
        task = asyncio.ensure_future(acked)
        self._acks.add(task)
        task.add_done_callback(lambda f: self._acked(i, f))

    def _acked(self, i: int, f: asyncio.Future[None]) -> None:
        self._acks.discard(f)
        if not f.cancelled() and f.exception() is None:
            self._outbox.pop(i, None)

    def _update_firing(self) -> None:
        firing = [{"rule": r, "mac": m, "since_ns": st.sent_since_ns, "value": st.value}
                  for r, m, st in self.evaluator.firing()]
        self.metrics.alerts_firing.set(len(firing))
        if self._on_firing is not None:
            self._on_firing(firing)

    # ---- lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish what a previous process left unsent, then judge silence and save the state every interval."""
        self._update_firing()
        async with self._lock:
            for i, e in list(self._outbox.items()):
                await self._publish(i, e)
        webhook = asyncio.ensure_future(self._webhook_loop()) if self.settings.webhook_url else None
        try:
            while True:
                await asyncio.sleep(self.settings.check_interval_s)
                async with self._lock:
                    await self._emit(self.evaluator.tick(self._clock()))
                    self.save()
        finally:
            if webhook is not None:
                webhook.cancel()
                await asyncio.gather(webhook, return_exceptions=True)

    async def close(self, timeout: float = 5.0) -> None:
        """At a clean stop: wait for the PUBACKs of what was sent, then save."""
        if self._acks:
            await asyncio.wait(list(self._acks), timeout=timeout)
        self.save()

    # ---- webhook ----------------------------------------------------------------------------------------------

    async def _webhook_loop(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            if not self._webhook:
                self._webhook_wake.clear()
                await self._webhook_wake.wait()
                continue
            events = list(self._webhook)
            body = orjson.dumps([alertmanager_alert(e, self.receiver) for e in events])
            for attempt in range(self.settings.webhook_retries + 1):
                try:
                    await asyncio.to_thread(self._post, body)
                except (OSError, urllib.error.URLError) as e:
                    self.metrics.alert_webhook.labels("error").inc()
                    if attempt == self.settings.webhook_retries:
                        log.error("alert webhook: giving up on %d alerts after %d attempts: %s", len(events),
                                  attempt + 1, e)
                        self.metrics.alert_webhook.labels("dropped").inc(len(events))
                        break
                    await asyncio.sleep(backoff.next_delay())
                else:
                    self.metrics.alert_webhook.labels("sent").inc(len(events))
                    break
            backoff.reset()
            for _ in events:  # those sent (or given up); newer ones may have come meanwhile
                if self._webhook:
                    self._webhook.popleft()

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.settings.webhook_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.settings.webhook_timeout_s) as r:
            r.read()


def _event_dict(e: Event) -> dict[str, Any]:
    return {"rule": e.rule, "mac": e.mac, "state": e.state, "starts_ns": e.starts_ns, "ends_ns": e.ends_ns,
            "value": e.value, "late": e.late, "kind": e.kind, "severity": e.severity}
