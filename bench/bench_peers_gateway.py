"""The gateway against Theengs Gateway and ruuvitag-sensor (issue 14, section 2), on the same stream of adverts.

    sh bench/setup_peers_gateway.sh            # once: the peers into ~/.cache/edge-gw-bench/{theengs,ruuvitag}
    python bench/bench_peers_gateway.py        # about 3 minutes; --quick to check that it works

One fake BlueZ (tests/edge/fakebluez.py: bluezoo on a private dbus-daemon, the one the bleak tests use) advertises
one virtual tag per vector of tests/vectors/ruuvi.json, each with the vector's payload, re-reported every scan tick
(--scan-interval), so the stream is len(vectors) / scan_interval adverts per second. Three gateways, one at a time,
run against it on adapter hci0 and publish to one private Mosquitto:
- edge-gw: `edge-gw run --source bleak` (its batches on edge-gw/<id>/batch);
- Theengs Gateway: `python -m TheengsGateway` from its own venv, scanning without pause (`-sd 3600 -tb 0`; by default
  it scans 7 s of every 12), Home Assistant discovery off and only decoded adverts (`-D 0 -pa 0`);
- ruuvitag-sensor: bench/peer_ruuvitag_mqtt.py (its get_data_async on bleak, one paho publish per reading).

Per gateway: once it has published its first message, a warm-up, then a window of --duration seconds in which
- adverts = the D-Bus signals through which BlueZ reports a device to a scanner (Device1 PropertiesChanged and
  InterfacesAdded), counted by a match rule on the bus: what bleak in the gateway receives;
- CPU = utime + stime from /proc/<pid>/stat of the gateway process only (bluezoo and dbus-daemon are not counted).
Readings delivered to MQTT are counted over the whole life of the process (a subscriber on '#'), and every value
published is compared with the vector's `expected` (after converting the tool's units); mismatches are listed.
It is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests", REPO / "tests" / "edge"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import paho.mqtt.client as mqtt  # noqa: E402
from dbus_fast import Message  # noqa: E402
from fakebluez import FakeBlueZ  # noqa: E402
from servers import Mosquitto, cpu_seconds  # noqa: E402

CACHE = Path(os.environ.get("EDGE_GW_BENCH_CACHE", Path.home() / ".cache" / "edge-gw-bench"))
VECTORS = REPO / "tests" / "vectors" / "ruuvi.json"
ADAPTER = "hci0"
TOOLS = ("edge-gw", "theengs", "ruuvitag-sensor")


@dataclass
class Tag:
    mac: str  # upper case, as BlueZ spells it
    vector: dict[str, Any]


def load_tags() -> list[Tag]:
    vectors = json.loads(VECTORS.read_text())
    return [Tag(f"C1:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}", v) for i, v in enumerate(vectors)]


# ---- the gateways ----------------------------------------------------------------------------------------------
def command(tool: str, broker: Mosquitto, work: Path) -> tuple[list[str], dict[str, str]]:
    host, port = "127.0.0.1", str(broker.port)
    if tool == "edge-gw":
        exe = Path(sys.executable).with_name("edge-gw")
        return [str(exe), "run", "--source", "bleak", "--adapter", ADAPTER, "--gateway-id", "bench",
                "--mqtt", broker.url, "--db", str(work / "gateway.db"), "--assume-synced",
                "--log-level", "warning"], {}
    if tool == "theengs":
        return [str(CACHE / "theengs" / "bin" / "python"), "-m", "TheengsGateway", "-c", str(work / "theengsgw.conf"),
                "-H", host, "-P", port, "-a", ADAPTER, "-D", "0", "-pa", "0", "-sd", "3600", "-tb", "0",
                "-ll", "WARNING"], {}
    return [str(CACHE / "ruuvitag" / "bin" / "python"), str(REPO / "bench" / "peer_ruuvitag_mqtt.py"),
            "--host", host, "--port", port, "--adapter", ADAPTER], {"RUUVI_BLE_ADAPTER": "bleak"}


# ---- what each tool published, in the vectors' terms ------------------------------------------------------------
def colon_mac(value: Any) -> Any:
    if isinstance(value, str) and ":" not in value:  # 12 hex digits, or 6 for DF6's 3-byte MAC
        value = ":".join(value[i:i + 2] for i in range(0, len(value), 2))
    return value.lower() if isinstance(value, str) else value


def scaled(value: Any, factor: float) -> Any:
    return value * factor if isinstance(value, int | float) and not isinstance(value, bool) else value


# Theengs: tempc °C, hum %, pres hPa, acc[xyz] g, volt V (TheengsDecoder's RuuviTag_RAWv1/RAWv2 models).
THEENGS_KEYS = {"tempc": ("temperature", 1), "hum": ("humidity", 1), "pres": ("pressure", 100),
                "accx": ("acceleration_x", 1000), "accy": ("acceleration_y", 1000), "accz": ("acceleration_z", 1000),
                "volt": ("battery_voltage", 1000), "tx": ("tx_power", 1), "mov": ("movement_counter", 1),
                "seq": ("measurement_sequence_number", 1)}
# ruuvitag-sensor: our names, except pressure in hPa, battery (mV), shorter air-quality names, a MAC without colons
# and the data format "E1" as text.
RUUVITAG_KEYS = {"pressure": ("pressure", 100), "battery": ("battery_voltage", 1), "pm_1": ("pm1_0", 1),
                 "pm_2_5": ("pm2_5", 1), "pm_4": ("pm4_0", 1), "pm_10": ("pm10_0", 1), "voc": ("voc_index", 1),
                 "nox": ("nox_index", 1)}
DATA_FORMATS = {"E1": 0xE1, "C5": 0xC5}


def normalise(tool: str, topic: str, payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(tag mac upper case, fields in the vectors' names and units) for every reading in one message."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return []
    if tool == "edge-gw":
        if not topic.endswith("/batch"):
            return []
        return [(r["mac"].upper(), r["fields"]) for r in doc["readings"]]
    if not isinstance(doc, dict) or "id" not in doc:
        return []
    out: dict[str, Any] = {}
    keys = THEENGS_KEYS if tool == "theengs" else RUUVITAG_KEYS
    for key, raw in doc.items():
        name, factor = keys.get(key, (key, 1))
        value = colon_mac(raw) if name == "mac" else DATA_FORMATS.get(raw, raw) if name == "data_format" else raw
        out[name] = scaled(value, factor)
    return [(str(doc["id"]).upper(), out)]


TOLERANCE = {"temperature": 0.006, "humidity": 0.006}  # a tool rounding to 2 decimals is not wrong


def differs(key: str, want: Any, got: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool) or not isinstance(want, int | float) \
            or not isinstance(got, int | float):
        return bool(want != got)
    tol = TOLERANCE.get(key, 0.5)  # pressure in Pa, acceleration in mG, voltage in mV: whole numbers
    return math.isnan(got) or abs(want - got) > tol


@dataclass
class Run:
    tool: str
    adverts: int = 0
    cpu_s: float = 0.0
    window_s: float = 0.0
    messages: int = 0
    readings: int = 0
    distinct: set[tuple[str, str]] = field(default_factory=set)
    mismatches: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)  # a value published wrong
    missing: Counter[str] = field(default_factory=Counter)  # key: vectors with a value the tool never publishes
    not_published: list[str] = field(default_factory=list)
    error: str = ""


def check_values(run: Run, tags: dict[str, Tag], published: list[tuple[str, dict[str, Any]]]) -> None:
    seen: set[str] = set()
    absent: set[tuple[str, str]] = set()
    for mac, fields in published:
        tag = tags.get(mac)
        if tag is None:
            continue
        seen.add(mac)
        run.distinct.add((mac, json.dumps(fields, sort_keys=True)))
        vec = tag.vector
        label = f"{vec['format'] or '?'}: {vec['name']}"
        expected = vec["expected"] if isinstance(vec.get("expected"), dict) else {}
        if not expected:
            run.mismatches.setdefault((label, "(published)"), ("nothing (not a reading)", fields))
        for key, want in expected.items():
            if key not in fields:
                if (label, key) not in absent:
                    absent.add((label, key))
                    run.missing[key] += 1
            elif differs(key, want, fields[key]):
                run.mismatches.setdefault((label, key), (want, fields[key]))
    for mac, tag in tags.items():
        if mac not in seen and isinstance(tag.vector.get("expected"), dict):
            run.not_published.append(f"{tag.vector['format']}: {tag.vector['name']}")


# ---- the run ----------------------------------------------------------------------------------------------------
class Subscriber:
    """Every message on the broker, with the tool that was running when it arrived."""

    def __init__(self, broker: Mosquitto) -> None:
        self.tool = ""
        self.got: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-peers-sub")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return
        with self.lock:
            self.got[self.tool].append((msg.topic, msg.payload))

    def count(self, tool: str) -> int:
        with self.lock:
            return len(self.got[tool])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class AdvertCounter:
    """Counts BlueZ's reports of a device (what bleak turns into detection callbacks) on the private bus."""

    def __init__(self) -> None:
        self.count = 0

    async def attach(self, bluez: FakeBlueZ) -> None:
        for member in ("PropertiesChanged", "InterfacesAdded"):
            rule = f"type='signal',sender='org.bluez',member='{member}'"
            await bluez.bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                         interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                                         body=[rule]))
        bluez.bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        changed = msg.member == "PropertiesChanged" and msg.body and msg.body[0] == "org.bluez.Device1"
        added = msg.member == "InterfacesAdded" and len(msg.body) > 1 and "org.bluez.Device1" in msg.body[1]
        if changed or added:
            self.count += 1


