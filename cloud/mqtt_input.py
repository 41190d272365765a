"""The MQTT input: gmqtt (MQTT v5) in, one Message per received PUBLISH, its PUBACK only when the write path
acknowledges it.

- QoS 1 deliveries bypass gmqtt's `on_message`: with `optimistic_acknowledgement=False` gmqtt runs one asyncio task
  per message and sends each PUBACK with its own socket write when that task returns, which cost more than parsing
  the message for one-reading-per-message traffic (docs/benchmarks.md). The input takes over gmqtt's QoS 1 publish
  hook (private `_package_handler._handle_qos_1_publish_packet`), hands the message to the receiver at once, and
  keeps its packet id; once the write path acknowledges it, the PUBACK joins the others acknowledged in the same
  loop iteration and they go out in one write. A message that must not be acknowledged gets no PUBACK: the broker
  redelivers it. The input also parses the common PUBLISH itself (`_on_publish`, in place of gmqtt's private
  `_handle_publish_packet`): QoS 0 or 1, no properties, MQTT v5; gmqtt's parser takes every other packet.
  Measured 4x faster than gmqtt's, 0.81-0.91x the receiver's CPU per one-reading message;
  tests/cloud/test_mqtt_input_publish.py checks it reads what gmqtt reads.
- A fixed client id, `clean_start=False` and a session expiry: after a crash, a restart or a database outage the
  broker still holds every unacknowledged message and redelivers it.
- A PUBACK answers one delivery on one connection (a "generation" here). A message received before a reconnect is
  not acknowledged: the broker resends it on the new connection (same packet id, DUP set) and that copy is, after
  its own batch. Acknowledging the old copy could hit a packet id the broker has since given to another message;
  PUBACKs gathered for a connection that has since dropped are thrown away for the same reason.
- A message the broker holds back (Mosquitto 2.0.11, cloud/mqtt_gaps.py) shows as a skipped packet id; `watch()`
  reconnects when one has been missing for `held_back_reconnect_s`, and the broker then sends it.
- Backpressure: `pause(True)` stops reading the socket (gmqtt has no flow control of its own), so the broker waits.
  That needs gmqtt's transport (private `_connection._transport`; gmqtt is pinned in pyproject.toml and
  tests/cloud/test_mqtt_publish.py checks the attributes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import gmqtt
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.package import Package

from cloud.model import Refused
from cloud.mqtt_gaps import SkippedIds
from cloud.mqtt_publish import Publisher
from cloud.receiver_settings import MqttSettings
from cloud.write_path import Message, ParseFailure
from core.backoff import Backoff

log = logging.getLogger("cloud.receiver")

CONNECT_RETRY_MAX_S = 30.0


class InputError(Exception):
    """The broker refused the connection (credentials, not authorised): retrying cannot help."""


# PUBACK with Remaining Length 2: reason code 0 (success) and no properties may be left out (MQTT v5 3.4.2.1).
_PUBACK = struct.Struct("!BBH")


class MqttMessage(Message, eq=False):
    generation: int = 0  # the connection it arrived on
    mid: int | None = None  # the broker's packet id of a QoS 1 delivery; None for QoS 0: nothing to acknowledge
    input: MqttInput | None = None

    def acknowledge(self) -> None:
        if self.mid is not None and self.input is not None:  # a QoS 0 message has nothing to acknowledge
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
                 sys_reader: SysReader | None = None, on_held_back: Callable[[], None] | None = None) -> None:
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
        self._mid_in_hand: int | None = None  # the packet id of the QoS 1 delivery being handed to the receiver
        self._pubacks: list[int] = []  # packet ids to acknowledge, all of connection `_puback_generation`
        self._puback_generation = 0
        self._flush_scheduled = False
        self.skipped = SkippedIds(settings.held_back_reconnect_s)
        self._on_held_back = on_held_back
        self._topics: dict[bytes, str] = {}  # a Ruuvi Gateway has a topic per tag: decoded once
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
        client.on_message = self._on_message  # QoS 0 only
        handler = client._package_handler
        handler._handle_qos_1_publish_packet = self._on_qos1_publish
        # Set before the first packet: gmqtt looks its handlers up by name once and caches them.
        self._gmqtt_publish = handler._handle_publish_packet
        self._protocol = handler._connection_state  # its protocol_version: v5 unless the broker refused v5
        handler._handle_publish_packet = self._on_publish
        return client

    def new_message(self, topic: str, qos: int, gateway: str | None = None, seq: int | None = None,
                    failure: ParseFailure | None = None, refused: list[Refused] | None = None) -> MqttMessage:
        mid = self._mid_in_hand if qos > 0 else None
        # Positional, in the fields' order: keywords cost more, once per message.
        msg = MqttMessage(topic, gateway, seq, failure, [] if refused is None else refused, self.generation, mid,
                          self)
        if mid is not None:
            self.inflight += 1
            self._unfinished.add(msg)
        return msg

    def finish(self, msg: MqttMessage, *, ack: bool) -> None:
        """Acknowledge the message (only on the connection it came on) or give it up for the broker to resend."""
        if msg.mid is None or msg not in self._unfinished:
            return
        self.inflight -= 1
        self._unfinished.discard(msg)
        if ack and msg.generation == self.generation:
            self._puback(msg.mid)

    def _puback(self, mid: int) -> None:
        """Queue the PUBACK of `mid` (a delivery on the current connection). A batch acknowledges its messages in
        one loop iteration: their PUBACKs leave in one socket write, at the end of it."""
        if self._puback_generation != self.generation:
            self._pubacks.clear()  # gathered for a connection that dropped: the broker resends those
            self._puback_generation = self.generation
        self._pubacks.append(mid)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_pubacks)

    def _flush_pubacks(self) -> None:
        self._flush_scheduled = False
        mids, self._pubacks = self._pubacks, []
        conn = getattr(self.client, "_connection", None)
        if not mids or conn is None or not self.connected or self._puback_generation != self.generation:
            return
        conn.send_package(b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]))

    def give_up_all(self) -> None:
        for msg in list(self._unfinished):
            self.finish(msg, ack=False)

    # ---- gmqtt callbacks --------------------------------------------------------------------------------------

    def _on_connect(self, client: Any, flags: int, rc: int, properties: dict[str, Any]) -> None:
        self.generation += 1
        self.skipped.reset()
        self.connected = True
        self.publisher.connected()
        log.info("connected to the broker (session present: %s)", bool(flags))
        self._read_publishes_directly()
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

    def _read_publishes_directly(self) -> None:
        """Split the new connection's incoming bytes into packets here, and hand each PUBLISH to `_on_publish` at
        once; every other packet takes gmqtt's way (its Package, `put_package`, the handler). Counted with callgrind
        on 20,000 Ruuvi Gateway packets in one buffer: gmqtt's way costs 14,900 instructions per packet on top of
        `_on_publish` (a Package, two clock reads, a debug log call that formats its arguments, the handler
        lookup), this loop 5,350 (1.25 µs against about 0.45 µs).
        Uses gmqtt's private `_connection._protocol._read_packet` (called by its read loop with the bytes buffered
        so far, it returns how many it consumed, -1 for a malformed length) and `_connection._last_data_in` (its
        keepalive); tests/cloud/test_mqtt_publish.py checks both. Installed per connection, from on_connect: the
        packets that came with the CONNACK still take gmqtt's way, which ends in `_on_publish` too."""
        conn = getattr(self.client, "_connection", None)
        protocol = getattr(conn, "_protocol", None)
        gmqtt_read: Callable[[bytes], int] | None = getattr(protocol, "_read_packet", None)
        if conn is None or gmqtt_read is None or getattr(gmqtt_read, "__self__", None) is not protocol:
            return  # not gmqtt's own (already ours, or a gmqtt we do not know): leave it
        read_original: Callable[[bytes], int] = gmqtt_read
        handler = self.client._package_handler
        on_publish = self._on_publish
        put_package = conn.put_package
        clock = time.monotonic

        def read_packets(data: bytes) -> int:
            if handler.current_connection is not conn:
                return read_original(data)  # a superseded connection: gmqtt drops what it still delivers
            size = len(data)
            pos = 0
            while size - pos >= 2:
                # Remaining Length: 1 to 4 bytes, 7 bits each, least significant first (MQTT v5 1.5.5).
                i = pos + 1
                length = shift = 0
                complete = False
                while i < size:
                    b = data[i]
                    length |= (b & 0x7F) << shift
                    i += 1
                    if b < 0x80:
                        complete = True
                        break
                    shift += 7
                    if shift > 21:
                        return -1  # gmqtt's answer to a malformed length: the connection is reset
                if not complete:
                    break  # the length itself has not all arrived
                end = i + length
                if end > size:
                    break
                cmd = data[pos]
                try:
                    if cmd & 0xF0 == 0x30:
                        on_publish(cmd, data[i:end])
                    else:
                        put_package(Package(cmd, data[i:end]))
                except Exception:
                    log.exception("handling an MQTT packet failed")  # as gmqtt's handler does: the stream goes on
                pos = end
            if pos:
                conn._last_data_in = clock()  # for gmqtt's keepalive, as put_package sets it
            return pos

        protocol._read_packet = read_packets  # type: ignore[union-attr]

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

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> None:
        # QoS 0 that _on_publish left to gmqtt: gmqtt calls a plain function at once, in arrival order.
        self._qos0(topic, payload, bool(properties.get("dup")))

    def _qos0(self, topic: str, payload: bytes, dup: bool) -> None:
        # Nothing to acknowledge.
        if self._sys is not None and topic.startswith("$SYS/"):
            self._sys.message(topic, payload)
            return
        self._handler(topic, payload, 0, dup)

    def _on_publish(self, cmd: int, packet: bytes) -> None:
        # Replaces gmqtt's PUBLISH handler for the common case, a QoS 0 or 1 PUBLISH over MQTT v5 with no properties
        # (what Mosquitto relays from a publisher that set none): 0.5 µs instead of gmqtt's 2 µs; 0.81-0.91x the
        # receiver's CPU per one-reading message (docs/benchmarks.md). Anything else takes gmqtt's own path.
        # Variable header: topic length (2 bytes), topic, packet id (2, QoS 1 only), properties length (0 here).
        qos = cmd & 0x06
        end = 2 + ((packet[0] << 8) | packet[1]) if len(packet) > 2 else 0
        props = end + 2 if qos else end
        if qos > 0x02 or end <= 2 or len(packet) <= props or packet[props] != 0 \
                or self._protocol.protocol_version != MQTTv50:
            self._gmqtt_publish(cmd, packet)
            return
        raw_topic = packet[2:end]
        topic = self._topics.get(raw_topic)
        if topic is None:
            try:
                topic = raw_topic.decode()
            except UnicodeDecodeError:
                self._gmqtt_publish(cmd, packet)  # gmqtt's way with a topic that is not UTF-8
                return
            if len(self._topics) >= 50_000:
                self._topics.clear()
            self._topics[raw_topic] = topic
        if qos:
            self._take((packet[end] << 8) | packet[end + 1], packet[props + 1:], topic, cmd & 0x08 != 0)
        elif topic[0] == "$":
            self._qos0(topic, packet[props + 1:], cmd & 0x08 != 0)
        else:  # _qos0(), inline: one call less per message
            self._handler(topic, packet[props + 1:], 0, cmd & 0x08 != 0)

    def _on_qos1_publish(self, mid: int, payload: bytes, topic: str, properties: dict[str, Any]) -> None:
        # Replaces gmqtt's hook of the same name, called in arrival order for each QoS 1 PUBLISH (topic decoded,
        # properties parsed) that _on_publish left to gmqtt.
        self._take(mid, payload, topic, bool(properties.get("dup")))

    def _take(self, mid: int, payload: bytes, topic: str, dup: bool) -> None:
        # No task: the receiver takes the message now, and finish() acknowledges it later.
        self._mid_in_hand = mid
        if not dup:
            self.skipped.seen(mid)
        try:
            msg = self._handler(topic, payload, 1, dup)
        finally:
            self._mid_in_hand = None
        if msg is None or msg.mid is None:
            # Not ours to keep (our own dead letters): acknowledged at once, as gmqtt would have.
            self._puback(mid)

    # ---- connection -------------------------------------------------------------------------------------------

    def pause(self, pause: bool) -> None:
        if pause == self._paused:
            return  # the common case, once per message: nothing to look up
        conn = getattr(self.client, "_connection", None)
        transport = getattr(conn, "_transport", None)
        if transport is None:
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

    async def watch(self, stop: asyncio.Event) -> None:
        """Reconnect when the broker holds back a message (module doc), until `stop`."""
        after = self.settings.held_back_reconnect_s
        if after <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(after / 2, 5.0))
            mid = self.skipped.held_back() if self.connected and not stop.is_set() else None
            if mid is None:
                continue
            log.warning("the broker skipped packet id %d and has not sent it for %.0f s (a message Mosquitto 2.0.x "
                        "holds back until the next connection): reconnecting", mid, after)
            self.skipped.reset()
            if self._on_held_back is not None:
                self._on_held_back()
            # Dropped as a broken network would drop it: gmqtt's own reconnect follows, as after any outage.
            # (gmqtt's reconnect() raced that one: two connections with our client id took over from each other.)
            transport = getattr(getattr(self.client, "_connection", None), "_transport", None)
            if transport is not None:
                transport.abort()

    async def disconnect(self, *, end_session: bool) -> None:
        """Let the PUBACKs, dead letters and confirmations just queued reach the broker, then say goodbye."""
        await asyncio.sleep(0)
        if self.connected:
            await self.publisher.wait_empty(5)
        with contextlib.suppress(Exception):
            if self.connected and self._sys is not None:
                # $SYS messages (QoS 0) queued for the session while we are away would make Mosquitto 2.0.11 hold
                # back a message of the backlog on our return (cloud/mqtt_gaps.py). The UNSUBSCRIBE goes out
                # before the DISCONNECT on the same socket; the next connect subscribes again.
                self.client.unsubscribe(list(self._sys.topics))
            if end_session:
                # Session expiry 0 in the DISCONNECT ends the session at once (MQTT v5 3.14.2.2.2).
                await self.client.disconnect(session_expiry_interval=0)
            else:
                await self.client.disconnect()
