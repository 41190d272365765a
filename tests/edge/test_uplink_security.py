"""Username/password and TLS (CA, client certificate) against a Mosquitto with a password file and a throwaway CA;
the last will when the uplink process dies."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pki import make_ca, make_cert
from servers import Mosquitto, free_port
from test_uplink_support import fill, keys, make_readings, running_uplink, subscriber

from edge.mqtt import UplinkError

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    server = make_cert(d, "server", "ca", server=True, cn="127.0.0.1")
    client = make_cert(d, "client", "ca", server=False, cn="gw-1")
    return Pki(ca, *server, *client)


@pytest.fixture
def secure_broker(tmp_path: Path, mosquitto_factory: type[Mosquitto], pki: Pki) -> Iterator[tuple[Mosquitto, int]]:
    """Password file for everyone; a plain listener (for the test's subscriber) and a TLS listener that also wants
    a client certificate signed by the test CA."""
    work = tmp_path / "secure"
    work.mkdir()
    passwd = work / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "gw-1", PASSWORD], check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "reader", "reader-pw"], check=True, capture_output=True)
    passwd.chmod(0o600)
    tls_port = free_port()
    broker = mosquitto_factory(work, anonymous=False, extra=[
        f"password_file {passwd}",
        f"listener {tls_port} 127.0.0.1",
        f"cafile {pki.ca}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
        "require_certificate true",
    ]).start()
    yield broker, tls_port


def test_tls_with_client_certificate_and_password(tmp_path: Path, secure_broker: tuple[Mosquitto, int], pki: Pki,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    broker, tls_port = secure_broker
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "buf.db"
    readings = make_readings(1500)
    fill(db, readings)
    url = f"mqtts://gw-1:{PASSWORD}@127.0.0.1:{tls_port}"
    with subscriber(broker.port, username="reader", password="reader-pw") as sub, \
            running_uplink(db, url, ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                           key_file=str(pki.client_key)) as up:
        assert up.wait_drained(15)
        assert sub.wait(lambda s: len(s.received()) >= 1500)
        assert up.state()["broker"] == f"127.0.0.1:{tls_port}"
    assert sorted(sub.received()) == sorted(keys(readings))
    assert "mqtts://gw-1@127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text


def test_wrong_password_is_refused_with_a_clear_error(tmp_path: Path, secure_broker: tuple[Mosquitto, int],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    broker, _ = secure_broker
    caplog.set_level(logging.DEBUG)
    with running_uplink(tmp_path / "buf.db", f"mqtt://gw-1:wrong-{PASSWORD}@127.0.0.1:{broker.port}") as up:
        with pytest.raises(UplinkError) as err:
            up.wait_connected(1)
        assert up.state()["state"] == "refused"
    assert str(err.value) == (f"broker mqtt://gw-1@127.0.0.1:{broker.port} refused the connection: Not authorized "
                              "(check the username 'gw-1' and its password)")
    assert PASSWORD not in caplog.text
    assert PASSWORD not in str(up.state())


def test_server_certificate_from_an_unknown_ca_is_rejected(tmp_path: Path, secure_broker: tuple[Mosquitto, int],
                                                           pki: Pki) -> None:
    _, tls_port = secure_broker
    # No ca_file: the system CAs, which do not know the test CA.
    url = f"mqtts://gw-1:{PASSWORD}@127.0.0.1:{tls_port}"
    with (running_uplink(tmp_path / "buf.db", url, cert_file=str(pki.client_cert), key_file=str(pki.client_key)) as up,
          pytest.raises(UplinkError, match="certificate verify failed")):
        up.wait_connected(1)


def test_missing_ca_file_is_our_error(tmp_path: Path, secure_broker: tuple[Mosquitto, int]) -> None:
    _, tls_port = secure_broker
    url = f"mqtts://127.0.0.1:{tls_port}"
    with (running_uplink(tmp_path / "buf.db", url, ca_file=str(tmp_path / "nope.crt")) as up,
          pytest.raises(UplinkError, match="MQTT TLS setup failed")):
        up.wait_connected(1)


UPLINK_PROCESS = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from fakeclock import FakeClock
from edge.metrics import Counters
from edge.uplink import MqttSettings, Uplink, UplinkSettings
up = Uplink(sys.argv[1], "gw-will", MqttSettings.from_url(sys.argv[2]), UplinkSettings(), Counters(), FakeClock())
up.start()
time.sleep(60)
"""


def test_last_will_says_offline_when_the_uplink_process_is_killed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with subscriber(mosquitto.port) as sub:
        proc = subprocess.Popen([sys.executable, "-c", UPLINK_PROCESS, str(tmp_path / "buf.db"), mosquitto.url],
                                cwd=REPO)
        try:
            assert sub.wait(lambda s: s.states("gw-will") == ["online"], timeout=10)
        finally:
            proc.kill()  # SIGKILL: no DISCONNECT, the socket just closes
            proc.wait(5)
        t = time.monotonic()
        assert sub.wait(lambda s: s.states("gw-will") == ["online", "offline"], timeout=5)
        assert time.monotonic() - t < 2
    with subscriber(mosquitto.port, client_id="late") as late:
        assert late.wait(lambda s: s.states("gw-will") == ["offline"])
        assert late.status["edge-gw/gw-will/status"] == [
            {"v": 1, "gateway": "gw-will", "state": "offline", "retain": True}]