async def run_tool(tool: str, args: argparse.Namespace, bluez: FakeBlueZ, broker: Mosquitto, sub: Subscriber,
                   counter: AdvertCounter, tags: dict[str, Tag], work: Path) -> Run:
    run = Run(tool)
    cmd, extra_env = command(tool, broker, work / tool)
    (work / tool).mkdir(parents=True)
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bluez.address, **extra_env}
    env.pop("CI", None)
    sub.tool = tool
    log = (work / tool / "stderr.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work / tool)
    try:
        deadline = time.monotonic() + 60
        while sub.count(tool) == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (work / tool / "stderr.log").read_text(errors="replace").strip().splitlines()[-5:]
                why = f"exited {proc.returncode}" if proc.poll() is not None else "nothing published in 60 s"
                run.error = f"{' '.join(cmd)}: {why}; " + " | ".join(tail)
                return run
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.warmup)
        cpu0, adverts0, t0 = cpu_seconds(proc.pid), counter.count, time.monotonic()
        await asyncio.sleep(args.duration)
        cpu1, adverts1, t1 = cpu_seconds(proc.pid), counter.count, time.monotonic()
        run.cpu_s, run.adverts, run.window_s = cpu1 - cpu0, adverts1 - adverts0, t1 - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        await asyncio.sleep(1.0)  # the last publishes reach the subscriber
        sub.tool = ""
    with sub.lock:
        messages = list(sub.got[tool])
    published = [r for topic, payload in messages for r in normalise(tool, topic, payload)]
    run.messages, run.readings = len(messages), len(published)
    check_values(run, tags, published)
    return run


