"""Home Assistant discovery from edge-gw: the configs pass HA's rules (tests/ha_rules.py), one per sensor the format
has; against a real Mosquitto: states with the right values, availability (gateway's last will, a silent tag's
expire_after), clean-up that leaves nothing retained, the birth message, and the state rate per tag."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from ha_rules import HaModel, check_all, retained, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, stop_pid

from core import homeassistant as ha
from core import ruuvi
from core.settings import ConfigError
from edge.config import load_config
from edge.homeassistant import HaPublisher, HaSettings, node_for
from edge.model import Reading
from edge.mqtt import MqttSettings
from edge.sources import encode

GW = "gw-ha"
MAC_DF3, MAC_DF5, MAC_E1 = "c0:00:00:00:00:03", "c0:00:00:00:00:05", "c0:00:00:00:00:e1"


def df3(temperature_centi: int = 2150, humidity_half: int = 90, pressure: int = 100_500, battery: int = 2900) -> bytes:
    whole, frac = divmod(abs(temperature_centi), 100)
    return struct.pack(">BBBBHhhhH", 3, humidity_half, whole | (0x80 if temperature_centi < 0 else 0), frac,
                       pressure - 50000, 10, -20, 1000, battery)


def reading(mac: str, payload: bytes, rssi: int | None = -60, *, derived: bool = False) -> Reading:
    fields = ruuvi.decode(payload)
    if derived:
        fields.update(ruuvi.derived(fields))
    return Reading(mac, time.time_ns(), time.monotonic_ns(), True, rssi, payload[0], payload, fields)


def df5_reading(seq: int, temperature: float = 21.5) -> Reading:
    return reading(MAC_DF5, encode.df5(temperature=temperature, humidity=45.5, pressure=100_512,
                                       acceleration=(0, 0, 1000), battery_voltage=3000, tx_power=4,
                                       movement_counter=7, sequence=seq))


def e1_reading(seq: int) -> Reading:
    return reading(MAC_E1, encode.e1(temperature=22.0, humidity=40.0, pressure=99_800, pm1_0=1.2, pm2_5=3.4,
                                     pm4_0=5.6, pm10_0=7.8, co2=612, voc_index=80, nox_index=2, luminosity=150.5,
                                     sound_instant_dba=50.0, sound_average_dba=45.0, sound_peak_spl_db=70.0,
                                     sequence=seq))


NODE = node_for(GW, "edge-gw", "homeassistant", "", 300)


def configs_for(r: Reading, node: ha.Node = NODE) -> dict[str, bytes]:
    names = [*r.fields, *(("rssi",) if r.rssi is not None else ())]
    return ha.tag_configs(node, r.mac, r.data_format, names)


def fields_of(configs: dict[str, bytes]) -> set[str]:
    return {topic.split("/")[3].split("_", 1)[1] for topic in configs}


# ---- pure: what gets announced -----------------------------------------------------------------------------------


def test_configs_only_for_the_sensors_the_format_has() -> None:
    common = {"temperature", "humidity", "pressure", "rssi"}
    accel = {"acceleration_x", "acceleration_y", "acceleration_z"}
    assert fields_of(configs_for(reading(MAC_DF3, df3()))) == common | accel | {"battery_voltage"}
    assert fields_of(configs_for(df5_reading(1))) == common | accel | {"battery_voltage", "tx_power",
                                                                        "movement_counter"}
    assert fields_of(configs_for(e1_reading(1))) == common | {
        "pm1_0", "pm2_5", "pm4_0", "pm10_0", "co2", "voc_index", "nox_index", "luminosity", "sound_instant_dba",
        "sound_average_dba", "sound_peak_spl_db"}
    df6 = reading(MAC_E1, encode.df6(temperature=22.0, humidity=40.0, pressure=99_800, pm2_5=3.4, co2=612,
                                     voc_index=80, nox_index=2, luminosity=150.5, sound_average_dba=50.0, sequence=9))
    assert fields_of(configs_for(df6)) == common | {"pm2_5", "co2", "voc_index", "nox_index", "luminosity",
                                                    "sound_average_dba"}
    # With derived values on, the two that make sense in HA come along; without an RSSI, no signal sensor.
    plain = encode.df5(temperature=21.5, humidity=45.5, pressure=100_512)
    derived = fields_of(configs_for(reading(MAC_DF5, plain, None, derived=True)))
    assert {"dew_point", "absolute_humidity", "acceleration_total"} <= derived and "rssi" not in derived
    # Encrypted DF8: nothing to show, nothing announced.
    encrypted = bytes([8]) + bytes(17) + bytes.fromhex("c00000000008")
    assert configs_for(reading("c0:00:00:00:00:08", encrypted)) == {}


def test_every_config_passes_home_assistants_rules() -> None:
    everything: dict[str, bytes] = {}
    df5 = encode.df5(temperature=20.0, humidity=50.0, pressure=100_000, battery_voltage=3000, tx_power=4,
                     movement_counter=1, sequence=2)
    c5 = bytes.fromhex("c5") + df5[1:7] + df5[13:18] + bytes.fromhex("c000000000c5")  # C5 is DF5 less acceleration
    for r in (reading(MAC_DF3, df3(), derived=True), df5_reading(1), e1_reading(1), reading("c0:00:00:00:00:c5", c5)):
        everything |= configs_for(r)
    gw = ha.gateway_config(NODE)
    assert gw is not None
    everything[gw[0]] = gw[1]
    by_uid = check_all(everything)
    assert len(by_uid) == len(everything) == 11 + 10 + 15 + 7 + 1  # DF3 (+3 derived), DF5, E1, C5, the gateway
    t = by_uid["ruuvi_c00000000005_temperature"]
    assert t["device_class"] == "temperature" and t["unit_of_measurement"] == "°C"
    assert t["state_class"] == "measurement" and t["expire_after"] == 300
    assert t["state_topic"] == "edge-gw/gw-ha/ha/c00000000005"
    assert t["availability"] == [{"topic": "edge-gw/gw-ha/status", "value_template": "{{ value_json.state }}",
                                  "payload_available": "online", "payload_not_available": "offline"}]
    assert t["device"] == {"identifiers": ["ruuvi_c00000000005"], "name": "Ruuvi 0005",
                           "manufacturer": "Ruuvi Innovations", "model": "RuuviTag (data format 5)",
                           "via_device": "edge-gw_gw-ha"}
    assert by_uid["ruuvi_c000000000e1_co2"]["device"]["model"] == "Ruuvi Air (data format E1)"
    assert by_uid["edge-gw_gw-ha_status"]["device"]["identifiers"] == ["edge-gw_gw-ha"]


def test_state_payload_carries_has_units_and_nulls() -> None:
    state = orjson.loads(ha.state_payload(5, dict(df5_reading(9).fields, rssi=-61)))
    assert state["temperature"] == 21.5 and state["humidity"] == 45.5
    assert state["pressure"] == 1005.12 and state["battery_voltage"] == 3.0  # hPa, V
    assert state["movement_counter"] == 7 and state["rssi"] == -61
    assert "measurement_sequence_number" not in state and "mac" not in state
    missing = orjson.loads(ha.state_payload(5, ruuvi.decode(encode.df5(temperature=None, humidity=None,
                                                                       pressure=None))))
    assert missing["temperature"] is None and missing["pressure"] is None


def test_node_ids_are_sanitised_and_macs_checked() -> None:
    assert node_for("kitchen.pi", "edge-gw", "homeassistant", "", 60).node_id == "kitchen_pi"
    with pytest.raises(ha.DiscoveryError):
        ha.mac_id("C0:00:00:00:00:05")


def test_config_section_defaults_and_errors(tmp_path: Path) -> None:
    cfg = load_config(None)
    h = cfg.homeassistant
    assert (h.enabled, h.discovery_prefix, h.state_prefix) == (False, "homeassistant", "")
    assert (float(h.state_interval), float(h.expire_after), float(h.remove_after)) == (10.0, 300.0, 86400.0)
    for key, value, needle in (("homeassistant.discovery_prefix", "home/#", "homeassistant.discovery_prefix"),
                               ("homeassistant.expire_after", "15s", "homeassistant.expire_after"),
                               ("homeassistant.remove_after", "60s", "homeassistant.remove_after"),
                               ("homeassistant.state_interval", "0s", "homeassistant.state_interval")):
        with pytest.raises(ConfigError, match=needle):
            load_config(None, {key: value})


# ---- against a real broker ---------------------------------------------------------------------------------------


def publisher(broker: Mosquitto, *, state_interval: float = 0.2, expire_after: int = 2,
              remove_after: float = 0.0) -> HaPublisher:
    node = node_for(GW, "edge-gw", "homeassistant", "", expire_after)
    settings = HaSettings(node, state_interval_s=state_interval, remove_after_s=remove_after, tick_s=0.05)
    pub = HaPublisher(MqttSettings.from_url(broker.url), "gw-ha-ha", settings)
    pub.start()
    assert pub.connected.wait(10)
    return pub


@pytest.fixture
def gateway_online(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    """Stands in for the uplink: the gateway's retained status, online."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="uplink-stand-in")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    online = b'{"v":1,"gateway":"gw-ha","state":"online"}'
    c.publish("edge-gw/gw-ha/status", online, qos=1, retain=True).wait_for_publish(5)
    yield c
    c.loop_stop()
    c.disconnect()


