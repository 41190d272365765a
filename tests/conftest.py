"""Shared fixtures: a real Mosquitto and a real influxd per test, on free loopback ports, stopped by PID."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kafka_server import Kafka
from servers import Influxd, Mosquitto

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[type[Mosquitto]]:
    """For tests that need auth/TLS/ACL settings:
    `mosquitto_factory(workdir, extra=[...], anonymous=False).start()`."""
    started: list[Mosquitto] = []

    class Tracked(Mosquitto):
        def start(self) -> Mosquitto:
            started.append(self)
            return super().start()

    yield Tracked
    for b in started:
        b.stop()


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[Influxd]:
    db = Influxd(tmp_path / "influxd").start()
    try:
        yield db
    finally:
        db.stop()


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[Kafka]:
    """A single-node Kafka 4.x broker (KRaft) from the jars scripts/install-deps.sh copies; about 4 s to start."""
    broker = Kafka(tmp_path / "kafka").start()
    try:
        yield broker
    finally:
        broker.stop()


# The suites that run the whole pipeline, provision a root file system or run a program end to end: `make test`
# runs them, `make check` (the fast lane) does not. One list, so a new file in these folders is slow too.
SLOW_SUITES = ("faults", "ansible", "grafana", "security", "kafka")
SLOW_FILES = ("badinput/test_badinput_gateway.py", "badinput/test_badinput_receiver.py", "test_readme.py",
              "firmware/test_firmware_fuzz.py",
              # Waits on real timers (Home Assistant's expiry, the broker's $SYS interval), a million generated
              # inputs, and pip resolving the extras against the package index.
              "edge/test_homeassistant.py", "cloud/test_homeassistant_cloud.py", "cloud/test_broker_drops.py",
              "badinput/test_badinput_decoders.py", "test_extras.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        rel = Path(item.path).relative_to(here).as_posix()
        if rel.split("/")[0] in SLOW_SUITES or rel in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