async def bench(args: argparse.Namespace, work: Path) -> list[Run]:
    all_tags = load_tags()
    if args.formats:
        all_tags = [t for t in all_tags if t.vector["format"] in args.formats.split(",")]
    tags = {t.mac: t for t in all_tags}
    broker = Mosquitto(work / "mosquitto").start()
    bluez = FakeBlueZ(work / "bluez", scan_interval=args.scan_interval).start()
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bluez.address
    sub = Subscriber(broker)
    runs: list[Run] = []
    try:
        await bluez.connect()
        counter = AdvertCounter()
        await counter.attach(bluez)
        for i, tag in enumerate(all_tags):
            await bluez.add_tag(i, tag.mac, bytes.fromhex(tag.vector["hex"]))
        print(f"{len(all_tags)} tags, a report every {args.scan_interval} s each "
              f"(= {len(all_tags) / args.scan_interval:.0f} adverts/s offered)", flush=True)
        for tool in args.tools.split(","):
            run = await run_tool(tool, args, bluez, broker, sub, counter, tags, work)
            runs.append(run)
            print(summary_line(run), flush=True)
    finally:
        sub.close()
        await bluez.close()
        bluez.stop()
        broker.stop()
    return runs


def per_10k(run: Run) -> float:
    return run.cpu_s / run.adverts * 10_000 if run.adverts else float("nan")