def test_announce_states_silent_tag_and_clean_up(mosquitto: Mosquitto, gateway_online: mqtt.Client) -> None:
    model = HaModel(mosquitto.port).start("edge-gw/gw-ha/#")
    pub = publisher(mosquitto, expire_after=1, remove_after=2.5)
    try:
        pub.offer(reading(MAC_DF3, df3(temperature_centi=-550)))
        pub.offer(e1_reading(1))
        t0 = time.monotonic()
        seq = 1
        wait_until(lambda: len(model.unique_ids()) == 1 + 8 + 15, 5, "the gateway's and two tags' configs")
        assert model.available("ruuvi_c00000000003_temperature")
        assert model.value("ruuvi_c00000000003_temperature") == "-5.5"
        assert model.value("ruuvi_c00000000003_pressure") == "1005.0"
        assert model.value("ruuvi_c000000000e1_co2") == "612"
        assert model.value("ruuvi_c000000000e1_pm4_0") == "5.6"
        assert model.value("ruuvi_c000000000e1_sound_peak_spl_db") == "70.0"
        # DF3 keeps reporting; E1 goes silent.
        while time.monotonic() - t0 < 1.8:
            seq += 1
            pub.offer(reading(MAC_DF3, df3(temperature_centi=-550 + seq)))
            time.sleep(0.05)
        assert model.available("ruuvi_c00000000003_humidity")
        assert not model.available("ruuvi_c000000000e1_co2"), "a tag silent past expire_after is unavailable"
        assert model.entity("ruuvi_c000000000e1_co2") is not None, "but still announced"
        # Past remove_after: E1's configs go, and the broker holds none of them; DF3's stay.
        wait_until(lambda: model.entity("ruuvi_c000000000e1_co2") is None, 5, "E1's configs removed")
        held = retained(mosquitto.port, "homeassistant/#")
        assert not [t for t in held if "c000000000e1" in t]
        assert len([t for t in held if "c00000000003" in t]) == 8
        assert "homeassistant/binary_sensor/gw-ha/gateway_status/config" in held
        assert pub.state()["cleared"] == 15
    finally:
        pub.stop()
        model.close()


