"""The flow-controlled QoS 1 publisher against a real Mosquitto, and the gmqtt internals it and the MQTT input rely on
(gmqtt is pinned in pyproject.toml; these tests say what to check when the pin moves)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50
from test_receiver_support import Subscriber, wait_until

from cloud.mqtt_publish import Publisher


def _client(pub: Publisher, client_id: str) -> Any:
    client = gmqtt.Client(client_id, clean_session=False, session_expiry_interval=600, receive_maximum=100,
                          persistent_storage=pub.storage)
    client.set_config({"reconnect_retries": -1, "reconnect_delay": 0.2})
    client.on_connect = lambda *a: pub.connected()
    client.on_disconnect = lambda *a: pub.disconnected()
    pub.attach(client)
    return client


def test_the_private_gmqtt_attributes_we_use_still_do_what_we_rely_on(mosquitto_factory: Any, tmp_path: Path) -> None:
    broker = mosquitto_factory(tmp_path / "mq", extra=["max_inflight_messages 20"]).start()

    async def go() -> None:
        pub = Publisher(100)
        client = _client(pub, "attrs")
        await client.connect("127.0.0.1", broker.port, version=MQTTv50)
        # The packet id pool is sized from the broker's Receive Maximum and refuses its last id.
        ids = client._package_handler.id_generator
        assert ids._max == 20 and pub.window == 17
        taken = [ids.next_id() for _ in range(19)]
        with pytest.raises(OverflowError, match="All ids has already used"):
            ids.next_id()
        ids.free_id(taken[0])
        ids.free_id(ids.next_id())
        for mid in taken[1:]:
            ids.free_id(mid)
        # The publish handlers the MQTT input takes over (cloud/mqtt_input.py): looked up on the instance by name
        # (and cached per packet type), and the protocol version the input's own parser checks.
        handler = client._package_handler
        assert callable(handler._handle_qos_1_publish_packet) and callable(client._connection.send_package)
        assert callable(handler._handle_publish_packet) and handler._handler_cache.get(0x30) is None
        assert handler._connection_state.protocol_version == 5
        # The framing the input takes over per connection: the protocol's `_read_packet`, looked up on the instance
        # by gmqtt's read loop, the handler's current connection, and the keepalive clock it must keep.
        conn = client._connection
        assert conn._protocol._read_packet.__self__ is conn._protocol and handler.current_connection is conn
        assert isinstance(conn._last_data_in, float) and callable(conn.put_package)
        # The transport that pauses reading.
        transport = client._connection._transport
        transport.pause_reading()
        assert not transport.is_reading()
        transport.resume_reading()
        assert transport.is_reading()
        await client.disconnect()

    asyncio.run(go())


def test_publishes_wait_for_room_in_a_window_of_20(mosquitto_factory: Any, tmp_path: Path) -> None:
    """1,500 publishes through a broker that allows 20 in flight: no OverflowError, every one PUBACKed and
    delivered, never more than the window unacknowledged."""
    broker = mosquitto_factory(tmp_path / "mq", extra=["max_inflight_messages 20"]).start()
    sub = Subscriber(broker.port, "out/#")
    most: list[int] = [0]

    async def go() -> None:
        pub = Publisher(100)
        client = _client(pub, "flow")
        await client.connect("127.0.0.1", broker.port, version=MQTTv50)
        acks = []
        for i in range(1500):
            acks.append(await pub.publish(f"out/{i % 3}", f"m{i}".encode()))
            most[0] = max(most[0], pub.unacknowledged)
        await asyncio.wait_for(asyncio.gather(*acks), 30)
        assert pub.unacknowledged == 0 and pub.published == 1500
        await client.disconnect()

    try:
        asyncio.run(go())
        wait_until(lambda: len(sub.messages) == 1500, 20, "1500 delivered")
        assert sorted(p for _, p in sub.messages) == sorted(f"m{i}".encode() for i in range(1500))
        assert most[0] == 17
    finally:
        sub.close()


def test_what_a_broker_lost_with_the_session_is_published_again(mosquitto_factory: Any, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The broker takes 30 publishes and dies before acknowledging them; the new one (no persistence) has no session,
    so gmqtt drops its copies. The publisher sends them again, and every PUBACK future completes."""
    workdir = tmp_path / "mq"
    broker = mosquitto_factory(workdir, extra=["persistence false"]).start()
    port = broker.port

    async def go() -> list[tuple[str, bytes]]:
        pub = Publisher(100)
        client = _client(pub, "lost")
        await client.connect("127.0.0.1", port, version=MQTTv50)
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGSTOP)  # takes the bytes, answers nothing
        acks = [await pub.publish("lost/x", f"d{i}".encode()) for i in range(30)]
        await asyncio.sleep(0.2)
        assert pub.unacknowledged == 30
        broker.kill()
        fresh = mosquitto_factory(workdir, port=port, extra=["persistence false"]).start()
        sub = Subscriber(fresh.port, "lost/#", client_id="lost-sub")
        try:
            await asyncio.wait_for(asyncio.gather(*acks), 30)
            deadline = time.monotonic() + 10
            while len(sub.messages) < 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            sub.close()
            await client.disconnect()
        return sub.messages

    got = asyncio.run(go())
    assert "the broker lost our session: publishing 30 dead letters/confirmations again" in caplog.text
    assert sorted(p for _, p in got) == sorted(f"d{i}".encode() for i in range(30))