def summary_line(run: Run) -> str:
    if run.error:
        return f"{run.tool}: did not run: {run.error}"
    return (f"{run.tool}: {run.adverts} adverts in {run.window_s:.1f} s ({run.adverts / run.window_s:.0f}/s), "
            f"CPU {run.cpu_s:.2f} s = {per_10k(run):.2f} s per 10k adverts; {run.messages} MQTT messages, "
            f"{run.readings} readings ({len(run.distinct)} distinct), {len(run.mismatches)} mismatches, "
            f"{len(run.not_published)} vectors never published")


def report(runs: list[Run]) -> str:
    lines = ["", "| gateway | adverts in window | CPU s per 10k adverts | vs edge-gw | readings on MQTT | "
             "distinct readings | vectors never published | wrong values |", "|---|---|---|---|---|---|---|---|"]
    base = next((per_10k(r) for r in runs if r.tool == "edge-gw" and not r.error), float("nan"))
    for r in runs:
        if r.error:
            lines.append(f"| {r.tool} | did not run | | | | | | |")
            continue
        lines.append(f"| {r.tool} | {r.adverts} | {per_10k(r):.2f} | {per_10k(r) / base:.1f}x | {r.readings} | "
                     f"{len(r.distinct)} | {len(r.not_published)} | {len(r.mismatches)} |")
    theengs = next((r for r in runs if r.tool == "theengs" and not r.error), None)
    if theengs is not None and not math.isnan(base):
        ratio = base / per_10k(theengs)
        lines.append(f"\nedge-gw uses {ratio:.2f} of Theengs Gateway's CPU per advert "
                     f"(target <= 0.33: {'met' if ratio <= 1 / 3 else 'missed'})")
    for r in runs:
        if r.error:
            lines.append(f"\n{r.tool}: {r.error}")
            continue
        if r.not_published:
            formats = Counter(v.split(":")[0] for v in r.not_published)
            lines.append(f"\n{r.tool}: never published {len(r.not_published)} vectors: "
                         + ", ".join(f"format {k} x{n}" for k, n in sorted(formats.items())))
        if r.missing:
            lines.append(f"\n{r.tool}: values it does not publish (vectors): "
                         + ", ".join(f"{k} ({n})" for k, n in sorted(r.missing.items())))
        if r.mismatches:
            lines.append(f"\n{r.tool}: wrong values (vector: key: expected -> published)")
            lines.extend(f"- {label}: {key}: {want!r} -> {got!r}" for (label, key), (want, got)
                         in sorted(r.mismatches.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="measured window per gateway, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="after the first publish, before the window, s")
    parser.add_argument("--scan-interval", type=float, default=0.2, help="fake BlueZ re-reports every tag this often")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--formats", default="", help="only vectors of these formats, e.g. 5,3 (default: all)")
    parser.add_argument("--quick", action="store_true", help="5 s windows: checks that it works")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 5.0, 1.0
    for tool, exe in (("theengs", CACHE / "theengs" / "bin" / "python"), ("ruuvitag-sensor", CACHE / "ruuvitag")):
        if tool in args.tools and not exe.exists():
            sys.exit(f"{exe} missing: run `sh bench/setup_peers_gateway.sh` first")
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        runs = asyncio.run(bench(args, Path(tmp)))
    print(report(runs))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps([{"tool": r.tool, "adverts": r.adverts, "cpu_s": r.cpu_s,
                                          "cpu_s_per_10k": per_10k(r), "readings": r.readings,
                                          "distinct": len(r.distinct), "not_published": r.not_published,
                                          "mismatches": [[*k, *map(repr, v)] for k, v in r.mismatches.items()],
                                          "missing": dict(r.missing),
                                          "error": r.error} for r in runs], indent=1))


if __name__ == "__main__":
    main()
