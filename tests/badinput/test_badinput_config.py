"""Bad configuration for both daemons, through the real CLIs as subprocesses: wrong types, unknown keys, a missing
or unreadable CA file, an unreachable broker. Each gets one line on stderr that names the cause, and a non-zero
exit, except the gateway's `run`, which is store-and-forward: it keeps buffering while the broker is unreachable
and says why in one log line."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from badinput_support import CLOUD_INGEST, EDGE_GW, clean_env, one_line_error, wait_until
from servers import free_port

TIMEOUT = 30


def cli(cmd: list[str], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], check=False, capture_output=True, text=True, timeout=TIMEOUT,
                          env=clean_env(**env))


def buffered(db: Path) -> int:
    res = cli(EDGE_GW, "status", "--json", "--db", str(db))
    return int(orjson.loads(res.stdout)["buffer"]["rows"]) if res.returncode == 0 else 0


def toml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


EDGE_CASES = {
    "wrong_type": ('[gateway]\nid = "gw"\n[store]\ncommit_rows = "many"\n', "store.commit_rows"),
    "wrong_type_table": ('[gateway]\nid = "gw"\nmqtt = 5\n', "mqtt"),
    "unknown_key": ('[gateway]\nid = "gw"\n[mqtt]\nurll = "mqtt://127.0.0.1:1883"\n', "mqtt.urll"),
    "unknown_section": ('[gateway]\nid = "gw"\n[uplinkk]\ninflight = 4\n', "uplinkk"),
    "missing_ca": ('[gateway]\nid = "gw"\n[mqtt]\nurl = "mqtts://127.0.0.1:8883"\nca_file = "/nonexistent/ca.pem"\n',
                   "mqtt.ca_file: /nonexistent/ca.pem does not exist"),
    "not_toml": ('[gateway\nid = "gw"\n', "line 1"),
}

CLOUD_CASES = {
    "wrong_type": ('[batch]\nmax_points = "lots"\n', "batch.max_points"),
    "wrong_type_duration": ('[batch]\nmax_interval = "soon"\n', "batch.max_interval"),
    "unknown_key": ('[batch]\nmax_pointz = 100\n', "batch.max_pointz"),
    "unknown_section": ('[batchh]\nmax_points = 100\n', "batchh"),
    "missing_ca": ('[mqtt]\nurl = "mqtts://127.0.0.1:8883"\nca_file = "/nonexistent/ca.pem"\n',
                   "mqtt.ca_file: /nonexistent/ca.pem does not exist"),
    "not_toml": ('[batch\nmax_points = 1\n', "line 1"),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_gw_bad_config_is_one_line(case: str, tmp_path: Path) -> None:
    text, names = EDGE_CASES[case]
    conf = toml(tmp_path, "edge.toml", text)
    for args in (["config", "check", "-c", str(conf)], ["config", "check", "--connect", "-c", str(conf)],
                 ["run", "-c", str(conf), "--db", str(tmp_path / "gw.db"), "--source", "simulate"]):
        res = cli(EDGE_GW, *args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        line = one_line_error(res.stderr)
        assert line.startswith("Error: config: ") and names in line, (args, line)
    assert not (tmp_path / "gw.db").exists()  # refused before anything was created


@pytest.mark.parametrize("case", sorted(CLOUD_CASES))
def test_cloud_ingest_bad_config_is_one_line(case: str, tmp_path: Path) -> None:
    text, names = CLOUD_CASES[case]
    conf = toml(tmp_path, "cloud.toml", text)
    for args in (["config", "check", "-c", str(conf)],
                 ["run", "-c", str(conf), "--status-file", str(tmp_path / "st.json"), "--metrics-port", "0"]):
        res = cli(CLOUD_INGEST, *args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        line = one_line_error(res.stderr)
        assert line.startswith("Error: config: ") and names in line, (args, line)


def test_bad_values_from_the_environment_name_the_variable(tmp_path: Path) -> None:
    res = cli(CLOUD_INGEST, "config", "check", CLOUD_INGEST_BATCH_MAX_POINTS="lots")
    assert "$CLOUD_INGEST_BATCH_MAX_POINTS" in one_line_error(res.stderr) and res.returncode == 1
    res = cli(EDGE_GW, "config", "check", EDGE_GW_STORE_COMMIT_ROWS="many")
    assert "$EDGE_GW_STORE_COMMIT_ROWS" in one_line_error(res.stderr) and res.returncode == 1


def test_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    port = free_port()
    conf = toml(tmp_path, "edge.toml", f'[gateway]\nid = "gw"\n[mqtt]\nurl = "mqtts://127.0.0.1:{port}"\n'
                                       f'ca_file = "{junk}"\n')
    res = cli(EDGE_GW, "config", "check", "--connect", "-c", str(conf))
    line = one_line_error(res.stderr)
    assert res.returncode == 1 and line.startswith("Error: broker: ") and str(junk) in line, line
    res = cli(CLOUD_INGEST, "run", "--mqtt", f"mqtts://127.0.0.1:{port}", "--set", f"mqtt.ca_file={junk}",
              "--status-file", str(tmp_path / "st.json"), "--metrics-port", "0", "--influx", "http://127.0.0.1:9/r",
              "--log-level", "warning")
    line = one_line_error(res.stderr)
    assert res.returncode == 1 and line.startswith(f"Error: MQTT TLS setup failed (mqtt.ca_file={junk}"), line


def test_unreachable_broker(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    url = f"mqtt://127.0.0.1:{port}"
    res = cli(EDGE_GW, "config", "check", "--connect", EDGE_GW_MQTT_URL=url, EDGE_GW_GATEWAY_ID="gw")
    line = one_line_error(res.stderr)
    assert res.returncode == 1 and line.startswith("Error: broker: ") and f"127.0.0.1:{port}" in line, line
    assert "refused" in line.lower()

    # Both daemons wait for the broker (it may start after them): one warning line per attempt names the broker
    # and the cause, they keep running, and SIGTERM stops them cleanly.
    rx_log = tmp_path / "rx.log"
    with rx_log.open("wb") as out:
        rx = subprocess.Popen([*CLOUD_INGEST, "run", "--mqtt", url, "--influx", "http://127.0.0.1:9/ruuvi",
                               "--status-file", str(tmp_path / "st.json"), "--metrics-port", "0"],
                              stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        try:
            wait_until(lambda: rx_log.read_text().count(f"cannot reach the broker at 127.0.0.1:{port}") >= 2, 15,
                       "two receiver warnings")
            assert rx.poll() is None
        finally:
            os.kill(rx.pid, signal.SIGTERM)
            assert rx.wait(20) == 0, rx_log.read_text()
    text = rx_log.read_text()
    assert "Traceback" not in text
    assert f"WARNING cloud.receiver: cannot reach the broker at 127.0.0.1:{port} ([Errno 111] " in text

    # The gateway's daemon is store-and-forward: it buffers while the broker is away, and says why once.
    db = tmp_path / "gw.db"
    log = tmp_path / "gw.log"
    with log.open("wb") as out:
        gw = subprocess.Popen([*EDGE_GW, "run", "--gateway-id", "gw", "--mqtt", url, "--db", str(db), "--source",
                               "simulate", "--tags", "5", "--rate", "200", "--assume-synced"],
                              stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        try:
            wait_until(lambda: f"127.0.0.1:{port}" in log.read_text(), 15, "the broker warning")
            wait_until(lambda: buffered(db) > 0, 15, "readings buffered meanwhile")
            assert gw.poll() is None
        finally:
            os.kill(gw.pid, signal.SIGTERM)
            assert gw.wait(20) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text
    warnings = [ln for ln in text.splitlines() if f"127.0.0.1:{port}" in ln and " WARNING " in ln]
    assert warnings and "refused" in warnings[0].lower(), text
    assert f"WARNING edge.uplink: uplink: cannot connect to {url}: [Errno 111] Connection refused" in text
    res = cli(EDGE_GW, "status", "--json", "--db", str(db))
    report = orjson.loads(res.stdout)
    stored = report["counters"]["readings_stored"]
    assert res.returncode == 0 and stored > 0 and report["buffer"]["rows"] == stored  # all of it kept for later
