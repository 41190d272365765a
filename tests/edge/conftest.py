"""Fixtures of the suites that drive the real bleak against the fake BlueZ (tests/edge/fakebluez.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakebluez import FakeBlueZ


@pytest.fixture
def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBlueZ]:
    fake = FakeBlueZ(tmp_path / "bluez").start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", fake.address)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def passive_bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBlueZ]:
    """A fake BlueZ that supports passive scanning (org.bluez.AdvertisementMonitorManager1 with or_patterns)."""
    fake = FakeBlueZ(tmp_path / "bluez", passive=True).start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", fake.address)
    try:
        yield fake
    finally:
        fake.stop()
