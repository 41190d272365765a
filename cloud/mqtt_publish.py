"""QoS 1 publishing with flow control and PUBACK futures, on top of gmqtt (dead letters and confirmations).

gmqtt hands out packet ids from a pool capped by the broker's Receive Maximum (CONNACK) and raises
`OverflowError: All ids has already used` past it; Mosquitto's `max_inflight_messages` is 20 by default, 1000 in
our snippet. So `publish()` waits while as many publishes are unacknowledged as the pool holds.

How a PUBACK is seen without private attributes: `gmqtt.Client(persistent_storage=...)` takes the store of
unacknowledged outbound packets. `client.publish()` pushes the packet there (with its packet id) before it returns,
and the PUBACK handler removes it by that id; AckStorage turns both into a future per publish.

When the broker answers a reconnect without the session (it lost it), gmqtt clears the store and never resends what
was in it, and it keeps those packet ids in its pool for good. AckStorage hands such publishes back, the Publisher
frees their ids (gmqtt private: `_package_handler.id_generator`, pinned in pyproject.toml and tested in
tests/cloud/test_mqtt_publish.py) and publishes them again: a dead letter is never lost. The pool's size comes from
there too (`id_generator._max`): on_connect's properties do not tell the broker's Receive Maximum apart from ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gmqtt.storage import PersistentStorage

log = logging.getLogger("cloud.receiver")

# Packet ids kept free for SUBSCRIBE/UNSUBSCRIBE, which draw from the same pool.
_RESERVED_IDS = 2


@dataclass(slots=True, eq=False)
class _Pending:
    topic: str
    payload: bytes
    acked: asyncio.Future[None]
    retain: bool = False


class AckStorage(PersistentStorage):  # type: ignore[misc]  # gmqtt ships no type hints
    """gmqtt's in-flight store that also reports each PUBACK (`remove_message_by_mid`) and each session loss."""

    def __init__(self, on_acked: Callable[[int], None], on_lost: Callable[[list[int]], None]) -> None:
        super().__init__()
        self._on_acked = on_acked
        self._on_lost = on_lost
        self.last_mid: int | None = None

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self._on_acked(mid)

    def clear(self) -> None:
        mids = [mid for mid, _ in self.get_all()]
        super().clear()
        if mids:
            self._on_lost(mids)


class Publisher:
    """`await publish(topic, payload)` waits for room in the window and returns a future that the PUBACK resolves."""

    def __init__(self, default_window: int) -> None:
        self.storage = AckStorage(self._acked, self._lost)
        self._client: Any = None
        self._window = max(1, default_window - 1 - _RESERVED_IDS)
        self._default_window = default_window
        self._pending: dict[int, _Pending] = {}
        self._connected = False
        self._room = asyncio.Event()  # set when a slot may have opened
        self.published = 0
        self._resending: set[asyncio.Future[None]] = set()

    def attach(self, client: Any) -> None:
        self._client = client

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)

    @property
    def window(self) -> int:
        return self._window

    def connected(self) -> None:
        """Call from on_connect. gmqtt has just sized its id pool from the broker's Receive Maximum; the window is
        that pool less the reserve. (on_connect's properties can't tell it: gmqtt merges our own CONNECT properties
        over the broker's CONNACK ones, and both carry receive_maximum.)"""
        pool = int(getattr(self._ids(), "_max", self._default_window))
        self._window = max(1, pool - 1 - _RESERVED_IDS)  # gmqtt refuses the pool's last id
        self._connected = True
        self._notify()

    def _ids(self) -> Any:
        return self._client._package_handler.id_generator

    def disconnected(self) -> None:
        self._connected = False

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[None]:
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._send(_Pending(topic, payload, acked, retain))
        return acked

    async def _send(self, item: _Pending) -> None:
        while not (self._connected and len(self._pending) < self._window):
            self._room.clear()
            await self._room.wait()
        self._client.publish(item.topic, item.payload, qos=1, retain=item.retain)
        mid = self.storage.last_mid
        assert mid is not None, "gmqtt stored no packet for a QoS 1 publish"
        self.storage.last_mid = None
        self._pending[mid] = item
        self.published += 1

    def _acked(self, mid: int) -> None:
        item = self._pending.pop(mid, None)
        if item is None:
            return
        if not item.acked.done():
            item.acked.set_result(None)
        self._notify()

    def _lost(self, mids: list[int]) -> None:
        items = [self._pending.pop(mid) for mid in mids if mid in self._pending]
        ids = self._ids()
        for mid in mids:
            ids.free_id(mid)
        if items:
            log.warning("the broker lost our session: publishing %d dead letters/confirmations again", len(items))
            for item in items:
                task = asyncio.ensure_future(self._send(item))
                self._resending.add(task)
                task.add_done_callback(self._resending.discard)
        self._notify()

    def _notify(self) -> None:
        self._room.set()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until every publish is acknowledged (or `timeout`); True if none is left."""
        if self._pending:
            await asyncio.wait([p.acked for p in self._pending.values()], timeout=timeout)
        return not self._pending
