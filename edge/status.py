"""`edge-gw status` on one screen, rendered from `Store.report()` (the same data `--json` prints)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from edge.store import Store, StoreError, walid
from edge.store.check import integrity
from edge.store.lock import holder

SHOWN_VALUES = ("temperature", "humidity", "pressure", "co2", "pm2_5")
UNITS = {"temperature": "°C", "humidity": "%", "pressure": "Pa", "co2": "ppm", "pm2_5": "µg/m³"}


def load(path: Path) -> dict[str, Any]:
    """`Store.report()` of the buffer at `path`, with "daemon_pid" and "integrity": when no daemon runs on it (a
    running one checked the file at its start, see "check"), "ok" or the first problem `PRAGMA quick_check` finds;
    null while a daemon runs. Raises StoreError, one line, when the file cannot be read at all, or when a -wal
    beside it does not belong to it (reading would replay it; the gateway moves it aside at its next start)."""
    pid = holder(path)
    if pid is None:
        verdict = walid.verify(path)
        if verdict in ("foreign", "unverifiable"):
            msg = f"buffer {path}: the -wal beside it does not belong to it ({verdict})"
            raise StoreError(msg)
    store = Store(path, readonly=True)
    try:
        report = store.report()
    finally:
        store.close()
    report["daemon_pid"] = pid
    report["integrity"] = (integrity(path) or "ok") if pid is None else None
    return report


def _moved(d: dict[str, Any]) -> str:
    parts = []
    if d.get("moved_to"):
        lost = "an unknown number of" if d.get("lost_rows") is None else str(d["lost_rows"])
        parts.append(f"{d.get('problem')}: salvaged {d.get('salvaged_readings', 0)} readings"
                     f" (+{d.get('salvaged_held', 0)} held), lost {lost} rows; damaged file moved to {d['moved_to']}")
    if d.get("wal_moved_to"):
        parts.append(f"a -wal that was not its own ({d.get('wal')}) moved to {d['wal_moved_to']}")
    return "; ".join(parts)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def _when(ns: int | None) -> str:
    if not ns:
        return "never"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def render(report: dict[str, Any], *, now_ns: int) -> str:
    buf = report["buffer"]
    c = report["counters"]
    gw = report.get("gateway") or {}
    up = report.get("uplink") or {}
    scanner = gw.get("scanner") or {}
    heartbeat = gw.get("heartbeat_ns")
    fresh = bool(gw.get("running")) and heartbeat is not None and now_ns - heartbeat < 10 * 10**9
    pid = report.get("daemon_pid", gw.get("pid") if fresh else None)  # the buffer's lock, where the caller read it
    running = pid is not None
    daemon = f"running (pid {pid})" if running else "not running"
    if running and not fresh:
        daemon += f", but its status is {_ago(None if heartbeat is None else (now_ns - heartbeat) / 1e9)[:-4]} old: " \
                  "it cannot write its buffer (disk full?)"
    # What the uplink saved is current only while the daemon runs; a stopped gateway sends everything again.
    awaiting = int(up.get("awaiting_confirm") or 0) if running else 0
    unsent = max(0, buf["rows"] - int(up.get("unconfirmed") or 0)) if running else buf["rows"]
    oldest_sent = up.get("oldest_unconfirmed_ns") if running else None
    lines = [
        f"gateway   {gw.get('id', '-')}  daemon {daemon}"
        f"  source {gw.get('source', '-')}  db {report['db']}",
        f"buffer    {buf['rows']} readings: {unsent} not yet sent, {awaiting} sent and awaiting the cloud's"
        f" confirmation (oldest sent {_ago(None if not oldest_sent else (now_ns - oldest_sent) / 1e9)});"
        f" {buf.get('held_rows') or 0} held for clock sync",
        f"          {_size(buf['bytes'])} of {_size(buf['max_bytes'])}, oldest buffered"
        f" {_ago(buf['oldest_unsent_age_s'])}, policy {buf['policy']}",
        f"counters  adverts {c['adverts_received']}  stored {c['readings_stored']}  delivered {c['readings_acked']}"
        f"  duplicates {c['duplicates']}  decode errors {c['decode_errors']}",
        f"dropped   cap {report['dropped']['cap']}  age {report['dropped']['age']}",
        f"uplink    {up.get('state', 'unknown')}  broker {up.get('broker', '-')}"
        f"  deletes on {'the cloud' if up.get('confirm', 'cloud') == 'cloud' else 'the broker'}'s confirmation"
        f"  last delivered {_when(up.get('last_ack_ns'))}  in flight {up.get('inflight', 0)}"
        f"  confirm timeouts {c.get('confirm_timeouts', 0)}  reconnects {c['uplink_reconnects']}",
        f"clock     {'synchronised' if gw.get('clock_synced', report['clock']['synced']) else 'NOT synchronised'}"
        f"  corrected readings {report['clock']['corrections']}",
        f"scanner   {scanner.get('state', '-')}  adapter {scanner.get('adapter') or '-'}"
        f"  restarts {c['scanner_restarts']}  adapter resets {c['adapter_resets']}",
    ]
    check = report.get("check") or {}
    if check:
        lines.append(f"check     at start {_when(check.get('checked_ns'))}: "
                     + ("ok" if not (check.get("problem") or check.get("wal_moved_to")) else "REPAIRED")
                     + f" in {check.get('seconds', 0):.2f} s")
    integrity_now = report.get("integrity")
    if integrity_now not in (None, "ok"):
        lines.append(f"integrity DAMAGED: {integrity_now} (the gateway salvages what it can read at its next start)")
    damage = report.get("damage") or {}
    if damage:
        lines.append(f"damage    {_when(damage.get('checked_ns'))}: {_moved(damage)}")
    tags = report.get("tags") or []
    lines.append("")
    if not tags:
        lines.append("no tags seen yet")
        return "\n".join(lines)
    rows = [["tag", "fmt", "last seen", "rssi", "battery", *(f"{k} {UNITS[k]}" for k in SHOWN_VALUES), "complete"]]
    for t in tags:
        values = t.get("values") or {}
        pct = t.get("completeness_pct")
        rows.append(
            [
                t["mac"],
                f"{t['data_format']:X}" if isinstance(t["data_format"], int) else "-",
                _ago(t.get("last_seen_age_s")),
                "-" if t.get("rssi") is None else f"{t['rssi']} dBm",
                "-" if t.get("battery_voltage") is None else f"{t['battery_voltage']} mV",
                *("-" if values.get(k) is None else str(values[k]) for k in SHOWN_VALUES),
                "-" if pct is None else f"{pct:.1f} %",
            ]
        )
    lines.extend(_table(rows))
    lines.extend(_history(report.get("history") or {}, c))
    return "\n".join(lines)


def _history(history: dict[str, Any], c: dict[str, int]) -> list[str]:
    """Per tag with a gap: what the history download (edge/history.py) is doing about it."""
    if not history.get("enabled"):
        return []
    lines = ["", f"history   downloads {c.get('history_downloads', 0)}  records {c.get('history_records', 0)}"
                 f"  failures {c.get('history_failures', 0)}"]
    tags = history.get("tags") or {}
    if not tags:
        return [*lines, "          no gap found yet"]
    rows = [["tag", "history", "open gap (tag time)", "records", "downloads", "failures", "last error"]]
    for mac, t in sorted(tags.items()):
        gaps = t.get("gaps") or []
        gap = "-" if not gaps else f"{_when(gaps[0][0] * 10**9)} .. {_when(gaps[0][1] * 10**9)}" + (
            f" (+{len(gaps) - 1} more)" if len(gaps) > 1 else "")
        rows.append([mac, t["state"], gap, str(t["records"]), str(t["downloads"]), str(t["failures"]),
                     t["last_error"] or "-"])
    return [*lines, *_table(rows)]
