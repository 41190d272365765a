# Guest-side helpers for the tests (not a fake): build adverts, a gateway wired to the fakes,
# and print results for pytest as "@<json>" lines.
import json
from binascii import hexlify, unhexlify

import bluetooth
import config
import gateway
import network
import ntptime
from timebase import Clock

DF5 = "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"
BASE_CFG = {
    "gateway_id": "esp32-1",
    "wifi": {"ssid": "lab", "password": "wifi-pw", "timeout_s": 1},
    "broker": {"host": "broker.lan", "password": "s3cret", "keepalive_s": 30},
    "buffer": {"path": "/ring.bin", "bytes": 8192, "page_bytes": 256, "flush_s": 1},
    "uplink": {"batch_max_readings": 7, "interval_s": 1},
    "status_interval_s": 1,
}


def merged(overrides):
    cfg = json.loads(json.dumps(BASE_CFG))
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def make(overrides=None, clock=None, start=True):
    cfg = config.validate(merged(overrides))
    ble = bluetooth.BLE()
    gw = gateway.Gateway(cfg, ble, network.WLAN(network.STA_IF), clock or Clock(ntptime))
    if start:
        gw.scanner.start()
    return gw, ble


def adv_data(payload, company=b"\x99\x04", flags=True):
    # Advertising data as a tag sends it: Flags AD, then Manufacturer Specific Data.
    head = b"\x02\x01\x06" if flags else b""
    return head + bytes((len(payload) + 3, 0xFF)) + company + payload


def df5(seq, mac_last=0x4F):
    p = bytearray(unhexlify(DF5))
    p[16] = seq >> 8
    p[17] = seq & 0xFF
    p[23] = mac_last
    return bytes(p)


def mac(i):
    return bytes((0xCB, 0xB8, 0x33, 0x4C, (i >> 8) & 0xFF, i & 0xFF))


def dump(obj):
    print("@" + json.dumps(obj))


def record_json(r):
    return [hexlify(r.mac).decode(), r.time_ns, r.synced, r.rssi, hexlify(r.raw).decode()]


async def collect():
    # This port only collects when control is back in JavaScript (no C stack to scan), so
    # request a collection and yield to the event loop once.
    import asyncio
    import gc

    gc.collect()
    await asyncio.sleep_ms(1)