def test_a_sensor_the_format_no_longer_has_is_removed(mosquitto: Mosquitto) -> None:
    pub = publisher(mosquitto)
    try:
        pub.offer(df5_reading(1))
        wait_until(lambda: len(retained(mosquitto.port, "homeassistant/sensor/gw-ha/+/config", 0.3)) == 10, 5,
                   "DF5's 10 configs")
        # New firmware on the same tag sends DF3: tx_power and movement_counter are gone.
        pub.offer(reading(MAC_DF5, df3()))
        wait_until(lambda: len(retained(mosquitto.port, "homeassistant/sensor/gw-ha/+/config", 0.3)) == 8, 5,
                   "DF3's 8 configs")
        held = retained(mosquitto.port, "homeassistant/sensor/gw-ha/+/config")
        assert "homeassistant/sensor/gw-ha/c00000000005_tx_power/config" not in held
        assert orjson.loads(held["homeassistant/sensor/gw-ha/c00000000005_temperature/config"])["device"]["model"] \
            == "RuuviTag (data format 3)"
    finally:
        pub.stop()


def test_birth_message_announces_again(mosquitto: Mosquitto) -> None:
    pub = publisher(mosquitto)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha-birth")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    try:
        pub.offer(df5_reading(1))
        wait_until(lambda: len(retained(mosquitto.port, "homeassistant/#", 0.3)) == 11, 5, "configs")
        # The broker lost them (say, a broker without persistence restarted): wipe them as it would.
        for topic in retained(mosquitto.port, "homeassistant/#"):
            c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        assert retained(mosquitto.port, "homeassistant/#") == {}
        before = pub.counts.configs
        c.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        wait_until(lambda: len(retained(mosquitto.port, "homeassistant/#", 0.3)) == 11, 5, "configs again")
        assert pub.counts.configs == before + 10  # the tag's; the gateway's is counted apart
        c.publish("homeassistant/status", b"offline", qos=1).wait_for_publish(5)
        time.sleep(0.3)
        assert pub.counts.configs == before + 10, "HA's last will announces nothing"
    finally:
        c.loop_stop()
        c.disconnect()
        pub.stop()


