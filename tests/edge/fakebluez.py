"""A fake BlueZ for tests: PyPI `bluezoo` on a private dbus-daemon, so the real bleak code runs against it.

Two halves:
- run as a script (`python fakebluez.py --scan-interval 0.2`), it serves bluezoo on the bus named by
  DBUS_SYSTEM_BUS_ADDRESS, with the fixes below applied by patching/subclassing (site-packages stays untouched);
- imported, `FakeBlueZ` starts dbus-daemon and that script, and drives them from the test's event loop with dbus-fast:
  one bluezoo adapter per virtual tag (bluezoo uses only the first advertisement of each adapter), each with a
  registered org.bluez.LEAdvertisement1 carrying ManufacturerData {0x0499: payload}.

bluezoo 1.0.2 fixes (see /work/shared/notes/bleak-fake-bluez.md):
1. Device1.ManufacturerData is exported as a{qv} (BlueZ's type), not a{sv}; else GetManagedObjects fails.
2. Only scanner adapters (ids < TAG_ADAPTER_BASE) report the `central` role, so bleak never picks a tag's adapter.
3. Every scan tick re-reports known devices (an RSSI PropertiesChanged), as real BlueZ does for each advert heard.
4. The scan interval is a float (0.2 s), not whole seconds.
And, to match real BlueZ: StartDiscovery on a powered-off adapter fails with org.bluez.Error.NotReady; a client's
second StartDiscovery fails with org.bluez.Error.InProgress; several clients share one discovery, which stops with
the last one's StopDiscovery (bluezoo ran a report loop per call and stopped it for everyone at the first Stop).
bluezoo has no passive scanning; with `passive=True` the adapters also offer org.bluez.AdvertisementMonitorManager1:
RegisterMonitor reads the client's or_patterns back and reports only devices whose manufacturer data matches.
Without it, bleak's passive request fails as on BlueZ < 5.56 (or without --experimental).
GATT: bluezoo proxies a peripheral's GATT application (registered on the tag adapter's GattManager1) to the
central: Device1.Connect exports the linked services, WriteValue and StartNotify go to the application, a Value
change on the application's characteristic reaches the central as a notification. Fix 5: bluezoo never removes those
links, so a second Connect fails (sd_bus_add_object_vtable: EEXIST); here Disconnect removes them, ends the
notification sessions (the application gets StopNotify) and clears ServicesResolved, as BlueZ does for an unbonded
device. `HistoryTag` is a RuuviTag's Nordic UART service serving the log-read protocol (docs.ruuvi.com,
communication/bluetooth-connection/nordic-uart-service-nus/log-read).
Test control (org.bluezoo.Test1 at /org/bluezoo/test): Stall(id) silently stops an adapter's scanning the way a wedged
BlueZ does (Discovering stays true, nothing arrives); SetRSSI(address, rssi).
"""

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_property, method

TAG_ADAPTER_BASE = 16
DEFAULT_RSSI = -60
SCANNERS = ("00:1A:7D:DA:71:00", "00:1A:7D:DA:71:01")  # hci0, hci1

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow send_type="method_call"/>
  </policy>
