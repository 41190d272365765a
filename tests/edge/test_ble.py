"""The bleak source against a fake BlueZ (bluezoo on a private dbus-daemon): the real bleak code path end to end."""

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fakebluez import FakeBlueZ

from edge.metrics import Counters
from edge.model import Advert
from edge.sources import SourceError, SourceOptions, SourceUnavailable, open_source
from edge.sources.ble import BleakSource, power_cycle
from edge.sources.encode import df5

TAGS = [("c1:00:00:00:00:01", -48), ("c1:00:00:00:00:02", -67), ("c1:00:00:00:00:03", -90)]
FAST = {"watchdog_s": 1.0, "expect_s": 30.0, "check_s": 0.1, "reset_pause_s": 0.2}


def payload(mac: str, seq: int) -> bytes:
    return df5(temperature=21.5, humidity=40.0, pressure=100_500, sequence=seq, mac=mac)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def scenario(bluez: FakeBlueZ, options: SourceOptions,
             body: Callable[[BleakSource, list[Advert]], Awaitable[None]]) -> tuple[BleakSource, list[Advert]]:
    """Start the tags, run the source while `body` drives the fake, then stop it."""
    got: list[Advert] = []
    source = open_source("bleak", options, Counters())
    assert isinstance(source, BleakSource)

    async def main() -> None:
        await bluez.connect()
        try:
            for i, (mac, rssi) in enumerate(TAGS):
                await bluez.add_tag(i, mac.upper(), payload(mac, 100 + i), rssi=rssi)
            task = asyncio.create_task(source.run(got.append))
            try:
                await body(source, got)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await bluez.close()

    asyncio.run(main())
    return source, got


def test_adverts_arrive_with_payload_mac_rssi_and_only_ruuvi(bluez: FakeBlueZ, caplog: Any) -> None:
    async def body(source: BleakSource, got: list[Advert]) -> None:
        await bluez.add_tag(5, "AA:BB:CC:00:00:05", b"\x4c\x00\x02\x15", company=0x004C)  # an iBeacon
        await until(lambda: {a.mac for a in got} == {m for m, _ in TAGS}, 5, "all three tags")
        bluez.tags[0].set_payload(payload(TAGS[0][0], 101))
        await until(lambda: any(a.payload == payload(TAGS[0][0], 101) for a in got), 3, "the updated payload")
        discovered.update(await bluez.devices(source.state()["adapter"]))

    discovered: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="edge.sources.ble"):
        source, got = scenario(bluez, SourceOptions(**FAST), body)
    seen = {(a.mac, a.payload, a.rssi) for a in got}
    expected = {(mac, payload(mac, 100 + i), rssi) for i, (mac, rssi) in enumerate(TAGS)}
    assert expected <= seen
    assert (TAGS[0][0], payload(TAGS[0][0], 101), -48) in seen
    assert seen - expected == {(TAGS[0][0], payload(TAGS[0][0], 101), -48)}  # nothing else, no iBeacon
    assert "AA:BB:CC:00:00:05" in discovered  # the active scan did see the iBeacon; the source dropped it
    # bluezoo has no AdvertisementMonitor1: the passive request falls back to active, with one log line.
    state = source.state()
    assert state["scanning_mode"] == "active"
    assert "passive scanning on Linux requires BlueZ >= 5.56" in state["passive_fallback"]
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"passive scanning is not available on {state['adapter']}"]
    assert state["adapter"] in ("hci0", "hci1")  # bleak's pick among the powered centrals
    assert state["adverts"] == len(got)
    assert (state["scanner_restarts"], state["adapter_resets"]) == (0, 0)


def test_passive_scan_where_bluez_supports_it(passive_bluez: FakeBlueZ, caplog: Any) -> None:
    async def body(source: BleakSource, got: list[Advert]) -> None:
        await passive_bluez.add_tag(5, "AA:BB:CC:00:00:05", b"\x4c\x00\x02\x15", company=0x004C)
        await until(lambda: {a.mac for a in got} == {m for m, _ in TAGS}, 5, "all three tags")
        await asyncio.sleep(0.5)
        discovered["hci0"] = await passive_bluez.devices("hci0")

    discovered: dict[str, set[str]] = {}
    with caplog.at_level(logging.WARNING, logger="edge.sources.ble"):
        source, got = scenario(passive_bluez, SourceOptions(adapter="hci0", **FAST), body)  # type: ignore[arg-type]
    state = source.state()
    assert (state["scanning_mode"], state["passive_fallback"]) == ("passive", None)
    assert caplog.records == []
    # The fake reports only devices matching the monitor's or_pattern (AD type 0xFF starting 99 04): the iBeacon
    # was never even discovered, which checks the pattern the source registers.
    assert discovered["hci0"] == {m.upper() for m, _ in TAGS}
    assert {(a.mac, a.payload, a.rssi) for a in got} == {
        (mac, payload(mac, 100 + i), rssi) for i, (mac, rssi) in enumerate(TAGS)}


