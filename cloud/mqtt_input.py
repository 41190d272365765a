"""The MQTT input: gmqtt (MQTT v5) in, one Message per received PUBLISH, its PUBACK only when the write path
acknowledges it.

- `optimistic_acknowledgement=False` and an `async` on_message: gmqtt sends the PUBACK with the int the coroutine
  returns, when it returns. The coroutine waits on the message's future: it returns 0 once the message is
  acknowledged, and raises NotAcknowledged when it must not be; gmqtt then sends nothing and the broker redelivers.
- A fixed client id, `clean_start=False` and a session expiry: after a crash, a restart or a database outage the
  broker still holds every unacknowledged message and redelivers it.
- A PUBACK answers one delivery on one connection (a "generation" here). A message received before a reconnect is
  not acknowledged: the broker resends it on the new connection (same packet id, DUP set) and that copy is, after
  its own batch. Acknowledging the old copy could hit a packet id the broker has since given to another message.
- Backpressure: `pause(True)` stops reading the socket (gmqtt has no flow control of its own), so the broker waits.
  That needs gmqtt's transport (private `_connection._transport`; gmqtt is pinned in pyproject.toml and
  tests/cloud/test_mqtt_publish.py checks the attributes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from cloud.mqtt_publish import Publisher
from cloud.receiver_settings import MqttSettings
from cloud.write_path import Message
from core.backoff import Backoff

log = logging.getLogger("cloud.receiver")

CONNECT_RETRY_MAX_S = 30.0


class InputError(Exception):
    """The broker refused the connection (credentials, not authorised): retrying cannot help."""


class NotAcknowledged(Exception):
    """Raised from on_message so that gmqtt sends no PUBACK; the broker will redeliver the message."""


@dataclass(slots=True, eq=False)
class MqttMessage(Message):
    generation: int = 0  # the connection it arrived on
    future: asyncio.Future[None] | None = None  # None for QoS 0: nothing to acknowledge
    input: MqttInput | None = field(default=None, repr=False)

    def acknowledge(self) -> None:
        if self.input is not None:
            self.input.finish(self, ack=True)


# (topic, payload, qos, dup) -> the message to acknowledge later, or None to acknowledge at once.
Handler = Callable[[str, bytes, int, bool], MqttMessage | None]


class SysReader(Protocol):
    """Reads the broker's `$SYS` topics (cloud/broker_sys.py): a plain QoS 0 subscription of its own on every
    connection, never shared, and never part of a batch."""

    topics: tuple[str, ...]

    def subscribed(self) -> None: ...

    def refused(self, codes: list[int]) -> None: ...

    def message(self, topic: str, payload: bytes) -> None: ...


class MqttInput:
    def __init__(self, settings: MqttSettings, handler: Handler, *, on_connection: Callable[[bool], None],
                 sys_reader: SysReader | None = None) -> None:
        self.settings = settings
        self._handler = handler
        self._sys = sys_reader
        self._sys_mid: int | None = None
        self._on_connection = on_connection
        self.publisher = Publisher(settings.receive_maximum)
        self.generation = 0
        self.connected = False
        self.inflight = 0  # QoS 1 messages received and not yet acknowledged or given up
        self.retire = False
        self.subscribed = asyncio.Event()
        self._paused = False
        self._unfinished: set[MqttMessage] = set()
        self.client = self._make_client()
        self.publisher.attach(self.client)

    def _make_client(self) -> Any:
        s = self.settings
        client = gmqtt.Client(
            s.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=s.session_expiry_s,
            receive_maximum=s.receive_maximum,
            persistent_storage=self.publisher.storage,
        )
        client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        if s.username:
            client.set_auth_credentials(s.username, s.password or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def new_message(self, topic: str, qos: int, **about: Any) -> MqttMessage:
        future = asyncio.get_running_loop().create_future() if qos > 0 else None
        msg = MqttMessage(topic, generation=self.generation, future=future, input=self, **about)
        if future is not None:
            self.inflight += 1
            self._unfinished.add(msg)
        return msg

    def finish(self, msg: MqttMessage, *, ack: bool) -> None:
        """Acknowledge the message (only on the connection it came on) or give it up for the broker to resend."""
        fut = msg.future
        if fut is None or fut.done():
            return
        self.inflight -= 1
        self._unfinished.discard(msg)
        if ack and msg.generation == self.generation:
            fut.set_result(None)
        else:
            fut.set_exception(NotAcknowledged())

    def give_up_all(self) -> None:
        for msg in list(self._unfinished):
            self.finish(msg, ack=False)

    # ---- gmqtt callbacks --------------------------------------------------------------------------------------

    def _on_connect(self, client: Any, flags: int, rc: int, properties: dict[str, Any]) -> None:
        self.generation += 1
        self.connected = True
        self.publisher.connected()
        log.info("connected to the broker (session present: %s)", bool(flags))
        self._on_connection(True)
        if rc != 0:
            return
        topics = list(self.settings.subscriptions)
        if self.retire:
            # Leaving: no new messages for this session; what the broker queued for it still comes.
            client.unsubscribe(topics)
            self.subscribed.set()
            return
        # Subscribing again on every connect is harmless with a kept session and needed if the broker lost it.
        client.subscribe([gmqtt.Subscription(t, qos=self.settings.qos) for t in topics])
        if self._sys is not None:
            self._sys.subscribed()
            self._sys_mid = client.subscribe([gmqtt.Subscription(t, qos=0) for t in self._sys.topics])

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self.generation += 1
        self.connected = False
        self._paused = False  # the next connection starts reading
        self.publisher.disconnected()
        self._on_connection(False)

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        refused = [q for q in qos if q >= 0x80]
        if mid == self._sys_mid and self._sys is not None:
            if refused:
                self._sys.refused(refused)
            return
        if refused:
            log.error("the broker refused %d subscription(s): reason codes %s", len(refused), refused)
        self.subscribed.set()

    async def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        # Everything up to the first await runs in arrival order (gmqtt schedules one task per message, FIFO).
        if self._sys is not None and topic.startswith("$SYS/"):
            self._sys.message(topic, payload)
            return 0
        msg = self._handler(topic, payload, qos, bool(properties.get("dup")))
        if msg is not None and msg.future is not None:
            await msg.future
        return 0

    # ---- connection -------------------------------------------------------------------------------------------

    def pause(self, pause: bool) -> None:
        conn = getattr(self.client, "_connection", None)
        transport = getattr(conn, "_transport", None)
        if transport is None or pause == self._paused:
            return
        with contextlib.suppress(RuntimeError, AttributeError):
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()
            self._paused = pause

    async def connect(self, stop: asyncio.Event) -> None:
        """Connect, retrying with backoff while the broker is unreachable, until `stop`."""
        s = self.settings
        backoff = Backoff(0.5, CONNECT_RETRY_MAX_S)
        while not stop.is_set():
            delay = backoff.next_delay()
            try:
                await self.client.connect(s.host, s.port, ssl=s.tls or False, keepalive=s.keepalive,
                                          version=MQTTv50)
                return
            except OSError as e:
                log.warning("cannot reach the broker at %s:%s (%s); retrying in %.1f s", s.host, s.port, e, delay)
            except Exception as e:
                # gmqtt raises MQTTConnectError for a refused CONNECT (bad credentials, not authorised).
                raise InputError(f"the broker refused the connection: {e}") from None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def disconnect(self, *, end_session: bool) -> None:
        """Let the PUBACKs, dead letters and confirmations just queued reach the broker, then say goodbye."""
        await asyncio.sleep(0)
        if self.connected:
            await self.publisher.wait_empty(5)
        with contextlib.suppress(Exception):
            if end_session:
                # Session expiry 0 in the DISCONNECT ends the session at once (MQTT v5 3.14.2.2.2).
                await self.client.disconnect(session_expiry_interval=0)
            else:
                await self.client.disconnect()
