"""`bleak`: RuuviTag adverts from a BlueZ adapter via bleak, with a stall watchdog.

- Only manufacturer data with company id 0x0499 (Ruuvi Innovations) is handed on.
- The adapter is `options.adapter` ("hci1"), or bleak's default (the first powered adapter with the central role).
- Passive scanning (BlueZ AdvertisementMonitor1 with an or-pattern on 0x0499) when `options.passive`; it needs
  BlueZ >= 5.56 with --experimental and Linux >= 5.10. Where it is not available the source logs one warning and
  scans actively, and `state()` says so.
- Watchdog (see watchdog.py): restart the scanner, then reset the adapter. A reset powers the adapter off and on
  through BlueZ's D-Bus API (org.bluez.Adapter1.Powered), which needs the rights bluetoothd grants root or the
  `bluetooth` group; if that call fails, `btmgmt --index N power off/on` is tried when btmgmt is installed.
  Counters: `scanner_restarts`, `adapter_resets`.
- Without D-Bus or BlueZ, `run()` fails at once with SourceUnavailable (one line, suggesting `--source simulate`).
- `state()["state"]`: starting, then waiting (no tag heard yet) / receiving / stalled / idle (tags gone longer than
  expect_s) while scanning; restarting / resetting during a recovery step; failed when the last step could not
  start the scanner (the next one comes after another watchdog period); stopped.

bleak and dbus-fast are imported inside the methods: only a gateway that scans pays for them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from typing import Any

from edge.metrics import Counters
from edge.model import RUUVI_COMPANY_ID, Advert
from edge.sources.base import Emit, SourceError, SourceOptions, SourceUnavailable
from edge.sources.watchdog import RESET_ADAPTER, RESTART_SCANNER, Watchdog

log = logging.getLogger(__name__)

_RUUVI_ID_LE = RUUVI_COMPANY_ID.to_bytes(2, "little")
_NO_RSSI = (-127, 127)  # BlueZ/bleak's "RSSI not available"
_SUGGEST = "use --source simulate to run without Bluetooth"
_TOOL_TIMEOUT_S = 10.0
_DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


_MAX_DEVICES = 10_000


class BleakSource:
    def __init__(self, options: SourceOptions, counters: Counters) -> None:
        self.options = options
        self.counters = counters
        self.watchdog = Watchdog(options.watchdog_s, max(options.expect_s, options.watchdog_s))
        self.mode = "passive" if options.passive else "active"
        self.adapter = options.adapter
        self.passive_fallback: str | None = None
        self.phase = "stopped"
        self.adverts = 0
        self.scanner_restarts = 0
        self.adapter_resets = 0
        self.reset_method: str | None = None
        self.last_error = ""
        self._scanner: Any = None
        self._emit: Emit | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The last bleak BLEDevice per Ruuvi MAC, so a history download (edge/history.py) connects to a device this
        # scan already knows instead of starting a discovery of its own (BlueZ refuses a second StartDiscovery
        # from the same D-Bus client with org.bluez.Error.InProgress while this scanner runs).
        self.devices: dict[str, Any] = {}

    def device(self, mac: str) -> Any | None:
        return self.devices.get(mac)

    # -- state -------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        now = self._loop.time() if self._loop is not None else None
        last = self.watchdog.last_advert
        return {
            "kind": "bleak",
            "state": self.phase if self.phase != "scanning" or now is None else self.watchdog.status(now),
            "adapter": self.adapter,
            "scanning_mode": self.mode,
            "passive_fallback": self.passive_fallback,
            "adverts": self.adverts,
            "last_advert_age_s": None if last is None or now is None else round(now - last, 3),
            "scanner_restarts": self.scanner_restarts,
            "adapter_resets": self.adapter_resets,
            "reset_method": self.reset_method,
            "last_error": self.last_error,
        }

    # -- adverts -----------------------------------------------------------------------------------------------
    def _on_advert(self, device: Any, adv: Any) -> None:
        data = adv.manufacturer_data.get(RUUVI_COMPANY_ID)
        if data is None or self._emit is None or self._loop is None:
            return
        count = self.options.count
        if count is not None and self.adverts >= count:
            return
        self.watchdog.advert(self._loop.time())
        rssi = adv.rssi if adv.rssi not in _NO_RSSI else None
        self.adverts += 1
        mac = str(device.address).lower()
        devices = self.devices
        if mac not in devices and len(devices) >= _MAX_DEVICES:
            devices.clear()  # a flood of distinct addresses must not grow memory
        devices[mac] = device
        self._emit(Advert(mac, bytes(data), rssi))

    # -- scanner -----------------------------------------------------------------------------------------------
    async def _start_scanner(self) -> None:
        from bleak import BleakScanner
        from bleak.args.bluez import BlueZScannerArgs, OrPattern
        from bleak.assigned_numbers import AdvertisementDataType

        bluez: BlueZScannerArgs = {}
        if self.adapter:
            bluez["adapter"] = self.adapter
        if self.mode == "passive":
            bluez["or_patterns"] = [OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, _RUUVI_ID_LE)]
        scanner = BleakScanner(detection_callback=self._on_advert, scanning_mode=self.mode, bluez=bluez)  # type: ignore[arg-type]
        await scanner.start()
        self._scanner = scanner

    async def _stop_scanner(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is None:
            return
        try:
            await scanner.stop()
        except Exception as e:  # a wedged adapter often refuses StopDiscovery too; we restart anyway
            log.debug("stopping the scanner failed: %s", _one_line(e))

    async def _first_start(self) -> None:
        """Start scanning or fail fast: every error here means "no usable Bluetooth"."""
        try:
            from bleak.backends.bluezdbus.manager import get_global_bluez_manager
            from bleak.exc import BleakError
        except ImportError as e:
            raise SourceUnavailable(f"bleak is not installed ({_one_line(e)}); {_SUGGEST}") from None
        try:
            manager = await get_global_bluez_manager()
            if not self.adapter:
                self.adapter = manager.get_default_adapter().rsplit("/", 1)[-1]
            try:
                await self._start_scanner()
            except BleakError as e:
                if self.mode != "passive" or "not found" in str(e):
                    raise
                self.passive_fallback = _one_line(e)
                log.warning("passive scanning is not available on %s (%s); falling back to active scanning",
                            self.adapter, self.passive_fallback)
                self.mode = "active"
                await self._start_scanner()
        except OSError as e:
            address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", _DEFAULT_SYSTEM_BUS)
            raise SourceUnavailable(f"Bluetooth is not available: cannot reach the D-Bus system bus at {address} "
                                    f"({e.strerror or _one_line(e)}); {_SUGGEST}") from None
        except (EOFError, BleakError) as e:
            if "ServiceUnknown" in str(e):
                raise SourceUnavailable("Bluetooth is not available: BlueZ (org.bluez) is not running on the D-Bus "
                                        f"system bus; {_SUGGEST}") from None
            raise SourceUnavailable(f"Bluetooth is not available: {_one_line(e)}; {_SUGGEST}") from None
        except Exception as e:  # dbus-fast raises its own types for a broken bus; all mean the same here
            raise SourceUnavailable(f"Bluetooth is not available ({type(e).__name__}: {_one_line(e)}); "
                                    f"{_SUGGEST}") from None

    async def _restart_scanner(self) -> None:
        self.scanner_restarts += 1
        self.counters.inc("scanner_restarts")
        self.phase = "restarting"
        log.warning("no advert for %.0f s from the tags on %s; restarting the scanner (restart %d)",
                    self.options.watchdog_s, self.adapter, self.scanner_restarts)
        await self._stop_scanner()
        await self._try_start()

    async def _reset_adapter(self) -> None:
        self.adapter_resets += 1
        self.counters.inc("adapter_resets")
        self.phase = "resetting"
        log.warning("still no advert on %s; resetting the adapter (reset %d)", self.adapter, self.adapter_resets)
        await self._stop_scanner()
        try:
            self.reset_method = await power_cycle(self.adapter or "hci0", self.options.reset_pause_s)
        except SourceError as e:
            self.last_error = str(e)
            log.error("%s", e)
        await self._try_start()

    async def _try_start(self) -> None:
        try:
            await self._start_scanner()
            self.phase = "scanning"
        except Exception as e:  # the watchdog tries again after the next stall period
            self.phase = "failed"
            self.last_error = f"scanner start failed: {_one_line(e)}"
            log.warning("%s", self.last_error)

    # -- run ---------------------------------------------------------------------------------------------------
    async def run(self, emit: Emit) -> None:
        self._loop = asyncio.get_running_loop()
        self._emit = emit
        self.phase = "starting"
        await self._first_start()
        self.phase = "scanning"
        if self.options.tags_expected:
            self.watchdog.expect_from(self._loop.time())
        log.info("scanning on %s (%s)", self.adapter, self.mode)
        count = self.options.count
        try:
            while count is None or self.adverts < count:
                await asyncio.sleep(self.options.check_s)
                step = self.watchdog.check(self._loop.time())
                if step == RESTART_SCANNER:
                    await self._restart_scanner()
                elif step == RESET_ADAPTER:
                    await self._reset_adapter()
        finally:
            self._emit = None
            await self._stop_scanner()
            self.phase = "stopped"


async def power_cycle(adapter: str, pause_s: float) -> str:
    """Power the adapter off and on again. Returns the method that worked ("dbus" or "btmgmt")."""
    try:
        await _power_cycle_dbus(adapter, pause_s)
        return "dbus"
    except Exception as e:
        reason = _one_line(e)
    btmgmt = shutil.which("btmgmt")
    if btmgmt is None or not adapter.startswith("hci"):
        raise SourceError(f"adapter reset of {adapter} failed: {reason}")
    index = adapter[3:]
    for state in ("off", "on"):
        proc = await asyncio.create_subprocess_exec(btmgmt, "--index", index, "power", state,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        try:
            code = await asyncio.wait_for(proc.wait(), _TOOL_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            code = -1
        if code != 0:
            raise SourceError(f"adapter reset of {adapter} failed: D-Bus: {reason}; btmgmt power {state}: exit {code}")
        if state == "off":
            await asyncio.sleep(pause_s)
    return "btmgmt"


async def _power_cycle_dbus(adapter: str, pause_s: float) -> None:
    from dbus_fast import BusType, Message, MessageType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        for powered in (False, True):
            reply = await bus.call(Message(
                destination="org.bluez", path=f"/org/bluez/{adapter}", interface="org.freedesktop.DBus.Properties",
                member="Set", signature="ssv", body=["org.bluez.Adapter1", "Powered", Variant("b", powered)]))
            if reply is None or reply.message_type == MessageType.ERROR:
                detail = reply.error_name if reply is not None else "no reply"
                raise SourceError(f"setting Powered={powered} failed: {detail}")
            if not powered:
                await asyncio.sleep(pause_s)
    finally:
        bus.disconnect()
