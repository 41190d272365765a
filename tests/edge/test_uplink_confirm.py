"""The uplink against a real Mosquitto: readings leave the buffer only on the cloud's confirmation (cloud mode)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto
from test_uplink_support import FAST, Subscriber, buffered, fill, keys, make_readings, running_uplink, subscriber

from edge.metrics import Counters
from edge.uplink import UplinkSettings

EDGE = [sys.executable, "-m", "edge.cli"]


def wait_until(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(cond())  # type: ignore[operator]


def publish(port: int, topic: str, payload: bytes) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="receiver-stand-in")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_pubacked_readings_stay_until_confirmed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    readings = make_readings(1200)
    fill(db, readings)
    counters = Counters()
    with subscriber(mosquitto.port, confirm=False) as sub, \
            running_uplink(db, mosquitto.url, counters=counters) as up:
        assert sub.wait(lambda s: len(s.received()) == 1200)
        assert wait_until(lambda: up.state()["awaiting_confirm"] == 1200)
        st = up.state()
        assert (st["inflight"], st["unconfirmed"], st["confirm"]) == (0, 1200, "cloud")
        assert st["oldest_unconfirmed_ns"] is not None
        assert buffered(db) == 1200  # the broker has them all, and yet nothing is deleted
        assert counters.snapshot()["readings_acked"] == 0
        seqs = sorted(b.seq for b in sub.batches)
        sub.confirm_seqs("gw-1", seqs[:1])  # the first batch only
        assert wait_until(lambda: buffered(db) == 700)
        sub.confirm_seqs("gw-1", seqs)
        assert up.wait_drained(10)
    snap = counters.snapshot()
    assert (snap["readings_acked"], snap["confirms_received"], snap["confirms_invalid"]) == (1200, 2, 0)
    assert sorted(sub.received()) == sorted(keys(readings))


def test_unconfirmed_batches_are_sent_again_under_new_seqs(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    readings = make_readings(600)
    fill(db, readings)
    counters = Counters()
    settings = dataclasses.replace(FAST, confirm_timeout_s=0.5)
    with subscriber(mosquitto.port, confirm=False) as sub, \
            running_uplink(db, mosquitto.url, settings=settings, counters=counters) as up:
        assert sub.wait(lambda s: len(s.received()) == 1200)  # sent, not confirmed, sent again after 0.5 s
        first, second = sub.batches[:2], sub.batches[2:4]
        assert sorted(k for b in first for k in b.keys) == sorted(k for b in second for k in b.keys)
        assert {b.seq for b in first}.isdisjoint({b.seq for b in second})
        assert buffered(db) == 600
        snap = counters.snapshot()
        assert snap["confirm_timeouts"] == 2 and snap["readings_resent"] == 600
        # The timeout doubled: the third round comes about 1 s after the second, not 0.5 s.
        assert sub.wait(lambda s: len(s.batches) >= 6, timeout=5)
        gap = sub.batches[4].at - sub.batches[2].at
        assert gap > 0.9, gap
        # A confirmation of the first round's seqs still deletes nothing: those batches were handed back.
        sub.confirm_seqs("gw-1", [b.seq for b in first])
        time.sleep(0.3)
        assert buffered(db) == 600
        sub.confirm = True  # the receiver is back: the next round is confirmed and the buffer empties
        assert up.wait_drained(10)
        assert up.state()["confirm_timeouts"] >= 3


def test_the_unconfirmed_window_bounds_what_is_sent(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(5000))
    settings = dataclasses.replace(FAST, max_unconfirmed=1000)
    with subscriber(mosquitto.port, confirm=False) as sub, \
            running_uplink(db, mosquitto.url, settings=settings) as up:
        assert sub.wait(lambda s: len(s.received()) == 1000)
        time.sleep(0.5)
        assert len(sub.received()) == 1000  # two batches of 500, then it waits for the cloud
        assert up.state()["unconfirmed"] == 1000
        sub.confirm = True
        sub.confirm_seqs("gw-1", [b.seq for b in sub.batches])
        assert up.wait_drained(10)
        assert len(set(sub.received())) == 5000


def test_bad_or_foreign_confirmations_delete_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(500))
    counters = Counters()
    with subscriber(mosquitto.port, confirm=False) as sub, \
            running_uplink(db, mosquitto.url, counters=counters) as up:
        assert sub.wait(lambda s: len(s.batches) == 1)
        seq = sub.batches[0].seq
        for payload in (b'{"v":1,"gateway":"gw-2","seqs":[[0,99]]}', b"not json", b'{"v":2,"gateway":"gw-1",'
                        b'"seqs":[[0,99]]}', b'{"v":1,"gateway":"gw-1","seqs":[[5,4]]}'):
            publish(mosquitto.port, "edge-gw/gw-1/confirm", payload)
        publish(mosquitto.port, "edge-gw/gw-1/confirm", f'{{"v":1,"gateway":"gw-1","seqs":[[{seq + 1},{seq + 9}]]}}'
                .encode())  # well formed, but not our batch
        assert wait_until(lambda: counters.snapshot()["confirms_invalid"] == 4)
        assert wait_until(lambda: counters.snapshot()["confirms_received"] == 1)
        assert buffered(db) == 500
        assert up.state()["confirms_invalid"] == 4
        publish(mosquitto.port, "edge-gw/gw-1/confirm", f'{{"v":1,"gateway":"gw-1","seqs":[[{seq},{seq}]]}}'.encode())
        assert up.wait_drained(5)


def test_broker_mode_deletes_on_puback(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(1000))
    settings = dataclasses.replace(FAST, confirm="broker")
    with subscriber(mosquitto.port, confirm=False) as sub, \
            running_uplink(db, mosquitto.url, settings=settings) as up:
        assert up.wait_drained(10)
        assert len(sub.received()) == 1000
        assert up.state()["unconfirmed"] == 0


def test_unconfirmed_readings_are_sent_again_after_a_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    readings = make_readings(700)
    fill(db, readings)
    with subscriber(mosquitto.port, confirm=False) as sub:
        with running_uplink(db, mosquitto.url) as up:
            assert sub.wait(lambda s: len(s.received()) == 700)
            assert wait_until(lambda: up.state()["awaiting_confirm"] == 700)
        assert up.state()["unconfirmed"] == 0  # stopped: nothing is in flight any more
        assert buffered(db) == 700
        first_seqs = {b.seq for b in sub.batches}
        sub.confirm = True
        with running_uplink(db, mosquitto.url) as up:
            assert up.wait_drained(10)
        again = sub.batches[2:]
        assert sorted(k for b in again for k in b.keys) == sorted(keys(readings))
        assert first_seqs.isdisjoint(b.seq for b in again)  # a restart never reuses a seq


def test_flush_waits_for_the_cloud_and_says_what_waits(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(300))
    args = [*EDGE, "flush", "--gateway-id", "gw-1", "--mqtt", mosquitto.url, "--db", str(db)]
    with subscriber(mosquitto.port, confirm=False):
        proc = subprocess.run([*args, "--timeout", "2"], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "Error: timed out after 2s: 300 of 300 readings still wait: 0 not yet sent (uplink online); 300 sent and " \
           "acknowledged by the broker but not confirmed by the cloud" in proc.stderr, proc.stderr
    assert buffered(db) == 300
    with subscriber(mosquitto.port, client_id="confirming"):
        proc = subprocess.run([*args, "--timeout", "20"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "forwarded 300 readings and the cloud confirmed every one; buffer empty"
    assert buffered(db) == 0


def test_flush_in_broker_mode(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(300))
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nid = "gw-1"\ndb = "{db}"\n[mqtt]\nurl = "{mosquitto.url}"\n'
                      '[uplink]\nconfirm = "broker"\n')
    with subscriber(mosquitto.port, confirm=False):
        proc = subprocess.run([*EDGE, "flush", "--config", str(config), "--timeout", "20"],
                              capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "forwarded 300 readings and the broker acknowledged every one; buffer empty"


def test_a_gateway_the_acl_keeps_from_its_confirmations_keeps_its_readings(tmp_path: Path) -> None:
    """A broker ACL without `read` on the confirm topic (the ACL of wire format 1.0). Mosquitto 2.0.11 still grants
    the subscription and just delivers nothing, so the gateway cannot tell: it sends, deletes nothing, and shows the
    readings as awaiting the cloud's confirmation."""
    acl = tmp_path / "acl"
    acl.write_text("user gw-1\ntopic write edge-gw/gw-1/#\n")
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw-1", "pw"], check=True)
    passwd.chmod(0o600)
    acl.chmod(0o600)
    broker = Mosquitto(tmp_path / "broker", anonymous=False,
                       extra=[f"password_file {passwd}", f"acl_file {acl}"]).start()
    try:
        db = tmp_path / "buf.db"
        fill(db, make_readings(10))
        with running_uplink(db, f"mqtt://gw-1:pw@127.0.0.1:{broker.port}") as up:
            assert wait_until(lambda: up.state()["awaiting_confirm"] == 10)
            publish_as = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-1-twin")
            publish_as.username_pw_set("gw-1", "pw")
            publish_as.connect("127.0.0.1", broker.port)
            publish_as.loop_start()
            seqs = f'{{"v":1,"gateway":"gw-1","seqs":[[0,{2**53 - 1}]]}}'.encode()
            publish_as.publish("edge-gw/gw-1/confirm", seqs, qos=1).wait_for_publish(5)
            publish_as.disconnect()
            publish_as.loop_stop()
            time.sleep(0.5)
            assert buffered(db) == 10
            assert up.state()["last_error"] is None
    finally:
        broker.stop()


def test_subscriber_stand_in_confirms_canonically(mosquitto: Mosquitto) -> None:
    sub = Subscriber(mosquitto.port)
    assert sub.confirm  # the stand-in used across the uplink tests confirms by default
    sub.client.disconnect()
    settings = UplinkSettings()
    assert (settings.confirm, settings.confirm_timeout_s, settings.max_unconfirmed) == ("cloud", 60.0, 20_000)
