"""Home Assistant MQTT discovery for the tags this gateway hears ([homeassistant] in the config; docs/homeassistant.md).

The configs and states come from core.homeassistant; this is the thin publisher around them. It runs in a thread
of its own with its own paho session (edge.mqtt.Session) to the same broker as the uplink, rather than inside the
uplink's session: the uplink's window, PUBACK timeout and confirmation path stay exactly as they are (a burst of a
thousand retained configs at start, or HA's birth message, never takes a batch's slot or delays a deletion), and a
broker refusing a discovery topic (ACL) cannot cost the uplink its connection. The cost is one more TCP connection.

The pipeline's only work is `offer()`: one dict store per reading (the latest reading per tag). The thread picks
them up every `tick_s`, so a tag gets at most one state per `state_interval` whatever its advert rate.

- configs: once per tag (again when its format's sensors change), again on every (re)connect and whenever HA says
  `<discovery_prefix>/status` = online (its birth message: it may have lost them);
- availability: the uplink's retained `<prefix>/<id>/status` (its last will says offline), plus HA's expire_after;
- clean-up: a tag not heard for `remove_after` gets every retained config cleared (an empty retained message), and
  so does a sensor its format no longer has; configs of this node left retained by an earlier run (seen through
  a subscription to this node's configs) are cleared once `remove_after` passed without hearing their tag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core import homeassistant as ha
from core.backoff import Backoff
from core.ratelog import RateLimitedLog
from core.wire import status_topic
from edge.model import Reading
from edge.mqtt import ConnectionLost, MqttSettings, Session, UplinkError

log = logging.getLogger("edge.homeassistant")
_failed = RateLimitedLog(log, 60.0)


@dataclass(frozen=True)
class HaSettings:
    node: ha.Node
    state_interval_s: float = 10.0
    remove_after_s: float = 86400.0  # 0: never
    tick_s: float = 0.2


@dataclass
class _Tag:
    data_format: int
    names: tuple[str, ...]  # the reading's field names the configs were built from
    configs: dict[str, bytes]
    heard: float  # monotonic s of the last new reading
    last_state: float = -1e18
    reading: Reading | None = None  # the last one handled
    pending: bool = False  # a reading not yet published as state


def node_for(gateway_id: str, topic_prefix: str, discovery_prefix: str, state_prefix: str,
             expire_after_s: float) -> ha.Node:
    return ha.Node(
        node_id=ha.object_id(gateway_id),
        gateway_name=f"edge-gw {gateway_id}",
        state_prefix=state_prefix or f"{topic_prefix}/{gateway_id}/ha",
        expire_after=int(expire_after_s),
        discovery_prefix=discovery_prefix,
        status_topic=status_topic(topic_prefix, gateway_id),
    )


@dataclass
class _Counts:
    configs: int = 0
    states: int = 0
    cleared: int = 0
    connects: int = 0


class HaPublisher:
    def __init__(self, mqtt: MqttSettings, client_id: str, settings: HaSettings,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.mqtt = mqtt
        self.client_id = client_id
        self.settings = settings
        self.node = settings.node
        self._mono = mono
        self._latest: dict[str, Reading] = {}  # written by the pipeline, read by the thread (one store/read each)
        self._tags: dict[str, _Tag] = {}
        self._gateway = ha.gateway_config(self.node)
        self._leftovers: dict[str, float] = {}  # retained config topic of an earlier run -> when seen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts = _Counts()
        self.connected = threading.Event()

    # ---- the pipeline's side: nothing but a dict store --------------------------------------------------------

    def offer(self, reading: Reading) -> None:
        self._latest[reading.mac] = reading

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._stop.is_set():
            session = Session(self.mqtt, self.client_id)
            try:
                session.open(cancelled=self._stop.is_set)
                self.counts.connects += 1
                backoff.reset()
                self._serve(session)
                session.close(graceful=True)
            except UplinkError as e:
                _failed.warning("homeassistant: %s", e)
                session.close(graceful=False)
            finally:
                self.connected.clear()
            self._stop.wait(backoff.next_delay())

    def _serve(self, session: Session) -> None:
        node = self.node
        for topic in (node.birth_topic, node.config_topics_filter()):
            refused = session.subscribe(topic, self.mqtt.connect_timeout_s)
            if refused is not None:
                log.warning("homeassistant: the broker refused the subscription to %s (%s)", topic, refused)
        self._announce_all(session)
        self.connected.set()
        log.info("homeassistant: connected to %s as %s; announcing tags under %s/.../%s", self.mqtt.describe(),
                 self.client_id, node.discovery_prefix, node.node_id)
        while not self._stop.is_set():
            session.poll(self.settings.tick_s)
            for topic, payload in session.take_messages():
                self._message(session, topic, payload)
            if session.lost is not None:
                raise ConnectionLost(f"connection to {self.mqtt.describe()} lost: {session.lost}")
            self._tick(session)

    def _message(self, session: Session, topic: str, payload: bytes) -> None:
        if topic == self.node.birth_topic:
            if payload.strip() == b"online":
                log.info("homeassistant: Home Assistant came online; announcing %d tags again", len(self._tags))
                self._announce_all(session)
            return
        # A config under our node: ours (an echo), or one an earlier run left retained.
        if self._gateway is not None and topic == self._gateway[0]:
            return
        if payload and not any(topic in t.configs for t in self._tags.values()):
            self._leftovers.setdefault(topic, self._mono())
        elif not payload:
            self._leftovers.pop(topic, None)

    def _announce_all(self, session: Session) -> None:
        if self._gateway is not None:
            session.publish(self._gateway[0], self._gateway[1], retain=True)
        for tag in self._tags.values():
            self._publish_configs(session, tag.configs)

    def _publish_configs(self, session: Session, configs: dict[str, bytes]) -> None:
        for topic, payload in configs.items():
            session.publish(topic, payload, retain=True)
            self._leftovers.pop(topic, None)
        self.counts.configs += len(configs)

    def _clear(self, session: Session, topics: list[str]) -> None:
        for topic in topics:
            session.publish(topic, b"", retain=True)
        self.counts.cleared += len(topics)

    def _tick(self, session: Session) -> None:
        now = self._mono()
        s = self.settings
        for mac, reading in list(self._latest.items()):
            tag = self._tags.get(mac)
            if tag is not None and tag.reading is reading:
                continue
            names = (*reading.fields, *(("rssi",) if reading.rssi is not None else ()))
            if tag is None or tag.data_format != reading.data_format or tag.names != names:
                # A new tag, or its sensors changed (new firmware, another format, derived values switched).
                configs = ha.tag_configs(self.node, mac, reading.data_format, names)
                if tag is not None:
                    self._clear(session, [t for t in tag.configs if t not in configs])
                new = {t: p for t, p in configs.items() if tag is None or tag.configs.get(t) != p}
                tag = _Tag(reading.data_format, names, configs, now)
                self._tags[mac] = tag
                self._publish_configs(session, new)
            tag.reading = reading
            tag.heard = now
            tag.pending = bool(tag.configs)
        for mac, tag in self._tags.items():
            if tag.pending and now - tag.last_state >= s.state_interval_s and tag.reading is not None:
                r = tag.reading
                fields = dict(r.fields, rssi=r.rssi) if r.rssi is not None else r.fields
                session.publish(ha.state_topic(self.node, mac), ha.state_payload(r.data_format, fields))
                tag.last_state = now
                tag.pending = False
                self.counts.states += 1
        if s.remove_after_s > 0:
            self._clean_up(session, now)

    def _clean_up(self, session: Session, now: float) -> None:
        gone = [mac for mac, tag in self._tags.items() if now - tag.heard >= self.settings.remove_after_s]
        for mac in gone:
            tag = self._tags.pop(mac)
            # Only if nothing newer came meanwhile (the pipeline may have just stored one).
            if self._latest.get(mac) is tag.reading:
                self._latest.pop(mac, None)
            log.info("homeassistant: tag %s not heard for %.0f s; removing its %d configs", mac, now - tag.heard,
                     len(tag.configs))
            self._clear(session, list(tag.configs))
        old = [t for t, seen in self._leftovers.items() if now - seen >= self.settings.remove_after_s]
        if old:
            log.info("homeassistant: removing %d configs an earlier run left for tags not heard since", len(old))
            self._clear(session, old)
            for t in old:
                del self._leftovers[t]

    def state(self) -> dict[str, int | bool]:
        return {"connected": self.connected.is_set(), "tags": len(self._tags), "configs": self.counts.configs,
                "states": self.counts.states, "cleared": self.counts.cleared}