def test_state_rate_is_bounded_per_tag(mosquitto: Mosquitto) -> None:
    model = HaModel(mosquitto.port).start("edge-gw/gw-ha/ha/#")
    pub = publisher(mosquitto, state_interval=0.5, expire_after=2)
    try:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 2.0:
            n += 1
            pub.offer(df5_reading(n, temperature=20 + (n % 100) / 100))
            time.sleep(0.002)
        time.sleep(0.6)
        states = model.state_counts.get("edge-gw/gw-ha/ha/c00000000005", 0)
        assert n > 300
        assert 4 <= states <= 6, f"{states} states for {n} readings in 2 s at one per 0.5 s"
        # The last state is the last reading.
        last = orjson.loads(model.messages["edge-gw/gw-ha/ha/c00000000005"][0])
        assert last["temperature"] == 20 + (n % 100) / 100
    finally:
        pub.stop()
        model.close()


def test_configs_an_earlier_run_left_are_removed(mosquitto: Mosquitto) -> None:
    old = configs_for(e1_reading(1))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="earlier-run")
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    for topic, payload in old.items():
        c.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    other_node = "homeassistant/sensor/other-gw/c000000000e1_co2/config"
    c2 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="other-gw")
    c2.connect("127.0.0.1", mosquitto.port)
    c2.loop_start()
    c2.publish(other_node, b'{"x":1}', qos=1, retain=True).wait_for_publish(5)
    c2.loop_stop()
    c2.disconnect()
    pub = publisher(mosquitto, expire_after=1, remove_after=1.5)
    try:
        pub.offer(df5_reading(1))  # heard now; the E1 tag of the earlier run is not
        time.sleep(0.5)
        assert len([t for t in retained(mosquitto.port, "homeassistant/#") if "c000000000e1" in t]) == 16
        wait_until(lambda: not [t for t in retained(mosquitto.port, "homeassistant/sensor/gw-ha/#", 0.3)
                                if "c000000000e1" in t], 5, "the earlier run's configs cleared")
        held = retained(mosquitto.port, "homeassistant/#")
        assert other_node in held, "another gateway's configs are not ours to remove"
    finally:
        pub.stop()


# ---- the whole daemon: availability follows the uplink's last will ----------------------------------------------


def test_gateway_last_will_makes_every_tag_unavailable(mosquitto: Mosquitto, tmp_path: Path) -> None:
    model = HaModel(mosquitto.port).start("edge-gw/#")
    env = dict(os.environ, EDGE_GW_HOMEASSISTANT_ENABLED="true", EDGE_GW_HOMEASSISTANT_STATE_INTERVAL="0.5s",
               EDGE_GW_HOMEASSISTANT_EXPIRE_AFTER="5s", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "edge.cli", "run", "--gateway-id", GW, "--mqtt", mosquitto.url, "--db",
           str(tmp_path / "buffer.db"), "--assume-synced", "--source", "simulate", "--tags", "3", "--rate", "10"]
    with open(tmp_path / "edge-gw.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_until(lambda: len([u for u in model.unique_ids() if u.endswith("_temperature")]) == 3, 20,
                   "three tags announced")
        temps = sorted(u for u in model.unique_ids() if u.endswith("_temperature"))
        wait_until(lambda: all(model.available(u) for u in temps), 10, "every tag available")
        assert model.available("edge-gw_gw-ha_status")
        for u in temps:
            assert -40 < float(model.value(u) or "nan") < 85
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # keepalive 30 s by default: the broker notices a dead socket at once here (the process is gone).
        wait_until(lambda: not any(model.available(u) for u in temps), 10, "every tag unavailable (last will)")
        assert orjson.loads(model.messages["edge-gw/gw-ha/status"][0])["state"] == "offline"
        assert model.entity(temps[0]) is not None, "a crash removes nothing"
    finally:
        stop_pid(proc)
        model.close()
