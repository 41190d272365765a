"""The mosquitto role's ACL template, rendered by ansible-playbook on the controller (seconds, no chroot), and then
enforced by a real Mosquitto: only the receiver's identity may write a confirmation (issue 10).
test_playbooks.py checks the same file as the playbooks install it on the target."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, have
from target import ANSIBLE_DIR, render_templates

ROLE = ANSIBLE_DIR / "roles" / "mosquitto"
DEPLOY_ACL = ANSIBLE_DIR.parent / "deploy" / "mosquitto" / "edge-gw.acl"
DEFAULT_RULES = [
    "user cloud-ingest",
    "topic read edge-gw/#", "topic read ruuvi/#", "topic read sensors/#",
    "topic write edge-gw/dlq", "topic write edge-gw/+/confirm",
    "topic read $SYS/broker/publish/messages/dropped", "topic read $SYS/broker/uptime",
    "topic write edge-gw/alerts/#", "topic write homeassistant/#", "topic write cloud-ingest/ha/#",
    "pattern write edge-gw/%u/batch", "pattern write edge-gw/%u/status", "pattern read edge-gw/%u/confirm",
    "pattern readwrite homeassistant/+/%u/#", "pattern write edge-gw/%u/ha/#", "pattern read homeassistant/status",
]

pytestmark = pytest.mark.skipif(
    shutil.which("ansible-playbook", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}") is None,
    reason="needs ansible-playbook")


def rules(text: str) -> list[str]:
    return [x for x in text.splitlines() if x and not x.startswith("#")]


def render(work: Path, dest: Path, overrides: dict[str, str]) -> dict[str, int]:
    """Run the role's "Write the ACL." template step on localhost, with the role's defaults and `overrides`."""
    return render_templates(work, ROLE, {"Write the ACL.": ("acl.j2", dest, "0640")}, dict(overrides))


def test_default_acl_is_the_deploy_acl(tmp_path: Path) -> None:
    dest = tmp_path / "edge-gw.acl"
    assert render(tmp_path / "run", dest, {})["changed"] == 1
    assert rules(dest.read_text()) == DEFAULT_RULES
    # deploy/mosquitto/edge-gw.acl (what tests/security enforces on a live broker) has exactly the same rules.
    assert rules(DEPLOY_ACL.read_text()) == DEFAULT_RULES


def _client(broker: Mosquitto, user: str, tag: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{tag}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, f"pw-{user}")
    ok = threading.Event()
    c.on_connect = lambda _c, _u, _f, rc, _p: ok.set() if not rc.is_failure else None
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert ok.wait(10), f"{user}: no CONNACK"
    return c


def _publish(broker: Mosquitto, user: str, topic: str, payload: bytes) -> int:
    """One QoS 1 PUBLISH on its own connection (Mosquitto drops the connection after a refusal): the reason code."""
    codes: list[int] = []
    c = _client(broker, user, f"pub-{user}")
    c.on_publish = lambda _c, _u, _mid, rc, _p: codes.append(int(rc.value))
    try:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    return codes[0]


@pytest.mark.skipif(not (have("mosquitto") and have("mosquitto_passwd")), reason="needs mosquitto")
def test_role_variables_reach_the_acl_and_the_broker_enforces_it(tmp_path: Path) -> None:
    """Another prefix and receiver name: rendered on every line, idempotent, and a live broker with this ACL lets
    only that receiver confirm."""
    dest = tmp_path / "edge-gw.acl"
    over = {"mosquitto_topic_prefix": "fleet", "mosquitto_receiver_username": "ingest-eu"}
    assert render(tmp_path / "run", dest, over)["changed"] == 1
    assert render(tmp_path / "run", dest, over)["changed"] == 0
    assert rules(dest.read_text()) == [
        "user ingest-eu",
        "topic read fleet/#", "topic read ruuvi/#", "topic read sensors/#",
        "topic write fleet/dlq", "topic write fleet/+/confirm",
        "topic read $SYS/broker/publish/messages/dropped", "topic read $SYS/broker/uptime",
        "topic write fleet/alerts/#", "topic write homeassistant/#", "topic write cloud-ingest/ha/#",
        "pattern write fleet/%u/batch", "pattern write fleet/%u/status", "pattern read fleet/%u/confirm",
        "pattern readwrite homeassistant/+/%u/#", "pattern write fleet/%u/ha/#", "pattern read homeassistant/status",
    ]

    passwd = tmp_path / "passwd"
    for i, user in enumerate(("ingest-eu", "gw1", "gw2", "cloud-ingest")):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, f"pw-{user}"],
                       check=True, capture_output=True, timeout=10)
    broker = Mosquitto(tmp_path / "broker", anonymous=False,
                       extra=[f"password_file {passwd}", f"acl_file {dest}"]).start()
    got: list[tuple[str, bytes]] = []
    gw1 = _client(broker, "gw1", "sub-gw1")
    gw1.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    try:
        subscribed = threading.Event()
        gw1.on_subscribe = lambda *_a: subscribed.set()
        gw1.subscribe("fleet/gw1/confirm", qos=1)
        assert subscribed.wait(10)
        confirm = b'{"v":1,"gateway":"gw1","seqs":[[3,9]]}'
        # The default receiver name has no rights under this ACL; neither gateway may confirm.
        for user in ("cloud-ingest", "gw2", "gw1"):
            assert _publish(broker, user, "fleet/gw1/confirm", b'{"v":1,"gateway":"gw1","seqs":[[0,99]]}') == 0x87
        assert _publish(broker, "ingest-eu", "fleet/gw1/confirm", confirm) == 0
        # Accepted, and nobody reads them here: MQTT 5 reason code 0x10, no matching subscribers.
        assert _publish(broker, "gw1", "fleet/gw1/batch", b"{}") == 0x10
        assert _publish(broker, "gw1", "fleet/gw1/status", b"{}") == 0x10
        assert _publish(broker, "gw1", "fleet/gw2/batch", b"{}") == 0x87
        assert _publish(broker, "gw1", "edge-gw/gw1/batch", b"{}") == 0x87
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # nothing else arrives
        assert got == [("fleet/gw1/confirm", confirm)]
    finally:
        gw1.loop_stop()
        gw1.disconnect()
        broker.stop()
