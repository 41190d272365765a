"""cloud-ingest's Home Assistant discovery for Ruuvi Gateway tags: real Mosquitto and influxd, the receiver with
[homeassistant] on; configs pass HA's rules (tests/ha_rules.py), states carry the values, a silent tag goes
unavailable and then its configs leave the broker; edge-gw traffic is not announced (its gateways do that)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from ha_rules import HaModel, retained, wait_until
from servers import Influxd, Mosquitto
from test_receiver_support import (
    Publisher,
    RunningReceiver,
    create_db,
    edge_batch,
    make_config,
    reading,
    ruuvi_gw_message,
    start_receiver,
)

from cloud.config import homeassistant_settings
from cloud.homeassistant import CloudHa
from core.ruuvi import decode
from edge.sources import encode

GW_MAC = "AA:BB:CC:DD:EE:01"
NODE = "aa_bb_cc_dd_ee_01"


def e1_message(tag_mac: str, seq: int, ts_s: int) -> tuple[str, bytes]:
    payload = encode.e1(temperature=19.5, humidity=55.0, pressure=101_000, pm2_5=4.2, co2=840, voc_index=120,
                        nox_index=1, luminosity=12.5, sequence=seq, mac=tag_mac)
    advert = bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
    body = orjson.dumps({"gw_mac": GW_MAC, "rssi": -71, "aoa": [], "gwts": ts_s, "ts": ts_s,
                         "data": advert.hex().upper(), "coords": ""})
    return f"ruuvi/{GW_MAC}/{tag_mac.upper()}", body


def start(cfg: Any) -> RunningReceiver:
    ha_settings = homeassistant_settings(cfg)
    assert ha_settings is not None
    return start_receiver(cfg, homeassistant=CloudHa(ha_settings))


def test_config_section_is_off_by_default() -> None:
    cfg = make_config(1883, "http://127.0.0.1:8086/ruuvi", Path("/tmp"))
    assert homeassistant_settings(cfg) is None


@pytest.mark.timeout(90)
def test_ruuvi_gateway_tags_announced_expire_and_clean_up(mosquitto: Mosquitto, influxd: Influxd,
                                                           tmp_path: Path) -> None:
    cfg = make_config(mosquitto.port, create_db(influxd), tmp_path, homeassistant__enabled=True,
                      homeassistant__state_interval="0.2s", homeassistant__expire_after="1s",
                      homeassistant__remove_after="2.5s")
    model = HaModel(mosquitto.port).start("cloud-ingest/ha/#")
    rx = start(cfg)
    pub = Publisher(mosquitto.port)
    e1_mac = "c0:00:00:00:0e:01"
    try:
        now = int(time.time())
        df5_topic, df5_body = ruuvi_gw_message(GW_MAC, 1, 7, now)
        df5_mac = df5_topic.rsplit("/", 1)[1].lower().replace(":", "")
        expected = decode(bytes.fromhex(orjson.loads(df5_body)["data"])[7:])
        # An edge-gw batch next to them: its gateway announces its tags, the receiver does not.
        pub.publish([(df5_topic, df5_body), e1_message(e1_mac, 1, now),
                     ("edge-gw/gw-x/batch", edge_batch("gw-x", 0, [reading(9, 1, time.time_ns())]))])
        df5_sensors = {"temperature", "humidity", "pressure", "acceleration_x", "acceleration_y", "acceleration_z",
                       "battery_voltage", "tx_power", "movement_counter", "rssi"}
        wait_until(lambda: len(model.unique_ids()) == len(df5_sensors) + 9, 10, "both tags' configs")
        uids = model.unique_ids()
        assert {u for u in uids if df5_mac in u} == {f"ruuvi_{df5_mac}_{f}" for f in df5_sensors}
        # E1 here has no PM1/4/10 or sound values ("not available" is left out of the gateway's point): only
        # the sensors with values are announced, and they are never taken back for a missing value.
        assert {u.rsplit("_", 1)[-1] for u in uids if "c00000000e01" in u} >= {"co2", "rssi", "temperature"}
        assert not [t for t in model.configs if "gw-x" in t or "000000000009" in t]
        topic = f"homeassistant/sensor/{NODE}/{df5_mac}_temperature/config"
        assert model.configs[topic]["state_topic"] == f"cloud-ingest/ha/{NODE}/{df5_mac}"
        assert model.configs[topic]["device"]["model"] == "RuuviTag (data format 5)"
        wait_until(lambda: model.value(f"ruuvi_{df5_mac}_temperature") is not None, 5, "a state")
        assert model.value(f"ruuvi_{df5_mac}_temperature") == str(expected["temperature"])
        assert model.value(f"ruuvi_{df5_mac}_pressure") == str(round(expected["pressure"] / 100, 6))
        assert model.value(f"ruuvi_{df5_mac}_rssi") == "-60"
        assert model.value("ruuvi_c00000000e01_co2") == "840"
        assert model.available(f"ruuvi_{df5_mac}_temperature")
        # The DF5 tag keeps coming; E1 goes silent: unavailable after expire_after, removed after remove_after.
        t0 = time.monotonic()
        seq = 8
        while time.monotonic() - t0 < 1.6:
            seq += 1
            pub.publish([ruuvi_gw_message(GW_MAC, 1, seq, int(time.time()))])
            time.sleep(0.1)
        assert model.available(f"ruuvi_{df5_mac}_humidity")
        assert not model.available("ruuvi_c00000000e01_co2")
        wait_until(lambda: not [u for u in model.unique_ids() if "c00000000e01" in u], 5, "E1's configs removed")
        held = retained(mosquitto.port, "homeassistant/#")
        assert not [t for t in held if "c00000000e01" in t]
        assert len([t for t in held if df5_mac in t]) == len(df5_sensors)
    finally:
        pub.close()
        rx.stop()
        model.close()
