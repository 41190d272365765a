"""Home Assistant MQTT discovery for the tags cloud-ingest hears through Ruuvi Gateways ([homeassistant]; off by
default; docs/homeassistant.md). Tags of edge-gw gateways are announced by the gateways themselves.

The configs and states come from core.homeassistant, as in edge-gw; they go out through the receiver's own
flow-controlled publisher (cloud/mqtt_publish.py), so they share its window with dead letters and confirmations and
never overflow gmqtt's packet ids. The message path only stores the latest point per tag (`offer`); a task publishes
at most one state per tag per `state_interval`.

Differences from edge-gw: one HA node per Ruuvi Gateway (its MAC, as the `gateway` tag has it), states under
`<state_prefix>/<node>/<tag MAC>`; no availability topic (a Ruuvi Gateway's own status is not ours to interpret),
so a tag or a whole gateway going silent shows through expire_after alone; configs again on every reconnect to the
broker (HA's birth message is not subscribed to: the receiver's subscriptions are its input). A sensor set only
grows while a tag keeps its format: the gateway's points leave out "not available" values, which must not remove
a sensor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cloud.model import Point
from core import homeassistant as ha

log = logging.getLogger("cloud.homeassistant")

Publish = Callable[..., Awaitable[asyncio.Future[None]]]


@dataclass(frozen=True)
class CloudHaSettings:
    discovery_prefix: str = ha.DISCOVERY_PREFIX
    state_prefix: str = "cloud-ingest/ha"
    state_interval_s: float = 10.0
    expire_after_s: int = 300
    remove_after_s: float = 86400.0  # 0: never
    tick_s: float = 0.2


@dataclass
class _Tag:
    node: ha.Node
    data_format: int
    names: set[str]
    configs: dict[str, bytes]
    heard: float
    point: Point | None = None
    last_state: float = -1e18
    pending: bool = False


class CloudHa:
    def __init__(self, settings: CloudHaSettings, mono: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._mono = mono
        self._latest: dict[tuple[str, str], Point] = {}  # (gateway, mac) -> latest point
        self._tags: dict[tuple[str, str], _Tag] = {}
        self._nodes: dict[str, ha.Node] = {}
        self._reannounce = False
        self.configs = 0
        self.states = 0
        self.cleared = 0

    def offer(self, points: Sequence[Point]) -> None:
        """From the message path: one dict store per point."""
        for p in points:
            gw, mac = p.tags.get("gateway"), p.tags.get("mac")
            if gw and mac:
                self._latest[(gw, mac)] = p

    def connected(self) -> None:
        """After a (re)connect: announce every tag again (the broker may have lost its retained messages)."""
        self._reannounce = True

    def _node(self, gateway: str) -> ha.Node:
        node = self._nodes.get(gateway)
        if node is None:
            s = self.settings
            node_id = ha.object_id(gateway)
            node = ha.Node(node_id=node_id, gateway_name=f"Ruuvi Gateway {gateway}",
                           state_prefix=f"{s.state_prefix}/{node_id}", expire_after=s.expire_after_s,
                           discovery_prefix=s.discovery_prefix, origin="cloud-ingest", model="Ruuvi Gateway")
            self._nodes[gateway] = node
        return node

    async def run(self, publish: Publish) -> None:
        while True:
            await self.tick(publish)
            await asyncio.sleep(self.settings.tick_s)

    async def tick(self, publish: Publish) -> None:
        now = self._mono()
        s = self.settings
        if self._reannounce:
            self._reannounce = False
            for tag in self._tags.values():
                await self._publish_configs(publish, tag.configs)
        for key, point in list(self._latest.items()):
            known = self._tags.get(key)
            if known is not None and known.point is point:
                continue
            try:
                fmt = int(point.tags.get("data_format", ""))
                names = set(point.fields)
                if known is None or known.data_format != fmt or not names <= known.names:
                    node = self._node(key[0])
                    keep = known.names if known is not None and known.data_format == fmt else set()
                    configs = ha.tag_configs(node, key[1], fmt, keep | names)
                    if known is not None:
                        await self._clear(publish, [t for t in known.configs if t not in configs])
                    await self._publish_configs(publish, {t: p for t, p in configs.items()
                                                          if known is None or known.configs.get(t) != p})
                    known = _Tag(node, fmt, keep | names, configs, now)
                    self._tags[key] = known
                tag = known
            except (ValueError, ha.DiscoveryError) as e:
                log.debug("homeassistant: not announcing %s: %s", key, e)
                self._latest.pop(key, None)
                continue
            tag.point = point
            tag.heard = now
            tag.pending = bool(tag.configs)
        for key, tag in self._tags.items():
            if tag.pending and tag.point is not None and now - tag.last_state >= s.state_interval_s:
                await publish(ha.state_topic(tag.node, key[1]), ha.state_payload(tag.data_format, tag.point.fields))
                tag.last_state = now
                tag.pending = False
                self.states += 1
        if s.remove_after_s > 0:
            for key in [k for k, t in self._tags.items() if now - t.heard >= s.remove_after_s]:
                tag = self._tags.pop(key)
                if self._latest.get(key) is tag.point:
                    self._latest.pop(key, None)
                log.info("homeassistant: tag %s (via %s) not heard for %.0f s; removing its configs", key[1], key[0],
                         now - tag.heard)
                await self._clear(publish, list(tag.configs))

    async def _publish_configs(self, publish: Publish, configs: dict[str, bytes]) -> None:
        for topic, payload in configs.items():
            await publish(topic, payload, retain=True)
        self.configs += len(configs)

    async def _clear(self, publish: Publish, topics: list[str]) -> None:
        for topic in topics:
            await publish(topic, b"", retain=True)
        self.cleared += len(topics)
