"""A batch with readings from the future (a gateway's clock stepped ahead), against a real Mosquitto and influxd: the
good readings are stored exactly, each future one is dead-lettered on its own with its reason, counted, and the
batch is confirmed to its gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from test_receiver_support import (
    Publisher,
    Subscriber,
    create_db,
    edge_batch,
    mac_text,
    make_config,
    now_ns,
    reading,
    start_receiver,
    stored,
    wait_until,
)

S = 1_000_000_000
MS = 1_000_000


def test_future_readings_are_dead_lettered_one_by_one_and_the_rest_stored_and_confirmed(
        mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    url = create_db(influxd)
    rr = start_receiver(make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.2"))
    dlq = Subscriber(mosquitto.port, "edge-gw/dlq", client_id="dlq-reader")
    gw = Subscriber(mosquitto.port, "edge-gw/pi-1/confirm", client_id="pi-1")
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 60 * S
        # The clock stepped an hour ahead after reading 36 of a 50-reading batch (the case: 36 good).
        readings = [reading(i, 100 + i, t0 + i * MS) for i in range(36)]
        readings += [reading(i, 100 + i, t0 + 3600 * S + i * MS) for i in range(36, 50)]
        # A second batch with nothing but future readings: nothing to store, still confirmed.
        only_future = [reading(i, 200 + i, t0 + 3600 * S + i * MS) for i in range(50, 53)]
        pub.publish([("edge-gw/pi-1/batch", edge_batch("pi-1", 7, readings)),
                     ("edge-gw/pi-1/batch", edge_batch("pi-1", 8, only_future))])
        wait_until(lambda: len(dlq.messages) == 17 and len(gw.messages) >= 1, 20, "dead letters and confirmation")
        wait_until(lambda: rr.receiver.counts.written == 36, 10, "36 points written")

        pts = stored(influxd)
        assert sorted((p["time"], p["mac"], p["measurement_sequence_number"]) for p in pts) == \
            [(t0 + i * MS, mac_text(i), 100 + i) for i in range(36)]
        records = [orjson.loads(payload) for _, payload in dlq.messages]
        assert {r["stage"] for r in records} == {"reading"}
        assert {r["topic"] for r in records} == {"edge-gw/pi-1/batch"}
        got = sorted((orjson.loads(r["payload"])["mac"], orjson.loads(r["payload"])["time_ns"]) for r in records)
        assert got == [(mac_text(i), t0 + 3600 * S + i * MS) for i in range(36, 53)]
        for r in records:
            one = orjson.loads(r["payload"])
            assert one["fields"]["measurement_sequence_number"] in range(136, 150) or \
                one["fields"]["measurement_sequence_number"] in range(250, 253)
            assert f"timestamp {one['time_ns']} is outside [now - 31622400 s, now + 300 s]: 3" in r["reason"]
            assert r["reason"].endswith(" s ahead of the receiver")
        # One confirmation for both batches: a dead-lettered reading counts as handled.
        assert gw.messages == [("edge-gw/pi-1/confirm", b'{"v":1,"gateway":"pi-1","seqs":[[7,8]]}')]
        wait_until(lambda: rr.metric("cloud_ingest_readings_refused_total", {"reason": "ahead"}) == 17, 5,
                   "the refused counter")
        assert rr.metric("cloud_ingest_dead_letters_total", {"stage": "reading"}) == 17
        assert rr.metric("cloud_ingest_readings_refused_total", {"reason": "too_old"}) == 0
        assert rr.metric("cloud_ingest_points_written_total") == 36
        c = rr.receiver.counts
        assert (c.received_readings, c.written, c.dead_letters, c.refused_readings) == (53, 36, 17, 17)
    finally:
        pub.close()
        dlq.close()
        gw.close()
        rr.stop()
    assert not rr.error
