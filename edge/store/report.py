"""The status report (`edge-gw status --json`): built from the file alone, so it works with or without the daemon.

Shape (keys are stable; a value is null when unknown):
    {"version": 1, "db": path, "generated_ns": int,
     "buffer": {"rows", "held_rows", "bytes", "used_bytes", "max_bytes", "max_age_s", "policy",
                "oldest_unsent_ns", "oldest_unsent_age_s"},
     "counters": {name: int for every name in edge.metrics.COUNTERS},
     "dropped": {"cap", "age"}, "duplicates": int,
     "uplink": {"state", "last_ack_ns", ... as the uplink saved it} | {},
     "clock": {"synced", "boot_id", "corrections"},
     "gateway": {... the section the gateway saves, with "scanner" inside} | {},
     "store": {"max_bytes", "max_age_s", "policy"} | {}  (saved by a Store opened with explicit limits),
     "check": {...} | {}  the gateway's last start-up check (edge/store/check.py CheckReport: "checked_ns",
              "seconds", "wal", "wal_moved_to", "problem", "moved_to", "salvaged_readings", "salvaged_held",
              "lost_rows", "unreadable_ids"),
     "damage": {...} | {}  the same fields, for the last start at which the check moved a file aside,
     "sections": {section: {"updated_ns": int}},
     "tags": [{"mac", "data_format", "first_seen_ns", "last_seen_ns", "last_seen_age_s", "rssi",
               "battery_voltage", "values", "received", "expected", "completeness_pct"}, ...]  # sorted by mac
    }
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from edge.clock import Clock
from edge.metrics import COUNTERS
from edge.store.model import BufferStats, StoreLimits
from edge.store.tags import TAG_COLUMNS, TagState

REPORT_VERSION = 1


def _age_s(now_ns: int, then_ns: int | None) -> float | None:
    # + 0.0 turns the -0.0 that round() gives for tiny negative ages into 0.0
    return None if then_ns is None else round((now_ns - then_ns) / 1e9, 3) + 0.0


def build_report(conn: sqlite3.Connection, stats: BufferStats, limits: StoreLimits, clock: Clock,
                 path: str) -> dict[str, Any]:
    now = clock.wall_ns()
    sections: dict[str, dict[str, Any]] = {}
    updated: dict[str, dict[str, int]] = {}
    for section, blob, updated_ns in conn.execute("SELECT section, json, updated_ns FROM status ORDER BY section"):
        sections[section] = orjson.loads(blob)
        updated[section] = {"updated_ns": updated_ns}
    stored = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    counters = {name: int(stored.get(name, 0)) for name in COUNTERS}
    # The limits the daemon runs with (saved by its Store), else those this Store was opened with.
    saved_limits = sections.get("store", {})
    tags = []
    for row in conn.execute(f"SELECT {', '.join(TAG_COLUMNS)} FROM tags ORDER BY mac"):
        tag = TagState(*row)
        tags.append({
            "mac": tag.mac,
            "data_format": tag.data_format,
            "first_seen_ns": tag.first_seen_ns,
            "last_seen_ns": tag.last_seen_ns,
            "last_seen_age_s": _age_s(now, tag.last_seen_ns),
            "rssi": tag.rssi,
            "battery_voltage": tag.battery_voltage,
            "values": orjson.loads(tag.fields_json),
            "received": tag.received,
            "expected": tag.expected,
            "completeness_pct": tag.completeness_pct(),
        })
    return {
        "version": REPORT_VERSION,
        "db": path,
        "generated_ns": now,
        "buffer": {
            "rows": stats.rows,
            "held_rows": stats.held_rows,
            "bytes": stats.bytes,
            "used_bytes": stats.used_bytes,
            "max_bytes": saved_limits.get("max_bytes", limits.max_bytes),
            "max_age_s": saved_limits.get("max_age_s", limits.max_age_s),
            "policy": saved_limits.get("policy", limits.policy),
            "oldest_unsent_ns": stats.oldest_time_ns,
            "oldest_unsent_age_s": _age_s(now, stats.oldest_time_ns),
        },
        "counters": counters,
        "dropped": {"cap": counters["readings_dropped_cap"], "age": counters["readings_dropped_age"]},
        "duplicates": counters["duplicates"],
        "uplink": sections.get("uplink", {}),
        "clock": {"synced": clock.synced(), "boot_id": clock.boot_id(), "corrections": counters["clock_corrections"]},
        "gateway": sections.get("gateway", {}),
        "history": sections.get("history", {}),
        "store": saved_limits,
        "check": sections.get("check", {}),
        "damage": sections.get("damage", {}),
        "sections": updated,
        "tags": tags,
    }