</busconfig>
"""


# ---------------------------------------------------------------------------------------------------------------
# Test-process side
# ---------------------------------------------------------------------------------------------------------------
class TagAdvertisement(ServiceInterface):  # type: ignore[misc]
    """One tag's org.bluez.LEAdvertisement1 (no attribute called `name`: dbus-fast would take it as the
    interface name)."""

    def __init__(self, payload: bytes, company: int = 0x0499) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self.payload = payload
        self.company = company

    @method()  # type: ignore[untyped-decorator]
    def Release(self) -> None:
        pass

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Type(self) -> DBusStr:
        return "peripheral"

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Discoverable(self) -> DBusBool:
        return True

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def ManufacturerData(self) -> Annotated[dict[int, Variant], DBusSignature("a{qv}")]:
        return {self.company: Variant("ay", self.payload)}

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload
        self.emit_properties_changed({"ManufacturerData": {self.company: Variant("ay", payload)}})


NUS_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NUS_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"  # the central writes commands here
NUS_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"  # the tag notifies its answers here
LOG_END = bytes([0x3A, 0x3A, 0x10]) + b"\xff" * 8


class _NusService(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.bluez.GattService1")

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def UUID(self) -> DBusStr:
        return NUS_SERVICE

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Primary(self) -> DBusBool:
        return True


class _NusCharacteristic(ServiceInterface):  # type: ignore[misc]
    """One GattCharacteristic1 of the tag's GATT application (bluezoo reads it back and links it to the central)."""

    def __init__(self, uuid: str, service: str, flags: list[str], tag: "HistoryTag") -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.uuid, self.service, self.flags, self.tag = uuid, service, flags, tag
        self.value = b""
        self.notifying = False

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Service(self) -> Annotated[str, DBusSignature("o")]:
        return self.service

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Flags(self) -> Annotated[list[str], DBusSignature("as")]:
        return self.flags

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Value(self) -> Annotated[bytes, DBusSignature("ay")]:
        return self.value

    @dbus_property(PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Notifying(self) -> DBusBool:
        return self.notifying

    @method()  # type: ignore[untyped-decorator]
    def ReadValue(self, options: Annotated[dict[str, Variant], DBusSignature("a{sv}")]
                  ) -> Annotated[bytes, DBusSignature("ay")]:
        return self.value

    @method()  # type: ignore[untyped-decorator]
    def WriteValue(self, value: Annotated[bytes, DBusSignature("ay")],
                   options: Annotated[dict[str, Variant], DBusSignature("a{sv}")]) -> None:
        self.tag.command(bytes(value))

    @method()  # type: ignore[untyped-decorator]
    def StartNotify(self) -> None:
        self.notifying = True
        self.tag.in_flight = 0  # a new session: whatever the last one left unconfirmed is gone with its link
        self.emit_properties_changed({"Notifying": True})

    @method()  # type: ignore[untyped-decorator]
    def StopNotify(self) -> None:
        self.notifying = False
        self.emit_properties_changed({"Notifying": False})
        self.tag.room.set()  # a sender waiting for room learns the central is gone

    @method()  # type: ignore[untyped-decorator]
    def Confirm(self) -> None:
        # bluezoo confirms each Value once it has passed it on to the central: one TX buffer is free again.
        self.tag.in_flight = max(0, self.tag.in_flight - 1)
        self.tag.room.set()

    def notify(self, data: bytes) -> None:
        self.value = data
        self.emit_properties_changed({"Value": data})


class HistoryTag:
    """A RuuviTag's log (firmware 3.30+) served over the Nordic UART service, as docs.ruuvi.com describes log read:
    the central writes 0x3A 3A 11 + now (u32 BE) + since (u32 BE); the tag answers, for each logged time >= since in
    order, three notifications 0x3A 30|31|32 10 + time (u32 BE) + value (i32/u32 BE: 0.01 C, 0.01 %RH, 1 Pa), then
    0x3A 3A 10 FF*8. `log` is [(time_s, temperature_c, humidity_pct, pressure_pa)].

    `cut_after`: after that many records of the next read the tag goes out of range (the link drops: the central's
    Device1 is disconnected), once. `reads` lists each command's (now, since).

    Flow control, as on the tag: the nRF52 SoftDevice has a few TX buffers for notifications and the firmware waits
    for one to free before queueing the next, so a log read goes at the link's pace. Here at most TX_BUFFERS Values
    are unconfirmed by bluezoo at a time. Without it the fake tag emits hundreds of PropertiesChanged in one burst,
    its socket to dbus-daemon fills, and dbus-fast 5.2.0 takes that EAGAIN for a dead connection (write_callback
    finalizes the bus; python-dbus-next#153, inherited): the rest of the log, end marker included, is lost and
    bluezoo drops the GATT application. The sender also stops when the central unsubscribes (the link is down)."""

    TX_BUFFERS = 8

    def __init__(self, fake: "FakeBlueZ", index: int, log: list[tuple[int, float, float, int]]) -> None:
        self.fake = fake
        self.index = index
        self.log = log
        self.reads: list[tuple[int, int]] = []
        self.cut_after: int | None = None
        self.path = f"/edgegw/gatt{index}"
        service = f"{self.path}/service0"
        self.tx = _NusCharacteristic(NUS_TX, service, ["notify"], self)
        self.rx = _NusCharacteristic(NUS_RX, service, ["write", "write-without-response"], self)
        self._objects: list[tuple[str, ServiceInterface]] = [
            (service, _NusService()), (f"{service}/char0", self.rx), (f"{service}/char1", self.tx)]
        self._task: asyncio.Task[None] | None = None
        self.in_flight = 0
        self.room = asyncio.Event()

    async def register(self) -> None:
        for path, obj in self._objects:
            self.fake.bus.export(path, obj)
        # dbus-fast answers ObjectManager.GetManagedObjects on the application path with the objects under it.
        await self.fake._call(f"/org/bluez/hci{TAG_ADAPTER_BASE + self.index}", "org.bluez.GattManager1",
                              "RegisterApplication", "oa{sv}", [self.path, {}])

    def command(self, value: bytes) -> None:
        if len(value) != 11 or value[:3] != bytes([0x3A, 0x3A, 0x11]):
            return  # other NUS commands: a real tag answers some; the gateway sends none
        now, since = int.from_bytes(value[3:7], "big"), int.from_bytes(value[7:11], "big")
        self.reads.append((now, since))
        self._task = asyncio.get_running_loop().create_task(self._send(since))

    async def _send(self, since: int) -> None:
        cut, self.cut_after = self.cut_after, None
        sent = 0
        for t, temperature, humidity, pressure in self.log:
            if t < since:
                continue
            if cut is not None and sent == cut:
                # The link drops once the central has had those records (all Values confirmed): "after 12 records"
                # then means 12, not 11 and a part still queued in bluezoo.
                while self.tx.notifying and self.in_flight:
                    self.room.clear()
                    await self.room.wait()
                await self.fake.disconnect_central(self.fake.tag_macs[self.index])
                return
            for src, value in ((0x30, round(temperature * 100)), (0x31, round(humidity * 100)), (0x32, pressure)):
                if not await self._notify(bytes([0x3A, src, 0x10]) + t.to_bytes(4, "big")
                                          + value.to_bytes(4, "big", signed=True)):
                    return
            sent += 1
        await self._notify(LOG_END)

    async def _notify(self, data: bytes) -> bool:
        """Send once a TX buffer is free; False (nothing sent) once the central no longer listens."""
        while self.tx.notifying and self.in_flight >= self.TX_BUFFERS:
            self.room.clear()
            await self.room.wait()
        if not self.tx.notifying:
            return False
        self.in_flight += 1
        self.tx.notify(data)
        return True


class FakeBlueZ:
    """dbus-daemon + bluezoo, started in `tmp`, stopped by PID. Use `address` as DBUS_SYSTEM_BUS_ADDRESS."""

    def __init__(self, tmp: Path, scan_interval: float = 0.2, passive: bool = False) -> None:
        self.tmp = tmp
        self.scan_interval = scan_interval
        self.passive = passive
        self.address = ""
        self.daemon: subprocess.Popen[bytes] | None = None
        self.zoo: subprocess.Popen[bytes] | None = None
        self.bus: Any = None
        self.tags: dict[int, TagAdvertisement] = {}
        self.tag_macs: dict[int, str] = {}

    def start(self) -> "FakeBlueZ":
        if shutil.which("dbus-daemon") is None:
            raise RuntimeError("dbus-daemon not found: install it with `apt-get install dbus`")
        self.tmp.mkdir(parents=True, exist_ok=True)
        conf = self.tmp / "bus.conf"
        conf.write_text(BUS_CONF.format(socket=self.tmp / "system_bus_socket"))
        self.daemon = subprocess.Popen(["dbus-daemon", "--config-file", str(conf), "--nofork", "--print-address=1"],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.daemon.stdout is not None
        self.address = self.daemon.stdout.readline().decode().strip()
        assert self.address.startswith("unix:"), f"dbus-daemon did not start: {self.address!r}"
        self._start_zoo()
        return self

    def _start_zoo(self) -> None:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}
        with (self.tmp / "bluezoo.log").open("ab") as log:
            args = [sys.executable, __file__, "--scan-interval", str(self.scan_interval)]
            self.zoo = subprocess.Popen(args + ["--passive"] * self.passive, env=env, stdout=subprocess.PIPE,
                                        stderr=log)
        assert self.zoo.stdout is not None
        line = self.zoo.stdout.readline().decode().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"bluezoo did not start: {line!r}; see {self.tmp / 'bluezoo.log'}")

    def kill_bluetoothd(self) -> None:
        """bluetoothd dies: org.bluez leaves the bus with all its adapters and devices."""
        assert self.zoo is not None
        self.zoo.kill()
        self.zoo.wait(5)
        if self.zoo.stdout is not None:
            self.zoo.stdout.close()

    async def start_bluetoothd(self) -> None:
        """bluetoothd comes back with fresh state; the tags register their advertisements again."""
        self._start_zoo()
        for index, adv in self.tags.items():
            await self.add_tag(index, self.tag_macs[index], adv.payload, company=adv.company)

    def stop(self) -> None:
        for proc in (self.zoo, self.daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()
        self.zoo = self.daemon = None

    # -- driving it (call from the test's event loop, with DBUS_SYSTEM_BUS_ADDRESS set) -------------------------
    async def connect(self) -> None:
        self.bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()

    async def close(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()
            self.bus = None

    async def _call(self, path: str, interface: str, member: str, signature: str = "", body: Any = None) -> Any:
        reply = await self.bus.call(Message(destination="org.bluez", path=path, interface=interface, member=member,
                                            signature=signature, body=body or []))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{interface}.{member} on {path}: {reply.error_name} {reply.body}")
        return reply.body

    async def add_tag(self, index: int, mac: str, payload: bytes, rssi: int = DEFAULT_RSSI,
                      company: int = 0x0499) -> TagAdvertisement:
        adapter_id = TAG_ADAPTER_BASE + index
        await self.set_rssi(mac, rssi)
        (path,) = await self._call("/org/bluezoo", "org.bluezoo.Manager1", "AddAdapter", "ys", [adapter_id, mac])
        adv_path = f"/edgegw/tag{index}"
        adv = self.tags.get(index)
        if adv is None:
            adv = TagAdvertisement(payload, company)
            self.bus.export(adv_path, adv)
        await self._call(path, "org.bluez.LEAdvertisingManager1", "RegisterAdvertisement", "oa{sv}", [adv_path, {}])
        self.tags[index] = adv
        self.tag_macs[index] = mac
        return adv

    async def add_history_tag(self, index: int, mac: str, payload: bytes,
                              log: list[tuple[int, float, float, int]]) -> HistoryTag:
        """A tag that advertises `payload` and serves `log` over GATT (register before the central connects)."""
        await self.add_tag(index, mac, payload)
        tag = HistoryTag(self, index, log)
        await tag.register()
        return tag

    async def disconnect_central(self, mac: str, adapter: str = "hci0") -> None:
        """The link to `mac` drops, as when the tag goes out of range: the central sees Connected = false."""
        # bluezoo names the device path after the address as the tag's adapter was given it (its case kept; real
        # BlueZ upper-cases), so look it up rather than build it.
        (objects,) = await self._call("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        prefix = f"/org/bluez/{adapter}/dev_"
        wanted = mac.upper().replace(":", "_")
        path = next(p for p in objects if p.startswith(prefix) and p[len(prefix):].upper() == wanted)
        await self._call(path, "org.bluez.Device1", "Disconnect")

    async def silence_tag(self, index: int) -> None:
        await self._call(f"/org/bluez/hci{TAG_ADAPTER_BASE + index}", "org.bluez.LEAdvertisingManager1",
                         "UnregisterAdvertisement", "o", [f"/edgegw/tag{index}"])

    async def set_powered(self, adapter: str, powered: bool) -> None:
        await self._call(f"/org/bluez/{adapter}", "org.freedesktop.DBus.Properties", "Set", "ssv",
                         ["org.bluez.Adapter1", "Powered", Variant("b", powered)])

    async def powered(self, adapter: str) -> bool:
        (value,) = await self._call(f"/org/bluez/{adapter}", "org.freedesktop.DBus.Properties", "Get", "ss",
                                    ["org.bluez.Adapter1", "Powered"])
        return bool(value.value)

    async def devices(self, adapter: str) -> set[str]:
        """Addresses of the devices BlueZ lists under `adapter` (what a scan on it has discovered)."""
        (objects,) = await self._call("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        prefix = f"/org/bluez/{adapter}/dev_"
        return {p[len(prefix):].replace("_", ":") for p in objects if p.startswith(prefix)}

    async def stall(self, adapter_id: int) -> None:
        await self._call("/org/bluezoo/test", "org.bluezoo.Test1", "Stall", "y", [adapter_id])

    async def set_rssi(self, mac: str, rssi: int) -> None:
        await self._call("/org/bluezoo/test", "org.bluezoo.Test1", "SetRSSI", "sn", [mac, rssi])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------
# bluezoo side (this file run as a script)
# ---------------------------------------------------------------------------------------------------------------
def _matches(patterns: list[Any], manufacturer_data: dict[int, Any]) -> bool:
    """BlueZ or_patterns on AD type 0xFF: the AD data is the company id (little endian) plus the payload."""
    for start, ad_type, content in patterns:
        if ad_type != 0xFF:
            continue
        for company, value in manufacturer_data.items():
            data = company.to_bytes(2, "little") + bytes(value[1] if isinstance(value, tuple) else value)
            if data[start:start + len(content)] == bytes(content):
                return True
    return False


def _patch_bluezoo(passive: bool) -> Any:
    import sdbus
    from bluezoo import bluezoo as zoo
    from bluezoo import events
    from bluezoo.adapter import Adapter
    from bluezoo.device import Device
    from bluezoo.exceptions import DBusBluezInProgressError, DBusBluezNotReadyError
    from bluezoo.interfaces.Device import DeviceInterface
    from bluezoo.utils import dbus_method_async_except_logging, dbus_property_async_except_logging

    # Fix 1: the exported type comes from the property objects' signature at export time.
    for cls in (DeviceInterface, Device):
        prop = vars(cls).get("ManufacturerData")
        if prop is not None:
            prop.property_signature = "a{qv}"

    rssi_by_address: dict[str, int] = {}

    class FixedAdapter(Adapter):  # type: ignore[misc]
        # Fix 2: only scanner adapters are centrals.
        @sdbus.dbus_property_async_override()
        @dbus_property_async_except_logging
        def Roles(self) -> list[str]:
            return ["central", "peripheral"] if self.id < TAG_ADAPTER_BASE else ["peripheral"]

        # Real BlueZ refuses discovery on a powered-off adapter.
        @sdbus.dbus_method_async_override()
        @dbus_method_async_except_logging
        async def StartDiscovery(self) -> None:
            if not self.powered:
                raise DBusBluezNotReadyError("Resource Not Ready")
            sender = sdbus.get_current_message().sender
            if sender in self.scan_subscribers:
                # BlueZ (adapter.c start_discovery): every client can start one discovery; again is "busy".
                raise DBusBluezInProgressError("Operation already in progress")
            if self.scan_subscribers and not self.discovering_task.done():
                # One discovery per adapter for all its clients, as BlueZ runs it (bluezoo would start a second
                # report loop, and the first client's StopDiscovery would end the other's scan).
                async def on_sender_lost() -> None:
                    self.scan_subscribers.pop(sender, None)
                    if not self.scan_subscribers:
                        self.discovering_task.cancel()
                        await self.Discovering.set_async(False)

                self.scan_subscribers[sender] = events.subscribe(f"service:lost:{sender}", on_sender_lost, once=True)
                return
            await super().StartDiscovery()

        @sdbus.dbus_method_async_override()
        @dbus_method_async_except_logging
        async def StopDiscovery(self) -> None:
            sender = sdbus.get_current_message().sender
            if set(self.scan_subscribers) - {sender}:
                # Other clients still discover: this one leaves, the scan goes on (BlueZ's discovery_remove).
                subscriber = self.scan_subscribers.pop(sender, None)
                if subscriber is not None:
                    subscriber.unsubscribe()
                return
            await super().StopDiscovery()

    class MonitorProxy(sdbus.DbusInterfaceCommonAsync,  # type: ignore[misc,call-arg]
                       interface_name="org.bluez.AdvertisementMonitor1"):
        @sdbus.dbus_property_async("a(yyay)")
        def Patterns(self) -> list[tuple[int, int, bytes]]:
            raise NotImplementedError

    class MonitorManager(sdbus.DbusInterfaceCommonAsync,  # type: ignore[misc,call-arg]
                         interface_name="org.bluez.AdvertisementMonitorManager1"):
        """Passive scanning: like BlueZ (>= 5.56, --experimental), report only devices matching a monitor's
        or_patterns. The patterns are read back from the client's org.bluez.AdvertisementMonitor1 object."""

        monitors: dict[tuple[str, str], Any]

        @sdbus.dbus_method_async(input_signature="o", flags=sdbus.DbusUnprivilegedFlag)
        async def RegisterMonitor(self, application: str) -> None:
            sender = sdbus.get_current_message().sender
            self.monitors[sender, application] = None  # read on the next tick: the client exports it after this
            if self.discovering_task.done():  # type: ignore[attr-defined]
                self.discovering_task = self.mock.create_discovering_task(self.id)  # type: ignore[attr-defined]

        @sdbus.dbus_method_async(input_signature="o", flags=sdbus.DbusUnprivilegedFlag)
        async def UnregisterMonitor(self, application: str) -> None:
            sender = sdbus.get_current_message().sender
            self.monitors.pop((sender, application), None)
            if not self.monitors:
                self.discovering_task.cancel()  # type: ignore[attr-defined]

        @sdbus.dbus_property_async("as")
        def SupportedMonitorTypes(self) -> list[str]:
            return ["or_patterns"]

    class PassiveAdapter(FixedAdapter, MonitorManager):  # type: ignore[misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.monitors = {}

    zoo.Adapter = PassiveAdapter if passive else FixedAdapter

    async def monitor_patterns(scanner: Any) -> list[Any] | None:
        """None when the scanner has no monitors (active scan); else the union of their patterns."""
        monitors = getattr(scanner, "monitors", None)
        if not monitors:
            return None
        patterns: list[Any] = []
        for (sender, path), known in list(monitors.items()):
            if known is None:
                try:
                    monitors[sender, path] = await MonitorProxy.new_proxy(sender, path).Patterns.get_async()
                except Exception:  # not exported yet
                    continue
            patterns.extend(monitors[sender, path])
        return patterns

    def create_discovering_task(self: Any, id: int) -> asyncio.Task[None]:
        # Fixes 3 and 4: LE only, float interval, and every tick re-reports each advertising tag.
        async def task() -> None:
            while True:
                scanner = self.adapters[id]
                patterns = await monitor_patterns(scanner)
                for adapter in list(self.adapters.values()):
                    if adapter.id == id or not adapter.powered or not adapter.advertisements:
                        continue
                    adv = next(iter(adapter.advertisements.values()))
                    if not adv.Discoverable.get(False):
                        continue
                    if patterns is not None and not _matches(patterns, adv.ManufacturerData.get({})):
                        continue
                    device = Device(adapter, is_le=True)
                    device.manufacturer_data = adv.ManufacturerData.get({})
                    device.tx_power = adv.TxPower.get()
                    device.rssi = rssi_by_address.get(adapter.address.upper(), DEFAULT_RSSI)
                    path = f"{scanner.get_object_path()}/dev_{adapter.address.replace(':', '_')}"
                    known = scanner.devices.get(path)
                    await scanner.add_device(device)
                    if known is not None:
                        known.rssi = device.rssi
                        known.properties_changed.emit(("org.bluez.Device1", {"RSSI": ("n", device.rssi)}, []))
                await asyncio.sleep(self.scan_interval)

        return asyncio.create_task(task())

    zoo.BluezMockService.create_discovering_task = create_discovering_task

    # Fix 5: a disconnect tears the GATT links down, so the next Connect can export them again.
    plain_disconnect = Device.disconnect

    async def disconnect(self: Any, uuid: str | None = None) -> None:
        await plain_disconnect(self, uuid)
        for link in list(self.services.values()):
            subscription = getattr(link, "client_props_changed_subscription", None)
            if subscription is not None and link.client.Notifying.get(False):
                subscription.unsubscribe()
                with contextlib.suppress(Exception):  # the application may be gone already
                    await link.client.StopNotify()
            self.peer_adapter.mock.remove_object(link)
        self.services.clear()
        if self.services_resolved:
            await self.ServicesResolved.set_async(False)

    Device.disconnect = disconnect

    class TestControl(sdbus.DbusInterfaceCommonAsync, interface_name="org.bluezoo.Test1"):  # type: ignore[misc,call-arg]
        def __init__(self, service: Any) -> None:
            super().__init__()
            self.service = service

        @sdbus.dbus_method_async(input_signature="y", flags=sdbus.DbusUnprivilegedFlag)
        async def Stall(self, id: int) -> None:
            self.service.adapters[id].discovering_task.cancel()

        @sdbus.dbus_method_async(input_signature="sn", flags=sdbus.DbusUnprivilegedFlag)
        async def SetRSSI(self, address: str, rssi: int) -> None:
            rssi_by_address[address.upper()] = rssi

    return zoo, TestControl


async def _serve(scan_interval: float, passive: bool) -> None:
    if os.environ.get("FAKEBLUEZ_DEBUG"):
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)d %(name)s %(message)s")
    zoo, control_cls = _patch_bluezoo(passive)
    await zoo.startup(bus="system", adapters=list(SCANNERS), auto_enable=True, scan_interval=scan_interval)
    control = control_cls(zoo.startup.service)
    control.export_to_dbus("/org/bluezoo/test")
    print("ready", flush=True)
    # From here on stdout is the log too. The test process reads only the "ready" line, and pyventus (bluezoo's event
    # library) logs its handlers' exceptions to stdout: into an undrained pipe, 64 KiB of tracebacks later, bluezoo
    # blocks in write() and the whole fake BlueZ freezes (no notification, no disconnect, no reply).
    os.dup2(2, 1)
    await asyncio.Event().wait()


if __name__ == "__main__":
    interval = float(sys.argv[sys.argv.index("--scan-interval") + 1]) if "--scan-interval" in sys.argv else 0.2
    asyncio.run(_serve(interval, "--passive" in sys.argv))
