"""The Ruuvi Gateway HTTP listener end to end: real HTTP (http.client, raw sockets) into a running receiver, a real
influxd and a real Mosquitto (dead letters). Counts are exact: every reading stored once, every refusal answered."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_formats_http import DOC_POINTS, DOC_WITH_TIMESTAMPS, DOC_WITHOUT_TIMESTAMPS
from test_receiver_support import (
    RunningReceiver,
    Subscriber,
    create_db,
    df5_payload,
    mac_bytes,
    mac_text,
    make_config,
    start_receiver,
    stored,
    wait_until,
)

from cloud import status as st
from cloud.config import load_config
from core.settings import ConfigError

USER, PASSWORD = "gw-1", "s3cret:with colon"
GW = "C8:25:2D:8E:9C:2C"


def secret_file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(port: int, body: bytes, headers: dict[str, str] | None = None, *, path: str = "/ruuvi",
         tls: ssl.SSLContext | None = None) -> tuple[int, str, dict[str, str]]:
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), dict(resp.getheaders())
    finally:
        conn.close()


def gw_body(readings: list[tuple[int, int]], ts_s: int, gw: str = GW) -> bytes:
    """A Ruuvi Gateway HTTP body: one tag entry per (tag, measurement sequence number), heard at ts_s."""
    tags: dict[str, Any] = {}
    for tag, seq in readings:
        payload = df5_payload(seq, mac_bytes(tag))
        advert = bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
        tags[mac_text(tag).upper()] = {"rssi": -60, "timestamp": str(ts_s), "data": advert.hex().upper()}
    return orjson.dumps({"data": {"coordinates": "", "timestamp": str(ts_s), "nonce": "1", "gw_mac": gw,
                                  "tags": tags}})


@pytest.fixture
def db_url(influxd: Any) -> str:
    return create_db(influxd)


def start(mosquitto: Any, db_url: str, tmp_path: Path, **settings: object) -> RunningReceiver:
    http_settings: dict[str, object] = {
        "http__listen": "127.0.0.1:0", "http__user": USER,
        "http__password_file": secret_file(tmp_path, "http.pw", PASSWORD),
        "batch__max_interval": "10s",  # an HTTP request must not wait for it
        "formats__max_age": "5000d",  # the documented examples are from 2022
    }
    http_settings.update(settings)
    return start_receiver(make_config(mosquitto.port, db_url, tmp_path, **http_settings))


def http_port(r: RunningReceiver) -> int:
    assert r.receiver.http is not None
    return r.receiver.http.port


def test_documented_examples_are_stored_and_shown_in_status(mosquitto: Any, influxd: Any, db_url: str,
                                                            tmp_path: Path) -> None:
    r = start(mosquitto, db_url, tmp_path)
    try:
        port = http_port(r)
        t0 = time.monotonic()
        assert post(port, DOC_WITH_TIMESTAMPS, basic())[:2] == (200, '{"readings":2,"refused":0}\n')
        assert time.monotonic() - t0 < 2  # not batch.max_interval (10 s)
        rows = sorted(stored(influxd), key=lambda row: row["mac"])
        assert [(row["time"], row["mac"], row["gateway"], row["temperature"], row["humidity"], row["pressure"],
                 row["battery_voltage"], row["measurement_sequence_number"], row["rssi"]) for row in rows] == [
            (p.time_ns, p.tags["mac"], p.tags["gateway"], p.fields["temperature"], p.fields["humidity"],
             p.fields["pressure"], p.fields["battery_voltage"], p.fields["measurement_sequence_number"],
             p.fields["rssi"]) for p in DOC_POINTS]
        before = time.time_ns()
        assert post(port, DOC_WITHOUT_TIMESTAMPS, basic())[:2] == (200, '{"readings":2,"refused":0}\n')
        rows = stored(influxd)
        assert len(rows) == 4
        no_clock = [row for row in rows if row["mac"] in ("e3:75:cf:37:4e:23", "f4:1f:0c:28:cb:d6")
                    and row["time"] >= before]
        assert sorted((row["mac"], row["rssi"]) for row in no_clock) == [("e3:75:cf:37:4e:23", -50),
                                                                         ("f4:1f:0c:28:cb:d6", -32)]
        assert r.metric("cloud_ingest_http_requests_total", {"code": "200"}) == 2
        assert r.metric("cloud_ingest_http_readings_received_total") == 4
        assert r.metric("cloud_ingest_messages_received_total", {"format": "ruuvi_gateway_http"}) == 2
        wait_until(lambda: (st.read(tmp_path / "status.json") or st.Status()).http_requests == {"200": 2},
                   5, "status file")
    finally:
        r.stop()
    status = st.read(tmp_path / "status.json")
    assert status is not None
    assert status.http_listen == f"http://127.0.0.1:{port}/ruuvi"
    assert status.http_readings == 4
    assert status.gateways["c8:25:2d:8e:9c:2c"].readings == 4
    text = st.render(status, interval_s=0.2, offline_after_s=300)
    assert f"http:           http://127.0.0.1:{port}/ruuvi: 2 x 200, 4 readings" in text.splitlines()


MALFORMED = [
    (b"not json", "malformed JSON: "),
    (b"[1, 2]", "JSON payload is a list, not an object"),
    (b'{"data": {"tags": {}}}', "'data.gw_mac' must be a string, got NoneType"),
    (b'{"data": {"gw_mac": "C8:25:2D:8E:9C:2C", "tags": "none"}}', "'data.tags' must be an object, got str"),
    (b"\xff\xfe\x00binary", "malformed JSON: "),
]


def test_malformed_bodies_get_400_and_a_dead_letter_and_good_bodies_after_them_are_stored(
        mosquitto: Any, influxd: Any, db_url: str, tmp_path: Path) -> None:
    dlq = Subscriber(mosquitto.port, "edge-gw/dlq")
    r = start(mosquitto, db_url, tmp_path)
    try:
        port = http_port(r)
        for body, reason in MALFORMED:
            status, text, headers = post(port, body, basic())
            assert status == 400, (body, text)
            assert text.startswith(reason) and text.count("\n") == 1
            assert headers["Content-Type"].startswith("text/plain")
        # Answered only after the dead letter's PUBACK: all of them are at the broker already.
        wait_until(lambda: len(dlq.messages) == len(MALFORMED), 5, "dead letters")
        records = [orjson.loads(p) for _, p in dlq.messages]
        assert [(rec["stage"], rec["topic"], rec["payload_size"]) for rec in records] == [
            ("parse", "http:/ruuvi", len(body)) for body, _ in MALFORMED]
        assert [rec["reason"].startswith(reason) for rec, (_, reason) in zip(records, MALFORMED, strict=True)] == \
            [True] * len(MALFORMED)
        assert records[0]["payload"] == "not json"
        assert base64.b64decode(records[4]["payload"]) == MALFORMED[4][0]
        # One bad tag in a good body: refused on its own, dead-lettered, the rest stored.
        now_s = int(time.time())
        body = orjson.loads(gw_body([(1, 10), (2, 10)], now_s))
        body["data"]["tags"]["AA:BB:CC:DD:EE:FF"] = {"rssi": -1, "timestamp": str(now_s), "data": "0201061BFF990405"}
        assert post(port, orjson.dumps(body), basic())[:2] == (200, '{"readings":2,"refused":1}\n')
        wait_until(lambda: len(dlq.messages) == len(MALFORMED) + 1, 5, "the tag's dead letter")
        rec = orjson.loads(dlq.messages[-1][1])
        assert (rec["stage"], rec["topic"]) == ("reading", "http:/ruuvi")
        assert orjson.loads(rec["payload"]) == {"AA:BB:CC:DD:EE:FF": body["data"]["tags"]["AA:BB:CC:DD:EE:FF"]}
        assert post(port, gw_body([(3, 10)], now_s), basic())[:2] == (200, '{"readings":1,"refused":0}\n')
        assert sorted(row["mac"] for row in stored(influxd)) == [mac_text(1), mac_text(2), mac_text(3)]
        assert r.metric("cloud_ingest_http_requests_total", {"code": "400"}) == len(MALFORMED)
        assert r.metric("cloud_ingest_dead_letters_total", {"stage": "parse"}) == len(MALFORMED)
        assert r.metric("cloud_ingest_readings_refused_total", {"reason": "invalid"}) == 1
    finally:
        r.stop()
        dlq.close()


def test_requests_without_valid_credentials_are_refused(mosquitto: Any, influxd: Any, db_url: str,
                                                       tmp_path: Path) -> None:
    dlq = Subscriber(mosquitto.port, "edge-gw/dlq")
    r = start(mosquitto, db_url, tmp_path)
    try:
        port = http_port(r)
        body = gw_body([(1, 1)], int(time.time()))
        for headers in ({}, basic(password="wrong"), basic(user="other"), {"Authorization": "Basic !!!"},
                        {"Authorization": f"Bearer {PASSWORD}"}):
            status, text, got = post(port, body, headers)
            assert (status, text, got["WWW-Authenticate"]) == (401, "unauthorized\n", 'Basic realm="cloud-ingest"')
        assert post(port, body, basic(), path="/other")[0] == 404
        assert post(port, body, basic())[0] == 200
        assert len(stored(influxd)) == 1
        assert r.metric("cloud_ingest_http_requests_total", {"code": "401"}) == 5
        time.sleep(0.3)
        assert dlq.messages == []  # not a body problem: nothing to dead-letter
    finally:
        r.stop()
        dlq.close()


def test_bearer_token(mosquitto: Any, influxd: Any, db_url: str, tmp_path: Path) -> None:
    token = "1SDrQH1FkH+pON0GsSjt2gYeMSP02uYqfuu7LWdaBvY="
    r = start(mosquitto, db_url, tmp_path, http__auth="bearer", http__user="", http__password_file="",
              http__token_file=secret_file(tmp_path, "token", token))
    try:
        port = http_port(r)
        body = gw_body([(1, 1)], int(time.time()))
        assert post(port, body, {"Authorization": "Bearer wrong"})[0] == 401
        assert post(port, body, basic())[0] == 401
        status, _, headers = post(port, body)
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="cloud-ingest"')
        assert post(port, body, {"Authorization": f"Bearer {token}"})[:2] == (200, '{"readings":1,"refused":0}\n')
        assert len(stored(influxd)) == 1
    finally:
        r.stop()


def test_body_over_max_body_gets_413_and_a_slow_body_408(mosquitto: Any, influxd: Any, db_url: str,
                                                         tmp_path: Path) -> None:
    r = start(mosquitto, db_url, tmp_path, http__max_body="2KiB", http__timeout="1s")
    try:
        port = http_port(r)
        big = gw_body([(i, 1) for i in range(20)], int(time.time()))
        assert len(big) > 2048
        status, text, _ = post(port, big, basic())
        assert (status, text) == (413, f"body of {len(big)} bytes exceeds 2048\n")
        # Chunked, so without a Content-Length: cut off while it is read.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/ruuvi", body=iter([big[:1000], big[1000:]]), headers=basic(), encode_chunked=True)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (413, b"body exceeds 2048 bytes\n")
        conn.close()
        # A body that does not arrive within http.timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = (f"POST /ruuvi HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()['Authorization']}\r\n"
                    f"Content-Length: 100\r\n\r\n").encode()
            s.sendall(head + b'{"data": ')
            t0 = time.monotonic()
            answer = s.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 408 ")
            assert answer.endswith("body not received within 1 s\n")
            assert 0.9 < time.monotonic() - t0 < 3
        assert post(port, gw_body([(1, 1)], int(time.time())), basic())[0] == 200
        assert len(stored(influxd)) == 1
        assert r.metric("cloud_ingest_http_requests_total", {"code": "413"}) == 2
        assert r.metric("cloud_ingest_http_requests_total", {"code": "408"}) == 1
    finally:
        r.stop()


def test_influxd_outage_answers_503_and_the_clients_retries_store_everything_once(
        mosquitto: Any, influxd: Any, db_url: str, tmp_path: Path) -> None:
    r = start(mosquitto, db_url, tmp_path, http__timeout="2s")
    now_s = int(time.time())
    # 12 bodies of 5 tags each: every reading distinct (tag, seq).
    bodies = [gw_body([(tag, b) for tag in range(5)], now_s - 60 + b) for b in range(12)]
    answers: dict[int, list[int]] = {}
    try:
        port = http_port(r)
        assert post(port, bodies[0], basic())[0] == 200
        influxd.stop()
        # The first body after the outage is taken, cannot be written within http.timeout: 503, retry. Its batch
        # stays with the writer, which stores it once the database is back.
        t0 = time.monotonic()
        status, text, headers = post(port, bodies[1], basic())
        assert (status, text, headers["Retry-After"]) == (503, "readings not stored within 2 s; retry\n", "10")
        assert 1.9 < time.monotonic() - t0 < 4
        # From then on the sink says "retrying": turned away at once, nothing piles up in memory.
        for i in range(2, 12):
            t0 = time.monotonic()
            status, text, headers = post(port, bodies[i], basic())
            assert status == 503 and headers["Retry-After"] == "10"
            assert text.startswith("not accepting readings now: the database is unavailable (")
            assert time.monotonic() - t0 < 1
        assert r.call(lambda: r.receiver.live().queue_points) == 5  # only body 1's readings are held
        influxd.start()
        # The client (as the gateway would) sends again whatever was not answered 2xx.
        pending = list(range(1, 12))
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                status = post(port, bodies[i], basic())[0]
                answers.setdefault(i, []).append(status)
                if status == 200:
                    pending.remove(i)
            time.sleep(0.2)
        assert pending == []
        rows = stored(influxd)
        assert len(rows) == 12 * 5
        assert sorted((row["mac"], row["measurement_sequence_number"]) for row in rows) == \
            sorted((mac_text(tag), b) for b in range(12) for tag in range(5))
        assert r.metric("cloud_ingest_http_requests_total", {"code": "200"}) == 12
        assert r.metric("cloud_ingest_http_requests_total", {"code": "503"}) == 11 + sum(
            a.count(503) for a in answers.values())
    finally:
        r.stop()


def test_tls_listener(mosquitto: Any, influxd: Any, db_url: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    r = start(mosquitto, db_url, tmp_path, http__cert_file=str(cert), http__key_file=str(key))
    try:
        port = http_port(r)
        assert r.receiver.http is not None and r.receiver.http.url == f"https://127.0.0.1:{port}/ruuvi"
        client = ssl.create_default_context(cafile=str(cert))
        body = gw_body([(1, 1)], int(time.time()))
        assert post(port, body, basic(), tls=client)[:2] == (200, '{"readings":1,"refused":0}\n')
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            post(port, body, basic())  # plain HTTP to the TLS port
        assert len(stored(influxd)) == 1
    finally:
        r.stop()


@pytest.mark.parametrize(("settings", "error"), [
    ({"http.listen": "8080"}, "http.listen: expected host:port"),
    ({"http.listen": "0.0.0.0:8080"}, "http.auth: basic needs http.user and http.password_file"),
    ({"http.listen": "0.0.0.0:8080", "http.auth": "none"}, "http.auth: none is allowed only on a loopback address"),
    ({"http.listen": "0.0.0.0:8080", "http.auth": "bearer"}, "http.auth: bearer needs http.token_file"),
    ({"http.auth": "digest"}, "http.auth: expected one of basic, bearer, none, got 'digest'"),
    ({"http.path": "ruuvi"}, "http.path: must be a URL path starting with /"),
    ({"http.cert_file": "/etc/hostname"}, "http.cert_file and http.key_file go together"),
    ({"http.listen": "127.0.0.1:8080", "http.auth": "none", "http.max_body": "2MiB"},
     "http.max_body: 2097152 is more than formats.max_payload"),
])
def test_config_errors_name_the_key(settings: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, settings, environ={})
    assert str(e.value).startswith(error)


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    from cloud.config import http_settings

    pw = tmp_path / "pw"
    pw.write_text("x")
    os.chmod(pw, 0o644)
    cfg = load_config(None, {"http.listen": "0.0.0.0:8080", "http.user": "u", "http.password_file": str(pw)},
                      environ={})
    with pytest.raises(ConfigError, match=r"http.password_file: .* is readable by group or others"):
        http_settings(cfg)
