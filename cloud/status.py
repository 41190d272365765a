"""The receiver's status file and its rendering for `cloud-ingest status`.

The running receiver rewrites the file every `status.interval` (atomically: a temp file, then rename), so `status`
works from another shell, another user with read access, or after the receiver died (it then says how stale it is).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

VERSION = 1


@dataclass
class GatewayState:
    last_seen_ns: int = 0
    state: str = "unknown"  # from the gateway's status message: "online", "offline", or "unknown" before one
    state_ns: int = 0
    readings: int = 0
    duplicates: int = 0


@dataclass
class Status:
    client_id: str = ""
    pid: int = 0
    started_ns: int = 0
    updated_ns: int = 0
    mqtt_connected: bool = False
    sink_state: str = "unknown"
    sink_error: str = ""
    # What the sink is when it is not the database (`cloud-ingest bridge`: "kafka <bootstrap> topic <topic> ..."),
    # and its own counts (records produced, produce errors, records queued).
    sink_name: str = ""
    sink_counts: dict[str, int] = field(default_factory=dict)
    queue_batches: int = 0
    queue_points: int = 0
    inflight_messages: int = 0
    last_write_ns: int = 0
    last_batch_points: int = 0
    received_messages: int = 0
    received_readings: int = 0
    written: int = 0
    dead_letters: int = 0
    refused_readings: int = 0  # of the dead letters: readings refused on their own (a timestamp out of bounds)
    duplicates: int = 0
    redeliveries: int = 0
    held_back_reconnects: int = 0  # reconnects to get a message the broker held back (cloud/mqtt_gaps.py)
    resent_points: int = 0  # points dedup dropped as written before (a gateway's re-send, an MQTT redelivery)
    confirmations: int = 0  # confirmation messages published to edge-gw gateways
    confirmed_seqs: int = 0  # batch seqs they carried
    # Messages the broker dropped (cloud/broker_sys.py): the broker-wide count from Mosquitto's $SYS, over this
    # receiver's lifetime; "ok" while $SYS counters arrive, "unavailable" when none came, "unknown" before.
    broker_sys: str = "unknown"
    broker_dropped: int = 0
    broker_dropped_raw: int = -1  # the broker's own counter at the last look (-1: never seen)
    broker_uptime_s: int = 0  # ... the broker's uptime then, and when that was
    broker_seen_ns: int = 0
    broker_last_drop_ns: int = 0  # when the receiver last saw the counter rise
    gateways: dict[str, GatewayState] = field(default_factory=dict)
    # Alerts on the data firing now, as last published: {"rule", "mac", "since_ns", "value"} (cloud/alert_hook.py)
    alerts_firing: list[dict[str, Any]] = field(default_factory=list)
    # The Ruuvi Gateway HTTP listener (cloud/http_input.py): its URL ("" when off), answers by code, readings.
    http_listen: str = ""
    http_requests: dict[str, int] = field(default_factory=dict)
    http_readings: int = 0
    # `run --kafka` (cloud/kafka/consumer.py): per assigned partition "<topic>/<partition>", the group's committed
    # offset, the high watermark and the lag between them (-1: not known yet).
    kafka_partitions: dict[str, dict[str, int]] = field(default_factory=dict)
    input: str = "mqtt"  # where messages come from: "mqtt" or "kafka" (mqtt_connected then means the consumer's)

    def to_json(self) -> bytes:
        return orjson.dumps({"v": VERSION, **asdict(self)}, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Status:
        obj: dict[str, Any] = orjson.loads(data)
        obj.pop("v", None)
        gateways = {k: GatewayState(**v) for k, v in obj.pop("gateways", {}).items()}
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        return cls(**known, gateways=gateways)


def write(path: Path, status: Status) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(status.to_json())
    os.replace(tmp, path)


def read(path: Path) -> Status | None:
    with contextlib.suppress(FileNotFoundError):
        return Status.from_json(path.read_bytes())
    return None


def _ago(ns: int, now_ns: int) -> str:
    if not ns:
        return "never"
    s = max(0.0, (now_ns - ns) / 1e9)
    if s < 120:
        return f"{s:.1f} s ago"
    if s < 7200:
        return f"{s / 60:.1f} min ago"
    return f"{s / 3600:.1f} h ago"


def running(status: Status, interval_s: float, now_ns: int) -> bool:
    """The receiver counts as running when it updated the file within 3 intervals (and at least 5 s)."""
    return (now_ns - status.updated_ns) / 1e9 <= max(3 * interval_s, 5.0)


def gateway_online(gw: GatewayState, offline_after_s: float, now_ns: int) -> bool:
    """Online when its last status message said so (or it never sent one) and it was heard recently."""
    return gw.state != "offline" and (now_ns - gw.last_seen_ns) / 1e9 <= offline_after_s


def _broker_drops(status: Status, now_ns: int) -> str:
    if status.broker_dropped_raw < 0:
        why = "no $SYS counters from the broker (ACL?)" if status.broker_sys == "unavailable" else "not seen yet"
        return f"unknown: {why}"
    text = f"{status.broker_dropped} messages dropped by the broker (full session queues)"
    if status.broker_dropped:
        text = f"DROPPING: {text}, the last seen {_ago(status.broker_last_drop_ns, now_ns)}"
    if status.broker_sys != "ok":
        text += f"; $SYS counters {status.broker_sys} now"
    return text


def _partition_order(name: str) -> tuple[str, int]:
    topic, _, partition = name.rpartition("/")
    return topic, int(partition) if partition.isdigit() else -1


def render(status: Status, *, interval_s: float, offline_after_s: float, now_ns: int | None = None) -> str:
    now = time.time_ns() if now_ns is None else now_ns
    up = running(status, interval_s, now)
    lines = [
        f"receiver:       {'running' if up else 'NOT RUNNING'} (client id {status.client_id}, pid {status.pid}, "
        f"status updated {_ago(status.updated_ns, now)})",
        f"{status.input + ':':<16}{'connected' if status.mqtt_connected and up else 'disconnected'}",
        f"{status.sink_name.split(' ', 1)[0] + ':' if status.sink_name else 'database:':<16}{status.sink_state}"
        + (f" (last error: {status.sink_error})" if status.sink_error else ""),
        f"queue:          {status.queue_batches} batches, {status.queue_points} points, "
        f"{status.inflight_messages} messages not acknowledged",
        f"last write:     {_ago(status.last_write_ns, now)} ({status.last_batch_points} points)",
        f"received:       {status.received_messages} messages, {status.received_readings} readings"
        + (f", {status.held_back_reconnects} reconnects for a message the broker held back"
           if status.held_back_reconnects else ""),
        f"written:        {status.written} points",
        f"dead letters:   {status.dead_letters} ({status.refused_readings} readings refused on their own)",
        f"duplicates:     {status.duplicates} (cross-gateway), {status.resent_points} points written before (re-sent), "
        f"{status.redeliveries} messages redelivered (DUP)",
        f"confirmed:      {status.confirmed_seqs} edge-gw batches, in {status.confirmations} messages",
        f"broker drops:   {_broker_drops(status, now)}",
        f"gateways:       {len(status.gateways)}",
    ]
    if status.sink_name:
        # The file keeps keys sorted; shown in the order they happen, any other after them.
        known = [k for k in ("records_produced", "produce_errors", "queued_records") if k in status.sink_counts]
        order = known + sorted(set(status.sink_counts) - set(known))
        counts = ", ".join(f"{status.sink_counts[k]} {k.replace('_', ' ')}" for k in order)
        lines.insert(3, f"  {status.sink_name}" + (f": {counts}" if counts else ""))
    if status.http_listen or status.http_requests:
        codes = ", ".join(f"{n} x {code}" for code, n in sorted(status.http_requests.items())) or "no requests"
        lines.insert(-1, f"http:           {status.http_listen or 'off'}: {codes}, {status.http_readings} readings")
    width = max((len(g) for g in status.gateways), default=7)
    for name in sorted(status.gateways):
        gw = status.gateways[name]
        state = "online" if gateway_online(gw, offline_after_s, now) else "OFFLINE"
        lines.append(f"  {name:<{width}}  {state:<7}  last seen {_ago(gw.last_seen_ns, now)}, "
                     f"{gw.readings} readings, {gw.duplicates} duplicates")
    if status.kafka_partitions:
        lag = sum(max(0, p.get("lag", 0)) for p in status.kafka_partitions.values())
        lines.append(f"kafka:          {len(status.kafka_partitions)} partitions assigned, lag {lag} records")
        width = max(len(name) for name in status.kafka_partitions)
        for name, p in sorted(status.kafka_partitions.items(), key=lambda kv: _partition_order(kv[0])):
            lines.append(f"  {name:<{width}}  committed {p.get('committed', -1)}, high watermark "
                         f"{p.get('high', -1)}, lag {p.get('lag', -1)}")
    if status.alerts_firing:  # the line is left out while none fire, as before alerts existed
        lines.append(f"alerts firing:  {len(status.alerts_firing)}")
    for a in status.alerts_firing:
        lines.append(f"  {a.get('rule')}  {a.get('mac')}  since {_ago(int(a.get('since_ns') or 0), now)}, "
                     f"value {a.get('value')}")
    return "\n".join(lines)
