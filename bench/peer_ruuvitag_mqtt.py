"""ruuvitag-sensor's own async scanner publishing each reading with paho: the "write it yourself" gateway that
bench/bench_peers_gateway.py compares edge-gw with. Runs in the venv bench/setup_peers_gateway.sh makes.

    RUUVI_BLE_ADAPTER=bleak python peer_ruuvitag_mqtt.py --host 127.0.0.1 --port 1883 --adapter hci0

Each reading goes to `<topic>/<tag mac without colons>` as the JSON of ruuvitag-sensor's dict, QoS 0 (what
Theengs Gateway does too). RUUVI_BLE_ADAPTER=bleak matters: with CI set, ruuvitag-sensor picks a dummy adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import paho.mqtt.client as mqtt

os.environ.setdefault("RUUVI_BLE_ADAPTER", "bleak")

from ruuvitag_sensor.ruuvi import RuuviTagSensor


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--adapter", default="")
    parser.add_argument("--topic", default="ruuvitag-sensor")
    args = parser.parse_args()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-ruuvitag-sensor")
    client.connect(args.host, args.port)
    client.loop_start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def scan() -> None:
        async for mac, data in RuuviTagSensor.get_data_async(bt_device=args.adapter):
            client.publish(f"{args.topic}/{mac.replace(':', '').upper()}", json.dumps({"id": mac, **data}), qos=0)

    task = asyncio.create_task(scan())
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