def test_chosen_adapter_and_active_mode(bluez: FakeBlueZ) -> None:
    async def body(source: BleakSource, got: list[Advert]) -> None:
        await bluez.set_powered("hci0", False)
        await until(lambda: len({a.mac for a in got}) == 3, 5, "all tags via hci1")

    source, _ = scenario(bluez, SourceOptions(adapter="hci1", passive=False, **FAST), body)  # type: ignore[arg-type]
    state = source.state()
    assert (state["adapter"], state["scanning_mode"], state["passive_fallback"]) == ("hci1", "active", None)


def test_missing_adapter_is_unavailable(bluez: FakeBlueZ) -> None:
    source = open_source("bleak", SourceOptions(adapter="hci7"), Counters())
    with pytest.raises(SourceUnavailable) as e:
        asyncio.run(source.run(lambda a: None))
    assert str(e.value) == ("Bluetooth is not available: adapter 'hci7' not found; "
                            "use --source simulate to run without Bluetooth")


def test_watchdog_restarts_a_stalled_scanner(bluez: FakeBlueZ) -> None:
    counters = Counters()
    marks: dict[str, int] = {}

    async def body(source: BleakSource, got: list[Advert]) -> None:
        await until(lambda: len(got) >= 6, 5, "adverts")
        await bluez.stall(int(source.state()["adapter"][3:]))  # discovery silently stops, as a wedged BlueZ does
        await until(lambda: source.scanner_restarts == 1, 5, "a scanner restart")
        marks["restarted_at"] = len(got)
        await until(lambda: len(got) >= marks["restarted_at"] + 6, 5, "adverts after the restart")

    source = BleakSource(SourceOptions(**FAST), counters)  # type: ignore[arg-type]
    got: list[Advert] = []
    times: list[float] = []

    def emit(a: Advert) -> None:
        got.append(a)
        times.append(asyncio.get_running_loop().time())

    async def main() -> None:
        await bluez.connect()
        for i, (mac, rssi) in enumerate(TAGS):
            await bluez.add_tag(i, mac.upper(), payload(mac, 100 + i), rssi=rssi)
        task = asyncio.create_task(source.run(emit))
        try:
            await body(source, got)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bluez.close()

    asyncio.run(main())
    # Silence for about the watchdog period (1 s; ticks are 0.2 s, checks 0.1 s), then adverts again.
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert 0.9 <= gap <= 2.5
    state = source.state()
    assert (state["scanner_restarts"], state["adapter_resets"]) == (1, 0)
    assert (counters.snapshot()["scanner_restarts"], counters.snapshot()["adapter_resets"]) == (1, 0)


def test_watchdog_resets_a_powered_off_adapter(bluez: FakeBlueZ) -> None:
    counters = Counters()
    source = BleakSource(SourceOptions(adapter="hci0", **FAST), counters)  # type: ignore[arg-type]
    got: list[Advert] = []
    times: list[float] = []
    marks: dict[str, Any] = {}

    def emit(a: Advert) -> None:
        got.append(a)
        times.append(asyncio.get_running_loop().time())

    async def main() -> None:
        await bluez.connect()
        for i, (mac, rssi) in enumerate(TAGS):
            await bluez.add_tag(i, mac.upper(), payload(mac, 100 + i), rssi=rssi)
        task = asyncio.create_task(source.run(emit))
        try:
            await until(lambda: len(got) >= 6, 5, "adverts")
            await bluez.set_powered("hci0", False)
            await asyncio.sleep(0.3)
            marks["off_at"] = len(got)
            # restart fails (NotReady on a powered-off adapter) -> the next step power-cycles it
            await until(lambda: source.adapter_resets == 1, 6, "an adapter reset")
            marks["restart_error"] = source.last_error
            await until(lambda: len(got) >= marks["off_at"] + 6, 5, "adverts after the reset")
            marks["powered"] = await bluez.powered("hci0")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bluez.close()

    asyncio.run(main())
    assert marks["powered"] is True
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert 1.9 <= gap <= 4.0  # a restart after 1 s, the reset after 2 s, then adverts again
    assert "org.bluez.Error.NotReady" in marks["restart_error"]
    state = source.state()
    assert (state["scanner_restarts"], state["adapter_resets"], state["reset_method"]) == (1, 1, "dbus")
    assert (counters.snapshot()["scanner_restarts"], counters.snapshot()["adapter_resets"]) == (1, 1)


