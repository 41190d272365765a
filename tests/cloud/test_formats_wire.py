"""The edge side and the cloud side agree: every decoder test vector, encoded by edge.wire as a gateway sends it,
parsed by cloud.formats.edge_batch, then written to the real influxd in one measurement without a field-type
conflict."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from servers import Influxd, series_values

from cloud.formats import Router
from cloud.formats._common import BOOL_FIELDS, FLOAT_FIELDS, INT_FIELDS
from cloud.sinks import open_sink
from core.ruuvi import derived
from edge.model import Reading
from edge.wire import encode_batch

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "ruuvi.json").read_text())


def readings(now: int) -> list[Reading]:
    out = []
    for i, v in enumerate(x for x in VECTORS if "expected" in x):
        fields: dict[str, Any] = dict(v["expected"])
        fields.update(derived(fields))
        mac = f"aa:bb:cc:dd:{i // 256:02x}:{i % 256:02x}"
        raw = bytes.fromhex(v["hex"])
        out.append(Reading(mac, now - i * 10**9, 0, True, -60 - i % 40, raw[0], raw, fields))
    return out


def test_every_vector_through_the_wire_format_into_influxd(influxd: Influxd) -> None:
    now = time.time_ns() - 3600 * 10**9
    rs = readings(now)
    payload = encode_batch("pi-1", 7, rs)
    parsed = Router().route("edge-gw/pi-1/batch", payload)
    assert parsed.gateway == "pi-1"
    by_mac = {p.tags["mac"]: p for p in parsed.points}
    for r in rs:
        p = by_mac[r.mac]
        assert p.time_ns == r.time_ns
        assert p.tags == {"mac": r.mac, "gateway": "pi-1", "data_format": str(r.data_format)}
        expected = {k: v for k, v in r.fields.items() if v is not None and k not in ("mac", "data_format")}
        assert {k: v for k, v in p.fields.items() if k != "rssi"} == expected
        assert p.fields["rssi"] == r.rssi
        for k, v in p.fields.items():
            want = float if k in FLOAT_FIELDS else int if k in INT_FIELDS else bool if k in BOOL_FIELDS else None
            assert type(v) is want, (k, v)
    assert len(parsed.points) == len(rs)

    influxd.query("CREATE DATABASE iot", method="POST")

    async def run() -> None:
        sink = open_sink(f"{influxd.url}/iot")
        out = await sink.write(parsed.points)
        assert (out.written, out.rejected) == (len(rs), [])
        await sink.close()

    asyncio.run(run())
    kinds = dict(series_values(influxd.query("SHOW FIELD KEYS FROM ruuvi", "iot")))
    for k, kind in kinds.items():
        want = "float" if k in FLOAT_FIELDS else "integer" if k in INT_FIELDS else "boolean"
        assert kind == want, k
    assert {"temperature", "pm2_5", "co2", "encrypted", "dew_point", "rssi"} <= set(kinds)
    formats = series_values(influxd.query('SHOW TAG VALUES FROM ruuvi WITH KEY = "data_format"', "iot"))
    assert sorted(v for _, v in formats) == ["197", "225", "3", "5", "6", "8"]