def test_no_dbus_fails_fast_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    address = f"unix:path={tmp_path}/nothing-here"
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    source = open_source("bleak", SourceOptions(), Counters())
    loop = asyncio.new_event_loop()
    try:
        start = loop.time()
        with pytest.raises(SourceUnavailable) as e:
            loop.run_until_complete(source.run(lambda a: None))
        assert loop.time() - start < 2.0
    finally:
        loop.close()
    assert str(e.value) == (f"Bluetooth is not available: cannot reach the D-Bus system bus at {address} "
                            "(No such file or directory); use --source simulate to run without Bluetooth")
    assert source.state()["state"] == "starting"


def test_bus_without_bluez_is_unavailable(bluez: FakeBlueZ, monkeypatch: pytest.MonkeyPatch) -> None:
    assert bluez.zoo is not None
    bluez.zoo.terminate()
    bluez.zoo.wait(5)
    source = open_source("bleak", SourceOptions(), Counters())
    with pytest.raises(SourceUnavailable) as e:
        asyncio.run(source.run(lambda a: None))
    assert str(e.value) == ("Bluetooth is not available: BlueZ (org.bluez) is not running on the D-Bus system bus; "
                            "use --source simulate to run without Bluetooth")


def test_watchdog_recovers_after_bluetoothd_restarts(bluez: FakeBlueZ) -> None:
    counters = Counters()
    source = BleakSource(SourceOptions(adapter="hci0", **FAST), counters)  # type: ignore[arg-type]
    got: list[Advert] = []
    marks: dict[str, Any] = {}

    async def main() -> None:
        await bluez.connect()
        for i, (mac, rssi) in enumerate(TAGS):
            await bluez.add_tag(i, mac.upper(), payload(mac, 100 + i), rssi=rssi)
        task = asyncio.create_task(source.run(got.append))
        try:
            await until(lambda: len(got) >= 6, 5, "adverts")
            bluez.kill_bluetoothd()
            await until(lambda: source.adapter_resets >= 1 and source.phase == "failed", 6, "a failed reset")
            marks["while_down"] = source.state()
            await bluez.start_bluetoothd()
            marks["back_at"] = len(got)
            await until(lambda: len({a.mac for a in got[marks["back_at"]:]}) == 3, 8, "all tags after the restart")
            marks["after"] = source.state()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bluez.close()

    asyncio.run(main())
    down = marks["while_down"]
    assert down["state"] == "failed"
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in down["last_error"]
    state = marks["after"]
    assert state["state"] == "receiving"
    assert source.state()["state"] == "stopped"
    assert state["scanner_restarts"] >= 1 and state["adapter_resets"] >= 1
    snap = counters.snapshot()
    assert (snap["scanner_restarts"], snap["adapter_resets"]) == (state["scanner_restarts"], state["adapter_resets"])


def test_adapter_reset_falls_back_to_btmgmt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No BlueZ on D-Bus: the reset uses `btmgmt --index N power off/on` when it is installed. btmgmt needs a kernel
    # Bluetooth stack, which this machine lacks, so a stand-in script records the calls.
    calls = tmp_path / "calls"
    tool = tmp_path / "bin" / "btmgmt"
    tool.parent.mkdir()
    tool.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:/usr/bin:/bin")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    assert asyncio.run(power_cycle("hci1", 0.01)) == "btmgmt"
    assert calls.read_text().splitlines() == ["--index 1 power off", "--index 1 power on"]
    tool.write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(SourceError, match=r"adapter reset of hci1 failed: D-Bus: .*; btmgmt power off: exit 3"):
        asyncio.run(power_cycle("hci1", 0.01))
